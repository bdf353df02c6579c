//! Routing by the rules in force, through the live router: each kind of
//! condition, discarded noise, the built-in manual qualification, and
//! rules pushed, refused and rolled back while contacts flow.

#![allow(clippy::unwrap_used)]

mod common;

use std::{collections::HashMap, time::Duration};

use async_nats::jetstream::consumer::PullConsumer;
use bytes::Bytes;
use common::*;
use guichet_core::proto::v1::{
    AttachmentRef, Channel, Contact, Flag, FlagKind, IdentityClaims, PostalAddress, Priority, Routed, Source,
    WebDetails, contact::Details,
};
use guichet_harness::Nats;
use guichet_router::{RouterError, admin, dispatch, live};
use rules_text::*;

#[path = "common/rules.rs"]
mod rules_text;

fn q(r: &Routed) -> guichet_core::proto::v1::Qualification {
    r.qualification.clone().unwrap()
}

async fn push(bus: &guichet_core::Bus, text: &str) -> u64 {
    live::push(bus, "rules", text, "test.toml", "tester")
        .await
        .unwrap()
        .revision
}

#[tokio::test]
async fn every_kind_of_condition_routes_through_the_live_router() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let revision = push(&bus, ALL_CONDITIONS).await;
    let router = RunningRouter::start(&nats, config()).await;

    let mut cases: Vec<(Contact, &str, &str)> = Vec::new();
    let domain = email_contact("secretariat@prefecture.gouv.fr", "Circulaire", "Veuillez trouver");
    cases.push((domain, "par-domaine", "accueil"));
    let accents = email_contact("a@example.fr", "Question", "Les DÉCHETS verts ne sont pas collectés");
    cases.push((accents, "par-mot-cle", "dechets"));
    let prefix = email_contact("b@example.fr", "Encombrants", "passage des encombrants ?");
    cases.push((prefix, "par-mot-cle", "dechets"));
    let regex = email_contact("c@example.fr", "Suite du pc 123", "pièces complémentaires");
    cases.push((regex, "par-regex", "urbanisme"));
    let mut source = email_contact("d@example.fr", "Bonjour", "une question");
    source.source = Some(Source {
        name: "urbanisme@".into(),
        ..Default::default()
    });
    cases.push((source, "par-source", "urbanisme"));
    let mut web = email_contact("e@example.fr", "Demande", "formulaire");
    web.channel = Channel::Web as i32;
    web.details = Some(Details::Web(WebDetails {
        form_id: "demande-acte".into(),
        fields: HashMap::from([("type_acte".to_owned(), "Naissance".to_owned())]),
        ..Default::default()
    }));
    cases.push((web, "par-champ", "etat-civil"));
    let postal = with_claims(
        email_contact("", "Courrier", "de Paris"),
        IdentityClaims {
            email: "f@example.fr".into(),
            postal_address: Some(PostalAddress {
                postal_code: "75011".into(),
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    cases.push((postal, "par-code-postal", "accueil"));
    let mut photo = email_contact("g@example.fr", "Trottoir", "le trottoir est abîmé, voir photo");
    photo.attachments = vec![AttachmentRef {
        key: "sha256/00".into(),
        file_name: "photo.jpg".into(),
        media_type: "image/jpeg".into(),
        size: 10,
        sha256: "00".into(),
    }];
    cases.push((photo, "par-piece-jointe", "voirie"));
    let no_photo = email_contact("h@example.fr", "Trottoir", "le trottoir est abîmé");
    cases.push((no_photo, "", "accueil"));
    let mut phone = email_contact("i@example.fr", "Appel", "Tapage nocturne rue des Lilas");
    phone.channel = Channel::Phone as i32;
    phone.details = None;
    cases.push((phone, "combine", "police"));
    let mut building = email_contact("j@example.fr", "Appel", "bruit du chantier");
    building.channel = Channel::Phone as i32;
    building.details = None;
    cases.push((building, "", "accueil"));

    for (contact, _, _) in &cases {
        publish(&bus, contact).await;
    }
    for (contact, rule, service) in &cases {
        let r = routed(&bus, &contact.id).await;
        let q = q(&r);
        assert_eq!(q.rule_id, *rule, "{}: {:?}", contact.subject, q.explanation);
        assert_eq!(q.service, *service, "{}", contact.subject);
        assert_eq!(q.rules_revision, revision);
        assert!(!q.due_date.is_empty() && q.due_at.is_some(), "{q:?}");
        assert!(!q.explanation.is_empty());
        assert!(!q.discarded);
    }
    let urgent = routed(&bus, &cases[9].0.id).await;
    assert_eq!(q(&urgent).priority, Priority::Urgent as i32);
    let received = guichet_core::proto::to_datetime(cases[9].0.received_at.as_ref().unwrap()).unwrap();
    let due = guichet_core::proto::to_datetime(q(&urgent).due_at.as_ref().unwrap()).unwrap();
    assert_eq!(due - received, chrono::Duration::hours(4), "4 hours, to the second");
    assert_eq!(q(&routed(&bus, &cases[0].0.id).await).tags, vec!["elus"]);

    // Flagged noise: journaled under `_noise`, in no queue.
    let mut auto = email_contact("k@example.fr", "Absence", "Je suis absent");
    auto.flags = vec![Flag {
        kind: FlagKind::AutoReply as i32,
        reason: "Auto-Submitted".into(),
    }];
    publish(&bus, &auto).await;
    let noise = routed(&bus, &auto.id).await;
    assert!(q(&noise).discarded);
    assert_eq!(q(&noise).rule_id, "bruit");
    let journal = routed_all(&bus).await;
    let (subject, _) = journal
        .iter()
        .find(|(_, r)| r.contact.as_ref().unwrap().id == auto.id)
        .unwrap();
    assert_eq!(
        *subject,
        format!("guichet.routed.{}.{}", dispatch::NOISE, noise.usager_id)
    );

    // One queue per service of the rules; each holds exactly its contacts.
    let mut expected: HashMap<&str, usize> = HashMap::new();
    for (_, _, service) in &cases {
        *expected.entry(service).or_default() += 1;
    }
    for service in ["accueil", "dechets", "urbanisme", "voirie", "etat-civil", "police"] {
        let view = admin::pull_queue(&bus, service, 50, false).await.unwrap();
        assert_eq!(
            view.items.len(),
            expected.get(service).copied().unwrap_or(0),
            "{service}"
        );
        assert!(view.items.iter().all(|r| !q(r).discarded));
    }
    // Not acked: still there for the back-office; acked: gone from the queue, kept in the journal.
    let again = admin::pull_queue(&bus, "dechets", 50, true).await.unwrap();
    assert_eq!(again.items.len(), 2);
    let after = admin::pull_queue(&bus, "dechets", 50, false).await.unwrap();
    assert_eq!(after.items.len(), 0);
    assert_eq!(routed_all(&bus).await.len(), cases.len() + 1);
    let stream = bus.jetstream().get_stream("ROUTED").await.unwrap();
    assert!(
        stream
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>("queue-_noise")
            .await
            .is_err()
    );
    let _unused: Option<PullConsumer> = None;
    router.shutdown().await;
}

#[tokio::test]
async fn without_rules_everything_goes_to_manual_qualification() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let router = RunningRouter::start(&nats, config()).await;
    let c = email_contact("a@example.fr", "Déchets", "encombrants");
    publish(&bus, &c).await;
    let r = routed(&bus, &c.id).await;
    assert_eq!(q(&r).service, "qualification");
    assert_eq!(q(&r).rules_revision, live::BUILTIN_REVISION);
    assert!(
        q(&r).explanation[0].contains("no rules pushed"),
        "{:?}",
        q(&r).explanation
    );
    assert_eq!(
        admin::pull_queue(&bus, "qualification", 10, false)
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    router.shutdown().await;
}

/// Waits until a new contact is routed by `revision` (probes: each a
/// contact of its own, routed to the revision's service).
async fn revision_applied(bus: &guichet_core::Bus, revision: u64) {
    eventually(&format!("the router applies revision {revision}"), || {
        let bus = bus.clone();
        async move {
            let probe = email_contact("late@example.fr", "alpha", "alpha");
            bus.publish_contact(&probe).await.unwrap();
            q(&routed(&bus, &probe.id).await).rules_revision == revision
        }
    })
    .await;
}

/// Contacts keep flowing while revisions are pushed: none lost, none
/// routed twice, each decided by one revision and recording it.
#[tokio::test]
async fn live_pushes_while_contacts_flow_lose_nothing_and_route_nothing_twice() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let r1 = push(&bus, &alpha_to("s1")).await;
    let router = RunningRouter::start(&nats, config()).await;

    let publisher = {
        let bus = nats.bus().await;
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..600 {
                let c = email_contact(&format!("p{}@example.fr", i % 50), "alpha", "alpha");
                bus.publish_contact(&c).await.unwrap();
                ids.push(c.id);
                if i % 100 == 0 {
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
            }
            ids
        })
    };
    tokio::time::sleep(Duration::from_millis(60)).await;
    let r2 = push(&bus, &alpha_to("s2")).await;
    // Each revision is applied in turn (a probe contact records it) before
    // the next is pushed: the second one is not skipped.
    revision_applied(&bus, r2).await;
    let r3 = push(&bus, &alpha_to("s3")).await;
    let ids = publisher.await.unwrap();
    // After the last push is seen, new contacts get it.
    revision_applied(&bus, r3).await;

    for id in &ids {
        routed(&bus, id).await;
    }
    let journal = routed_all(&bus).await;
    let mut seen = HashMap::new();
    let service_of = HashMap::from([(r1, "s1"), (r2, "s2"), (r3, "s3")]);
    for (subject, r) in &journal {
        let id = r.contact.as_ref().unwrap().id.clone();
        assert!(seen.insert(id.clone(), ()).is_none(), "{id} routed twice");
        let q = q(r);
        let service = service_of
            .get(&q.rules_revision)
            .unwrap_or_else(|| panic!("unknown revision {q:?}"));
        assert_eq!(q.service, *service, "decided by the revision it records");
        assert_eq!(q.rule_id, format!("alpha-{service}"));
        assert!(subject.starts_with(&format!("guichet.routed.{service}.")));
    }
    for id in &ids {
        assert!(seen.contains_key(id), "{id} lost");
    }
    let revisions: std::collections::BTreeSet<u64> = journal.iter().map(|(_, r)| q(r).rules_revision).collect();
    assert!(
        revisions.contains(&r1) && revisions.contains(&r2) && revisions.contains(&r3),
        "{revisions:?}"
    );
    // Each service of each activated revision got its queue.
    for s in ["s1", "s2", "s3", "accueil"] {
        admin::pull_queue(&bus, s, 0, false).await.unwrap();
    }
    router.shutdown().await;
}

#[tokio::test]
async fn a_bad_revision_is_never_activated() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let good = push(&bus, &alpha_to("s1")).await;

    // Through the CLI path: refused, nothing stored.
    let err = live::push(
        &bus,
        "rules",
        "manual_service = \"nowhere\"\n[[rules]]\nid = \"x\"\nwhen.channel = \"fax\"\nservice = \"ghost\"\n",
        "bad.toml",
        "t",
    )
    .await
    .unwrap_err();
    assert!(matches!(err, RouterError::RulesRejected(_)), "{err}");
    assert!(err.to_string().contains("bad.toml:"), "located errors: {err}");
    assert_eq!(
        bus.stores().config.entry("rules").await.unwrap().unwrap().revision,
        good
    );

    let router = RunningRouter::start(&nats, config()).await;
    // Around the CLI (`nats kv put`): stored, but the router keeps the good one.
    let bad = bus
        .stores()
        .config
        .put("rules", Bytes::from_static(b"[[rules]]\nid = 3\n"))
        .await
        .unwrap();
    // Positive evidence that the router saw the bad revision and refused it.
    let refused = format!("rules revision {bad} refused");
    eventually("the bad revision refused", || {
        let notes = router.health.notes();
        let refused = refused.clone();
        async move { notes.iter().any(|n| n.contains(&refused)) }
    })
    .await;
    let c = email_contact("a@example.fr", "alpha", "alpha");
    publish(&bus, &c).await;
    let r = routed(&bus, &c.id).await;
    assert_eq!(q(&r).rules_revision, good);
    assert_eq!(q(&r).service, "s1");

    let history = live::history(&bus, "rules").await.unwrap();
    let bad_entry = history.iter().find(|h| h.revision == bad).unwrap();
    assert!(bad_entry.invalid.is_some(), "{history:?}");
    assert!(history.iter().find(|h| h.revision == good).unwrap().invalid.is_none());

    // A router started now skips the invalid latest revision too.
    router.shutdown().await;
    let router = RunningRouter::start(&nats, config()).await;
    let c = email_contact("a@example.fr", "alpha", "alpha");
    publish(&bus, &c).await;
    assert_eq!(q(&routed(&bus, &c.id).await).rules_revision, good);

    // A good push after it is taken live.
    let next = push(&bus, &alpha_to("s2")).await;
    eventually("the new revision is applied", || {
        let bus = bus.clone();
        async move {
            let c = email_contact("a@example.fr", "alpha", "alpha");
            bus.publish_contact(&c).await.unwrap();
            q(&routed(&bus, &c.id).await).rules_revision == next
        }
    })
    .await;
    assert!(
        router.health.notes().iter().all(|n| !n.contains("refused")),
        "the note goes once a valid revision is in force: {:?}",
        router.health.notes()
    );
    router.shutdown().await;
}

#[tokio::test]
async fn rollback_pushes_an_older_text_as_a_new_revision() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let r1 = push(&bus, &alpha_to("s1")).await;
    let _r2 = push(&bus, &alpha_to("s2")).await;
    let router = RunningRouter::start(&nats, config()).await;
    let rolled = live::rollback(&bus, "rules", r1, "tester").await.unwrap();
    assert!(rolled.revision > r1);
    eventually("the rollback is applied", || {
        let bus = bus.clone();
        async move {
            let c = email_contact("a@example.fr", "alpha", "alpha");
            bus.publish_contact(&c).await.unwrap();
            let r = routed(&bus, &c.id).await;
            q(&r).rules_revision == rolled.revision && q(&r).service == "s1"
        }
    })
    .await;
    let history = live::history(&bus, "rules").await.unwrap();
    assert_eq!(history.len(), 3);
    assert!(history[2].origin.contains(&format!("rollback to revision {r1}")));
    assert_eq!(history[2].sha256, history[0].sha256);
    let missing = live::rollback(&bus, "rules", 9999, "t").await.unwrap_err();
    assert!(matches!(missing, RouterError::NotFound(_)), "{missing}");
    router.shutdown().await;
}
