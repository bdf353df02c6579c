//! The operators' commands on usagers and decisions: merge, forget,
//! explain.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use common::*;
use guichet_core::{
    bus::{
        subjects,
        usagers::{alias_key, record_key},
    },
    identity::{normalize_email, normalize_phone},
    proto::v1::{DeadLetter, IdentityClaims},
};
use guichet_harness::Nats;
use guichet_router::{RouterError, admin, identity, requests};
use prost::Message;

#[tokio::test]
async fn merge_makes_one_usager_of_two_and_history_covers_both() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let router = RunningRouter::start(&nats, config()).await;
    let by_email = email_contact("marie@example.fr", "a", "a");
    publish(&bus, &by_email).await;
    let a = routed(&bus, &by_email.id).await.usager_id;
    let by_phone = with_claims(
        email_contact("", "b", "b"),
        IdentityClaims {
            phone: "0611223344".into(),
            ..Default::default()
        },
    );
    publish(&bus, &by_phone).await;
    let b = routed(&bus, &by_phone.id).await.usager_id;
    assert_ne!(a, b);

    let report = admin::merge(&bus, &a, &b).await.unwrap();
    assert_eq!(report.identifiers_moved, 1);
    assert_eq!(report.history_ids, vec![a.clone(), b.clone()]);
    assert!(!report.already_merged);
    // What the adapters read.
    assert_eq!(bus.usager_history_ids(&b).await.unwrap(), vec![a.clone(), b.clone()]);
    assert_eq!(bus.canonical_usager(&b).await.unwrap(), a);
    let phone = normalize_phone("06 11 22 33 44").unwrap();
    assert_eq!(
        bus.usager_of(guichet_harness::pseudonymizer(), &phone)
            .await
            .unwrap()
            .as_deref(),
        Some(a.as_str())
    );
    // The router now files the phone under A, without conflict.
    let call = with_claims(
        email_contact("", "c", "c"),
        IdentityClaims {
            phone: "0611223344".into(),
            email: "marie@example.fr".into(),
            ..Default::default()
        },
    );
    publish(&bus, &call).await;
    let r = routed(&bus, &call.id).await;
    assert_eq!(r.usager_id, a);
    assert_eq!(r.identity.unwrap().outcome, 1, "known, no conflict");
    assert!(events(&bus, "identity_conflict").await.is_empty());
    assert_eq!(events(&bus, "usager_merged").await.len(), 1);

    // Refusals say why and change nothing.
    let err = admin::merge(&bus, &b, &a).await.unwrap_err();
    assert!(err.to_string().contains("merged into"), "{err}");
    let err = admin::merge(&bus, &a, &a).await.unwrap_err();
    assert!(matches!(err, RouterError::Invalid(_)));
    let err = admin::merge(&bus, &a, "U-nobody").await.unwrap_err();
    assert!(matches!(err, RouterError::NotFound(_)), "{err}");
    let err = admin::merge(&bus, "a.b", &a).await.unwrap_err();
    assert!(matches!(err, RouterError::Invalid(_)));
    // Doing it again completes, idempotently.
    assert!(admin::merge(&bus, &a, &b).await.unwrap().already_merged);
    router.shutdown().await;
}

#[tokio::test]
async fn forget_erases_history_identity_and_requests_of_one_usager_only() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let router = RunningRouter::start(&nats, config()).await;
    let mut mine = Vec::new();
    for i in 0..3 {
        let c = with_claims(
            email_contact("", &format!("m{i}"), "x"),
            IdentityClaims {
                email: "oublie@example.fr".into(),
                phone: "0655443322".into(),
                ..Default::default()
            },
        );
        publish(&bus, &c).await;
        mine.push(routed(&bus, &c.id).await);
    }
    let u = mine[0].usager_id.clone();
    // A follow-up (its own reference becomes an alias of the request) and
    // the same e-mail through a second mailbox (a copy, with its mark).
    let follow_up = with_claims(
        email_contact("", &format!("Re: {}", mine[0].reference), "suite"),
        IdentityClaims {
            email: "oublie@example.fr".into(),
            ..Default::default()
        },
    );
    publish(&bus, &follow_up).await;
    assert_eq!(routed(&bus, &follow_up.id).await.follow_up_of, mine[0].reference);
    let copy = crossposted(mine[1].contact.as_ref().unwrap(), "urbanisme@");
    publish(&bus, &copy).await;
    assert_eq!(routed(&bus, &copy.id).await.follow_up_of, mine[1].reference);
    let other = email_contact("reste@example.fr", "o", "o");
    publish(&bus, &other).await;
    let kept = routed(&bus, &other.id).await;
    let keys_of_other: BTreeSet<String> = requests_keys(&bus)
        .await
        .into_iter()
        .filter(|k| {
            k.contains(&other.id)
                || k.contains(&kept.reference)
                || requests::copy_key(&other).as_deref() == Some(k.as_str())
                || *k == requests::msgid_key(requests::own_message_id(&other).unwrap())
        })
        .collect();
    assert_eq!(keys_of_other.len(), 4, "{keys_of_other:?}");
    // Two contacts that could not be routed: one of theirs (by phone,
    // written another way), one of someone else's.
    for (key, claims) in [
        (
            "dl-mine",
            IdentityClaims {
                phone: "+33 6 55 44 33 22".into(),
                ..Default::default()
            },
        ),
        (
            "dl-other",
            IdentityClaims {
                email: "reste@example.fr".into(),
                ..Default::default()
            },
        ),
    ] {
        let letter = DeadLetter {
            original_subject: "guichet.intake.web.x".into(),
            payload: with_claims(email_contact("", key, key), claims).encode_to_vec(),
            reason: "test".into(),
            ..Default::default()
        };
        bus.publish(subjects::deadletter("router"), key, letter.encode_to_vec().into())
            .await
            .unwrap();
    }

    let report = admin::forget(&bus, guichet_harness::pseudonymizer(), &u).await.unwrap();
    assert_eq!(report.dead_letters_removed, 1);
    let left = admin::read_subject(&bus, subjects::DEADLETTER_STREAM, subjects::DEADLETTER_ALL)
        .await
        .unwrap();
    assert_eq!(left.len(), 1);
    let letter = DeadLetter::decode(left[0].clone()).unwrap();
    let contact = guichet_core::proto::v1::Contact::decode(letter.payload.as_slice()).unwrap();
    assert_eq!(contact.claims.unwrap().email, "reste@example.fr");
    assert_eq!(report.usager_ids, vec![u.clone()]);
    assert_eq!(report.routed_messages_purged, 5);
    assert_eq!(report.intake_messages_purged, 5);
    assert_eq!(report.identity_keys_removed, 2);
    assert_eq!(report.requests_removed, 3);

    // Read back: nothing of theirs is left; the other usager is intact.
    let journal = routed_all(&bus).await;
    assert_eq!(journal.len(), 1);
    assert_eq!(journal[0].1.usager_id, kept.usager_id);
    let mut intake = bus
        .jetstream()
        .get_stream(guichet_core::bus::subjects::INTAKE_STREAM)
        .await
        .unwrap();
    assert_eq!(
        intake.info().await.unwrap().state.messages,
        1,
        "only the other usager's contact"
    );
    let email = normalize_email("oublie@example.fr").unwrap();
    assert!(
        bus.usager_of(guichet_harness::pseudonymizer(), &email)
            .await
            .unwrap()
            .is_none()
    );
    assert!(bus.stores().identity.get(record_key(&u)).await.unwrap().is_none());
    for r in &mine {
        assert!(requests::request(&bus, &r.reference).await.unwrap().is_none());
        assert!(
            requests::routed_index(&bus, &r.contact.as_ref().unwrap().id)
                .await
                .unwrap()
                .is_none()
        );
    }
    assert!(requests::request(&bus, &kept.reference).await.unwrap().is_some());
    // Nothing of theirs is left in the requests bucket: no request, index,
    // alias or copy mark; the other usager's keys are all there.
    assert_eq!(requests_keys(&bus).await, keys_of_other);
    assert_eq!(
        bus.usager_of(
            guichet_harness::pseudonymizer(),
            &normalize_email("reste@example.fr").unwrap()
        )
        .await
        .unwrap()
        .as_deref(),
        Some(kept.usager_id.as_str())
    );
    let forgotten = events(&bus, "usager_forgotten").await;
    assert_eq!(forgotten.len(), 1);
    assert!(!forgotten[0].to_string().contains("oublie"));
    // Its own record names no one: the id only as a keyed pseudonym.
    assert!(!forgotten[0].to_string().contains(&u), "{}", forgotten[0]);
    assert_eq!(
        forgotten[0]["usager_pseudonyms"][0],
        guichet_harness::pseudonymizer().pseudonym(&u)
    );
    // The same person writing again is a new usager.
    let again = email_contact("oublie@example.fr", "n", "n");
    publish(&bus, &again).await;
    assert_ne!(routed(&bus, &again.id).await.usager_id, u);
    // Unknown ids are refused.
    assert!(matches!(
        admin::forget(&bus, guichet_harness::pseudonymizer(), "U-nobody")
            .await
            .unwrap_err(),
        RouterError::NotFound(_)
    ));
    router.shutdown().await;
}

#[tokio::test]
async fn forget_after_merge_erases_both_ids() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let router = RunningRouter::start(&nats, config()).await;
    let x = email_contact("x@example.fr", "x", "x");
    let y = email_contact("y@example.fr", "y", "y");
    publish(&bus, &x).await;
    publish(&bus, &y).await;
    let (ux, uy) = (routed(&bus, &x.id).await.usager_id, routed(&bus, &y.id).await.usager_id);
    admin::merge(&bus, &ux, &uy).await.unwrap();
    let report = admin::forget(&bus, guichet_harness::pseudonymizer(), &uy)
        .await
        .unwrap();
    assert_eq!(report.usager_ids, vec![ux.clone(), uy.clone()]);
    assert_eq!(report.routed_messages_purged, 2);
    // The merge event named both, and each request's `open` event its
    // usager: gone with them.
    assert_eq!(report.events_removed, 3);
    assert!(events(&bus, "usager_merged").await.is_empty());
    assert!(routed_all(&bus).await.is_empty());
    assert!(bus.stores().identity.get(alias_key(&uy)).await.unwrap().is_none());
    router.shutdown().await;
}

#[tokio::test]
async fn explain_finds_the_decision_of_a_contact() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let router = RunningRouter::start(&nats, config()).await;
    let c = email_contact("a@example.fr", "x", "x");
    publish(&bus, &c).await;
    let r = routed(&bus, &c.id).await;
    let e = admin::explain(&bus, &c.id).await.unwrap();
    assert_eq!(e.routed, r);
    assert_eq!(e.index.subject, format!("guichet.routed.qualification.{}", r.usager_id));
    assert_eq!(e.request.unwrap().reference, c.reference);
    let missing = admin::explain(&bus, "01JNOTROUTED0000000000000").await.unwrap_err();
    assert!(matches!(missing, RouterError::NotFound(_)));
    assert!(missing.to_string().contains("DEADLETTER"), "{missing}");
    router.shutdown().await;
}

#[tokio::test]
async fn forget_keeps_a_key_listed_in_the_record_that_belongs_to_someone_else() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let router = RunningRouter::start(&nats, config()).await;
    let by_phone = with_claims(
        email_contact("", "m", "m"),
        IdentityClaims {
            phone: "0611223344".into(),
            ..Default::default()
        },
    );
    publish(&bus, &by_phone).await;
    let m = routed(&bus, &by_phone.id).await.usager_id;
    let by_email = email_contact("nouvelle@example.fr", "n", "n");
    publish(&bus, &by_email).await;
    let n = routed(&bus, &by_email.id).await.usager_id;
    assert_ne!(m, n);
    // What a new usager that lost the race for its phone leaves behind:
    // its record lists the phone key, which designates M.
    let phone_key = guichet_harness::pseudonymizer().identity_key(&normalize_phone("06 11 22 33 44").unwrap());
    let (mut record, _) = identity::read_record(&bus, &n).await.unwrap().unwrap();
    record.identifiers.push(phone_key.clone());
    bus.stores()
        .identity
        .put(record_key(&n), serde_json::to_vec(&record).unwrap().into())
        .await
        .unwrap();

    let report = admin::forget(&bus, guichet_harness::pseudonymizer(), &n).await.unwrap();
    assert_eq!(report.identity_keys_removed, 1, "N's own e-mail key");
    assert_eq!(report.identity_keys_kept, 1, "M's phone key");
    let phone = normalize_phone("06 11 22 33 44").unwrap();
    assert_eq!(
        bus.usager_of(guichet_harness::pseudonymizer(), &phone)
            .await
            .unwrap()
            .as_deref(),
        Some(m.as_str())
    );
    let email = normalize_email("nouvelle@example.fr").unwrap();
    assert!(
        bus.usager_of(guichet_harness::pseudonymizer(), &email)
            .await
            .unwrap()
            .is_none()
    );
    router.shutdown().await;
}

/// Every key of the requests bucket.
async fn requests_keys(bus: &guichet_core::Bus) -> BTreeSet<String> {
    use futures::StreamExt;
    let keys = bus.stores().requests.keys().await.unwrap();
    keys.filter_map(|k| async move { k.ok() }).collect().await
}

#[tokio::test]
async fn concurrent_merges_into_one_usager_all_land_in_its_history() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let router = RunningRouter::start(&nats, config()).await;
    let mut people = Vec::new();
    for i in 0..9 {
        let c = email_contact(&format!("personne{i}@example.fr"), "a", "a");
        publish(&bus, &c).await;
        people.push(routed(&bus, &c.id).await.usager_id);
    }
    let keep = people[0].clone();
    // Eight merges into the same usager at once: each must be in the
    // merged list (a plain put kept only the last writer's list).
    let merges = people[1..].iter().map(|other| admin::merge(&bus, &keep, other));
    for outcome in futures::future::join_all(merges).await {
        outcome.unwrap();
    }
    let history = bus.usager_history_ids(&keep).await.unwrap();
    for other in &people[1..] {
        assert!(history.contains(other), "{other} missing from {history:?}");
    }
    router.shutdown().await;
}

/// Whether `key` is in the object store, as its list shows it.
async fn stored(bus: &guichet_core::Bus, key: &str) -> bool {
    use futures::StreamExt;
    let mut list = bus.stores().attachments.list().await.unwrap();
    while let Some(info) = list.next().await {
        if info.unwrap().name == key {
            return true;
        }
    }
    false
}

#[tokio::test]
async fn forget_deletes_the_files_no_one_else_points_at_and_keeps_a_shared_one() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let router = RunningRouter::start(&nats, config()).await;
    let shared = bus
        .put_attachment(b"%PDF-1.4 formulaire cerfa 12345", "cerfa.pdf", "application/pdf")
        .await
        .unwrap();
    let own = bus
        .put_attachment(
            b"%PDF-1.4 avis d'imposition de Mme Leroy",
            "avis.pdf",
            "application/pdf",
        )
        .await
        .unwrap();
    let raw = bus
        .put_attachment(
            b"From: leroy@example.fr\r\n\r\nBonjour",
            "message.eml",
            "message/rfc822",
        )
        .await
        .unwrap();
    let mut hers = email_contact("leroy@example.fr", "Demande", "Voici mes papiers");
    hers.attachments = vec![shared.clone(), own.clone()];
    if let Some(guichet_core::proto::v1::contact::Details::Email(email)) = hers.details.as_mut() {
        email.raw_message = Some(raw.clone());
    }
    let mut his = email_contact("durand@example.fr", "Demande", "Le même formulaire");
    his.attachments = vec![shared.clone()];
    publish(&bus, &hers).await;
    publish(&bus, &his).await;
    let u = routed(&bus, &hers.id).await.usager_id;
    routed(&bus, &his.id).await;

    // As if an earlier forget had stopped right after its files step: the
    // rerun finds the same files, gone already, and ends the same.
    let intake = BTreeSet::from([subjects::intake_keyed(
        guichet_core::proto::v1::Channel::Email,
        &hers.idempotency_key,
    )]);
    let contacts = BTreeSet::from([hers.id.clone()]);
    let candidates = BTreeSet::from([shared.key.clone(), own.key.clone(), raw.key.clone()]);
    let first =
        guichet_router::erase_files::erase_files(&bus, candidates, std::slice::from_ref(&u), &intake, &contacts)
            .await
            .unwrap();
    assert_eq!((first.deleted, first.kept_shared), (2, 1));

    let report = admin::forget(&bus, guichet_harness::pseudonymizer(), &u).await.unwrap();
    assert_eq!((report.files.deleted, report.files.kept_shared), (2, 1));
    assert!(!stored(&bus, &own.key).await, "her own file is gone");
    assert!(!stored(&bus, &raw.key).await, "her raw e-mail is gone");
    assert!(bus.get_attachment(&own.key).await.is_err());
    // Not even a "deleted" record under the file's hash is left.
    let objects = read_all(&bus, "OBJ_guichet_attachments", "$O.guichet_attachments.M.>").await;
    assert_eq!(objects.len(), 1, "only the shared file's record: {objects:?}");
    // His contact points at the shared file: still there, still readable.
    assert!(stored(&bus, &shared.key).await);
    assert_eq!(
        bus.get_attachment(&shared.key).await.unwrap(),
        b"%PDF-1.4 formulaire cerfa 12345"
    );
    // Forgetting again changes nothing.
    let again = admin::forget(&bus, guichet_harness::pseudonymizer(), &u).await;
    assert!(matches!(again, Err(RouterError::NotFound(_))), "{again:?}");
    assert!(stored(&bus, &shared.key).await);
    router.shutdown().await;
}

#[tokio::test]
async fn forget_rerun_after_an_interruption_removes_the_markers_left_under_the_id() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let router = RunningRouter::start(&nats, config()).await;
    let c = email_contact("interrompu@example.fr", "x", "x");
    publish(&bus, &c).await;
    let u = routed(&bus, &c.id).await.usager_id;
    // As a forget stopped after its identity step leaves it: history and
    // record purged, the record's marker (named after the id) still there.
    let routed_stream = bus.jetstream().get_stream(subjects::ROUTED_STREAM).await.unwrap();
    routed_stream
        .purge()
        .filter(subjects::usager_history(&u))
        .await
        .unwrap();
    let kv = &bus.stores().identity;
    kv.purge(record_key(&u)).await.unwrap();
    let marker = kv.entry(record_key(&u)).await.unwrap().unwrap();
    assert_ne!(marker.operation, async_nats::jetstream::kv::Operation::Put);

    let again = admin::forget(&bus, guichet_harness::pseudonymizer(), &u).await;
    assert!(matches!(again, Err(RouterError::NotFound(_))), "{again:?}");
    assert!(kv.entry(record_key(&u)).await.unwrap().is_none(), "the marker is gone");
    let identity = read_all(&bus, "KV_guichet_identity", "$KV.guichet_identity.>").await;
    assert!(
        identity.iter().all(|(subject, _)| !subject.contains(&u)),
        "{identity:?}"
    );
    router.shutdown().await;
}
