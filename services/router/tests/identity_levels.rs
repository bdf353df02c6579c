//! Identity levels and the conflict workflow (issue 17 §3), against a
//! real nats-server: a declared claim never re-points a certified
//! identifier and loses to it without review; a certified claim takes an
//! identifier held only as declared; other conflicts are recorded once per
//! pair, listed, resolved (`merge` = `usager merge`, `distinct` never
//! raised again), two routers racing keep one consistent record, and the
//! live router (with its identity cache) does the same.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use guichet_core::config::NatsConfig;
use guichet_core::{
    Bus,
    identity::{Identifier, normalize_account, normalize_email, normalize_phone},
    proto::v1::{Contact, IdentityClaims, IdentityLevel, identity_resolution::Outcome},
};
use guichet_harness::{Cluster, Nats};
use guichet_router::{
    RouterError,
    admin::{self, Decision},
    identity::{self, Resolution},
    identity_conflicts::{self, Status, conflict_id},
    levels::Level,
};
use tokio_util::sync::CancellationToken;

const DECLARED: i32 = IdentityLevel::Declared as i32;
const CERTIFIED: i32 = IdentityLevel::Certified as i32;

fn contact(claims: IdentityClaims) -> Contact {
    with_claims(email_contact("", "objet", "texte"), claims)
}

async fn resolve(bus: &Bus, contact: &Contact) -> Resolution {
    identity::resolve(bus, guichet_harness::pseudonymizer(), contact)
        .await
        .unwrap()
}

async fn owner(bus: &Bus, id: &Identifier) -> Option<String> {
    bus.usager_of(guichet_harness::pseudonymizer(), id).await.unwrap()
}

fn key(id: &Identifier) -> String {
    guichet_harness::pseudonymizer().identity_key(id)
}

async fn record(bus: &Bus, usager: &str) -> identity::UsagerRecord {
    identity::read_record(bus, usager).await.unwrap().unwrap().0
}

/// A usager known by `email` and `phone` (declared), and its id.
async fn declared_person(bus: &Bus, email: &str, phone: &str) -> String {
    resolve(
        bus,
        &contact(IdentityClaims {
            email: email.into(),
            phone: phone.into(),
            ..Default::default()
        }),
    )
    .await
    .usager_id
}

/// A contact claiming both `email` and `phone`, declared.
fn both(email: &str, phone: &str) -> Contact {
    contact(IdentityClaims {
        email: email.into(),
        phone: phone.into(),
        ..Default::default()
    })
}

#[tokio::test]
async fn a_certified_identifier_is_never_re_pointed_by_a_declared_claim_and_wins_without_review() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let email = normalize_email("jeanne@example.fr").unwrap();
    let phone = normalize_phone("0611223344").unwrap();
    let account = normalize_account("franceconnect", "fc-sub-1").unwrap();

    // Jeanne comes through FranceConnect: account and e-mail certified.
    let certified = contact(IdentityClaims {
        account_id: "fc-sub-1".into(),
        account_issuer: "franceconnect".into(),
        account_level: CERTIFIED,
        email: "jeanne@example.fr".into(),
        email_level: CERTIFIED,
        ..Default::default()
    });
    let a = resolve(&bus, &certified).await;
    assert_eq!(a.outcome, Outcome::Created);
    let a = a.usager_id;
    let levels = record(&bus, &a).await.levels;
    assert_eq!(levels.get(&key(&email)), Some(&Level::Certified), "{levels:?}");
    assert_eq!(levels.get(&key(&account)), Some(&Level::Certified));

    // Someone declares a phone: another usager.
    let b = resolve(
        &bus,
        &contact(IdentityClaims {
            phone: "0611223344".into(),
            ..Default::default()
        }),
    )
    .await
    .usager_id;
    assert_ne!(a, b);

    // A declared claim of Jeanne's e-mail with that phone: the certified
    // e-mail wins over the declared phone, settled without review, and
    // nothing is re-pointed (the phone was claimed declared too).
    let declared = both("Jeanne@Example.fr", "06 11 22 33 44");
    let r = resolve(&bus, &declared).await;
    assert_eq!(r.usager_id, a);
    assert_eq!(r.outcome, Outcome::Known);
    assert_eq!(r.level, Level::Certified);
    assert!(r.conflicts.is_empty(), "{r:?}");
    assert_eq!(r.settled.len(), 1);
    assert_eq!(
        (r.settled[0].usager_id.as_str(), r.settled[0].held),
        (b.as_str(), Level::Declared)
    );
    assert!(r.re_pointed.is_empty());
    assert_eq!(owner(&bus, &email).await.as_deref(), Some(a.as_str()));
    assert_eq!(owner(&bus, &phone).await.as_deref(), Some(b.as_str()));
    assert!(admin::conflicts(&bus).await.unwrap().is_empty(), "no review asked");
    let settled = events(&bus, "identity_conflict_settled").await;
    assert_eq!(settled.len(), 1);
    assert_eq!(settled[0]["contact_id"], declared.id.as_str());
    assert!(events(&bus, "identity_conflict").await.is_empty());
    let text = settled[0].to_string();
    assert!(
        !text.contains("jeanne") && !text.contains("0611"),
        "no personal data: {text}"
    );
    // The declared claim did not lower the certified e-mail.
    assert_eq!(record(&bus, &a).await.levels.get(&key(&email)), Some(&Level::Certified));

    // A declared account of someone else with Jeanne's e-mail: the kind
    // is stronger, the level weaker: the certified e-mail still wins.
    let other_account = contact(IdentityClaims {
        account_id: "portail-42".into(),
        account_issuer: "portail-famille".into(),
        ..Default::default()
    });
    let c = resolve(&bus, &other_account).await.usager_id;
    let mixed = contact(IdentityClaims {
        account_id: "portail-42".into(),
        account_issuer: "portail-famille".into(),
        email: "jeanne@example.fr".into(),
        ..Default::default()
    });
    let r = resolve(&bus, &mixed).await;
    assert_eq!((r.usager_id.as_str(), r.outcome), (a.as_str(), Outcome::Known));
    assert_eq!(owner(&bus, &email).await.as_deref(), Some(a.as_str()));
    assert_eq!(
        owner(&bus, &normalize_account("portail-famille", "portail-42").unwrap())
            .await
            .as_deref(),
        Some(c.as_str())
    );

    // A certified claim of the phone held declared by B takes it: the
    // phone now designates Jeanne, in her record at the certified level,
    // out of B's.
    let phone_certified = contact(IdentityClaims {
        account_id: "fc-sub-1".into(),
        account_issuer: "franceconnect".into(),
        account_level: CERTIFIED,
        phone: "0611223344".into(),
        phone_level: CERTIFIED,
        ..Default::default()
    });
    let r = resolve(&bus, &phone_certified).await;
    assert_eq!((r.usager_id.as_str(), r.outcome), (a.as_str(), Outcome::Known));
    assert_eq!(r.re_pointed, vec!["phone"]);
    assert_eq!(owner(&bus, &phone).await.as_deref(), Some(a.as_str()));
    let jeanne = record(&bus, &a).await;
    assert!(jeanne.identifiers.contains(&key(&phone)));
    assert_eq!(jeanne.levels.get(&key(&phone)), Some(&Level::Certified));
    assert!(!record(&bus, &b).await.identifiers.contains(&key(&phone)));

    // And a declared claim of it never takes it back.
    let r = resolve(
        &bus,
        &contact(IdentityClaims {
            phone: "0611223344".into(),
            phone_level: DECLARED,
            ..Default::default()
        }),
    )
    .await;
    assert_eq!(r.usager_id, a);
    assert_eq!(owner(&bus, &phone).await.as_deref(), Some(a.as_str()));
    assert!(admin::conflicts(&bus).await.unwrap().is_empty());
}

#[tokio::test]
async fn conflicts_are_listed_resolved_and_never_raised_again_once_distinct() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let a = declared_person(&bus, "paul@example.fr", "").await;
    let b = declared_person(&bus, "", "0699887766").await;

    let first = both("paul@example.fr", "0699887766");
    let r = resolve(&bus, &first).await;
    assert_eq!((r.usager_id.as_str(), r.outcome), (a.as_str(), Outcome::Conflict));
    // A redelivery of the same contact is not counted twice; another is.
    resolve(&bus, &first).await;
    let second = both("paul@example.fr", "0699887766");
    resolve(&bus, &second).await;

    let open = admin::conflicts(&bus).await.unwrap();
    assert_eq!(open.len(), 1, "{open:?}");
    let c = &open[0];
    assert_eq!(c.id, conflict_id(&a, &b));
    assert_eq!(
        (c.kept.usager_id.as_str(), c.other.usager_id.as_str()),
        (a.as_str(), b.as_str())
    );
    assert_eq!(
        (c.kept.kinds.clone(), c.other.kinds.clone()),
        (vec!["email".to_owned()], vec!["phone".to_owned()])
    );
    assert_eq!((c.kept.level, c.other.level), (Level::Declared, Level::Declared));
    assert_eq!(c.contacts, 2);
    assert_eq!(c.recent_contacts, vec![first.id.clone(), second.id.clone()]);
    let text = serde_json::to_string(c).unwrap();
    assert!(
        !text.contains("paul") && !text.contains("0699"),
        "no personal data: {text}"
    );
    // One event per contact: the redelivery's is deduplicated (msg id).
    assert_eq!(events(&bus, "identity_conflict").await.len(), 2);

    // Bad ids are refused and change nothing.
    let err = admin::resolve(&bus, "not a conflict", Decision::Distinct)
        .await
        .unwrap_err();
    assert!(matches!(err, RouterError::Invalid(_)), "{err}");
    let err = admin::resolve(&bus, "UX.UY", Decision::Distinct).await.unwrap_err();
    assert!(matches!(err, RouterError::NotFound(_)), "{err}");

    // Two people.
    let report = admin::resolve(&bus, &c.id, Decision::Distinct).await.unwrap();
    assert!(!report.already && report.merge.is_none());
    assert_eq!(report.conflict.status, Status::Distinct);
    assert!(admin::conflicts(&bus).await.unwrap().is_empty());
    assert_eq!(events(&bus, "identity_conflict_resolved").await.len(), 1);

    // Never raised again: routed to the stronger, no event, no count.
    let conflict_events = events(&bus, "identity_conflict").await.len();
    let later = both("paul@example.fr", "0699887766");
    let r = resolve(&bus, &later).await;
    assert_eq!((r.usager_id.as_str(), r.outcome), (a.as_str(), Outcome::Known));
    assert!(r.conflicts.is_empty());
    assert_eq!(events(&bus, "identity_conflict").await.len(), conflict_events);
    assert!(admin::conflicts(&bus).await.unwrap().is_empty());
    let (stored, _) = identity_conflicts::read(&bus.stores().identity, &c.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((stored.status, stored.contacts), (Status::Distinct, 2));
    // The phone still designates its own usager.
    assert_eq!(
        owner(&bus, &normalize_phone("0699887766").unwrap()).await.as_deref(),
        Some(b.as_str())
    );

    // Repeating the decision changes nothing; the other one is refused.
    assert!(admin::resolve(&bus, &c.id, Decision::Distinct).await.unwrap().already);
    let err = admin::resolve(&bus, &c.id, Decision::Merge).await.unwrap_err();
    assert!(matches!(err, RouterError::Invalid(_)), "{err}");
    assert!(bus.canonical_usager(&b).await.unwrap() == b, "not merged");

    // Erasing one of them erases the conflict naming them.
    let forgotten = admin::forget(&bus, guichet_harness::pseudonymizer(), &b).await.unwrap();
    assert_eq!(forgotten.conflicts_removed, 1);
    assert!(
        identity_conflicts::read(&bus.stores().identity, &c.id)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn resolving_as_merge_does_what_usager_merge_does() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    // Two identical situations: one resolved, one merged by hand.
    let mut outcomes = Vec::new();
    for (n, by_hand) in [(1, false), (2, true)] {
        let (email, phone) = (format!("p{n}@example.fr"), format!("069988770{n}"));
        let a = declared_person(&bus, &email, "").await;
        let b = declared_person(&bus, "", &phone).await;
        resolve(&bus, &both(&email, &phone)).await;
        let id = conflict_id(&a, &b);
        let merged = if by_hand {
            admin::merge(&bus, &a, &b).await.unwrap()
        } else {
            let report = admin::resolve(&bus, &id, Decision::Merge).await.unwrap();
            assert_eq!(report.conflict.status, Status::Merged);
            report.merge.unwrap()
        };
        let phone_owner = owner(&bus, &normalize_phone(&phone).unwrap()).await;
        let (stored, _) = identity_conflicts::read(&bus.stores().identity, &id)
            .await
            .unwrap()
            .unwrap();
        outcomes.push((
            merged.kept == a && merged.merged == b,
            merged.identifiers_moved,
            merged.history_ids == vec![a.clone(), b.clone()],
            phone_owner == Some(a.clone()),
            bus.canonical_usager(&b).await.unwrap() == a,
            record(&bus, &a).await.identifiers.len(),
            stored.status,
        ));
    }
    assert_eq!(outcomes[0], outcomes[1]);
    assert_eq!(outcomes[0], (true, 1, true, true, true, 2, Status::Merged));
    assert!(admin::conflicts(&bus).await.unwrap().is_empty());
    assert_eq!(events(&bus, "usager_merged").await.len(), 2);
}

#[tokio::test]
async fn two_routers_racing_record_one_conflict_count_every_contact_and_never_reopen_a_decision() {
    let nats = Nats::start().await;
    let (x, y) = (nats.bus().await, nats.bus().await);
    routers_racing(&x, &y).await;
}

/// The same race with each router on its own node of a 3-node cluster,
/// every bucket replicated: a compare-and-set refused while another
/// write is in flight (10164) is read again from the leader, not lost.
#[tokio::test]
async fn two_routers_racing_on_two_nodes_of_a_cluster_stay_consistent() {
    let cluster = Cluster::start().await;
    // Creates the replicated topology once, then one client per node.
    cluster.bus().await;
    let urls = cluster.urls();
    let on_node = |n: usize| {
        let url = urls[n].clone();
        let config = NatsConfig {
            url: Some(vec![url.clone()].into()),
            ..cluster.nats_config()
        };
        async move {
            Bus::start(&[url], &config, &Cluster::topology(), &CancellationToken::new())
                .await
                .unwrap()
        }
    };
    let (x, y) = (on_node(0).await, on_node(1).await);
    routers_racing(&x, &y).await;
    cluster.stop().await;
}

/// Two routers (`x`, `y`) meeting the same conflict, a decision, and the
/// same certified re-pointing at once.
async fn routers_racing(x: &Bus, y: &Bus) {
    let (x, y) = (x.clone(), y.clone());
    let a = declared_person(&x, "race@example.fr", "").await;
    let b = declared_person(&x, "", "0600000001").await;
    assert_ne!(a, b);

    // 15 rounds, each router resolving its own contact for the pair.
    let mut ids = Vec::new();
    for _ in 0..15 {
        let (cx, cy) = (
            both("race@example.fr", "0600000001"),
            both("race@example.fr", "0600000001"),
        );
        let (rx, ry) = tokio::join!(resolve(&x, &cx), resolve(&y, &cy));
        assert_eq!((rx.usager_id.as_str(), ry.usager_id.as_str()), (a.as_str(), a.as_str()));
        ids.extend([cx.id, cy.id]);
    }
    let open = admin::conflicts(&x).await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].contacts, 30, "every contact counted once");
    assert_eq!(open[0].recent_contacts.len(), 20);
    assert!(open[0].recent_contacts.iter().all(|c| ids.contains(c)));

    // A decision racing the routers: once distinct, it stays distinct.
    let id = open[0].id.clone();
    let (cx, cy) = (
        both("race@example.fr", "0600000001"),
        both("race@example.fr", "0600000001"),
    );
    let (decided, _, _) = tokio::join!(
        admin::resolve(&y, &id, Decision::Distinct),
        resolve(&x, &cx),
        resolve(&y, &cy),
    );
    assert_eq!(decided.unwrap().conflict.status, Status::Distinct);
    resolve(&x, &both("race@example.fr", "0600000001")).await;
    let (stored, _) = identity_conflicts::read(&x.stores().identity, &id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status, Status::Distinct);
    assert!(admin::conflicts(&x).await.unwrap().is_empty());

    // Two routers racing to re-point one declared phone for a certified
    // person: it ends hers once, listed in exactly one record.
    let phone = normalize_phone("0600000002").unwrap();
    let holder = declared_person(&x, "", "0600000002").await;
    let fc = resolve(
        &x,
        &contact(IdentityClaims {
            account_id: "fc-race".into(),
            account_issuer: "franceconnect".into(),
            account_level: CERTIFIED,
            ..Default::default()
        }),
    )
    .await
    .usager_id;
    let certified_phone = || {
        contact(IdentityClaims {
            account_id: "fc-race".into(),
            account_issuer: "franceconnect".into(),
            account_level: CERTIFIED,
            phone: "0600000002".into(),
            phone_level: CERTIFIED,
            ..Default::default()
        })
    };
    let (cx, cy) = (certified_phone(), certified_phone());
    let (rx, ry) = tokio::join!(resolve(&x, &cx), resolve(&y, &cy));
    assert_eq!(
        (rx.usager_id.as_str(), ry.usager_id.as_str()),
        (fc.as_str(), fc.as_str())
    );
    assert_eq!(rx.re_pointed.len() + ry.re_pointed.len(), 1, "{rx:?} {ry:?}");
    assert_eq!(owner(&x, &phone).await.as_deref(), Some(fc.as_str()));
    assert!(record(&x, &fc).await.identifiers.contains(&key(&phone)));
    assert!(!record(&x, &holder).await.identifiers.contains(&key(&phone)));
}

/// Through the live router (its identity cache on): a certified usager
/// met by a declared contact that also designates another is routed to
/// the certified one, without a conflict, and the routed contact says
/// "known"; a certified claim re-points a declared identifier, and the
/// cache follows (the next contact by that identifier goes to her).
#[tokio::test]
async fn the_live_router_settles_certified_against_declared_and_its_cache_follows_a_re_pointing() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let router = RunningRouter::start(&nats, config()).await;
    let route = |contact: Contact| {
        let bus = bus.clone();
        async move {
            publish(&bus, &contact).await;
            routed(&bus, &contact.id).await
        }
    };
    let outcome =
        |r: &guichet_core::proto::v1::Routed| Outcome::try_from(r.identity.as_ref().unwrap().outcome).unwrap();

    let jeanne = route(contact(IdentityClaims {
        account_id: "fc-live".into(),
        account_issuer: "franceconnect".into(),
        account_level: CERTIFIED,
        email: "live@example.fr".into(),
        email_level: CERTIFIED,
        ..Default::default()
    }))
    .await
    .usager_id;
    let other = route(contact(IdentityClaims {
        phone: "0622334455".into(),
        ..Default::default()
    }))
    .await
    .usager_id;

    let r = route(both("live@example.fr", "0622334455")).await;
    assert_eq!((r.usager_id.as_str(), outcome(&r)), (jeanne.as_str(), Outcome::Known));
    assert_eq!(events(&bus, "identity_conflict_settled").await.len(), 1);
    assert!(events(&bus, "identity_conflict").await.is_empty());

    let r = route(contact(IdentityClaims {
        account_id: "fc-live".into(),
        account_issuer: "franceconnect".into(),
        account_level: CERTIFIED,
        phone: "0622334455".into(),
        phone_level: CERTIFIED,
        ..Default::default()
    }))
    .await;
    assert_eq!(r.usager_id, jeanne);
    let phone_only = || {
        contact(IdentityClaims {
            phone: "0622334455".into(),
            ..Default::default()
        })
    };
    // The cache learns the re-pointing from its watch, within its delay.
    let mut last = String::new();
    for _ in 0..100 {
        last = route(phone_only()).await.usager_id;
        if last == jeanne {
            break;
        }
        assert_eq!(last, other, "only ever one of the two");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(last, jeanne);
    assert!(admin::conflicts(&bus).await.unwrap().is_empty());
    router.shutdown().await;
}
