//! `guichet identity rekey` from plain hashes: a bucket written before
//! keyed pseudonyms existed keeps recognizing its usagers, and an
//! interrupted migration resumed ends in the same state.

#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::*;
use futures::TryStreamExt;
use guichet_core::{
    Bus,
    identity::{normalize_email, normalize_phone},
    privacy::plain_identity_key,
    proto::v1::{IdentityClaims, identity_resolution::Outcome},
};
use guichet_harness::{Nats, pseudonymizer};
use guichet_router::{
    identity::UsagerRecord,
    levels::Level,
    rekey::{self, OldKeys},
};

/// What the bucket held before keys existed: Jeanne by e-mail (certified)
/// and phone.
async fn old_bucket(bus: &Bus) {
    let kv = &bus.stores().identity;
    let email = plain_identity_key(&normalize_email("jeanne@example.fr").unwrap());
    let phone = plain_identity_key(&normalize_phone("06 12 34 56 78").unwrap());
    let paul = plain_identity_key(&normalize_email("paul@example.fr").unwrap());
    for (key, usager) in [(&email, "UJEANNE"), (&phone, "UJEANNE"), (&paul, "UPAUL")] {
        kv.put(key.as_str(), Bytes::from(usager)).await.unwrap();
    }
    for (usager, identifiers) in [("UJEANNE", vec![email.clone(), phone]), ("UPAUL", vec![paul])] {
        let levels = [(email.clone(), Level::Certified)]
            .into_iter()
            .filter(|(key, _)| identifiers.contains(key))
            .collect();
        let record = UsagerRecord {
            usager_id: usager.into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            identifiers,
            levels,
        };
        kv.put(
            format!("usager.{usager}"),
            Bytes::from(serde_json::to_vec(&record).unwrap()),
        )
        .await
        .unwrap();
    }
}

/// Every live key of the bucket with its value, sorted.
async fn state(bus: &Bus) -> Vec<(String, String)> {
    let kv = &bus.stores().identity;
    let keys: Vec<String> = kv.keys().await.unwrap().try_collect().await.unwrap();
    let mut out = Vec::new();
    for key in keys {
        if let Some(value) = kv.get(&key).await.unwrap() {
            out.push((key, String::from_utf8(value.to_vec()).unwrap()));
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn a_plain_bucket_rekeyed_still_recognizes_its_usagers_and_an_interrupted_rekey_resumes() {
    let keys = pseudonymizer();
    // Uninterrupted, on one server...
    let whole = Nats::start().await;
    let whole_bus = whole.bus().await;
    old_bucket(&whole_bus).await;
    let report = rekey::rekey_plain(&whole_bus, keys, None).await.unwrap();
    assert_eq!(
        (report.keys_migrated, report.records_updated, report.keys_left),
        (3, 2, 0)
    );
    let expected = state(&whole_bus).await;
    // ...no plain key is left, every key is keyed, records list keyed keys.
    for (key, value) in &expected {
        if let Some(usager) = key.strip_prefix("usager.") {
            let record: UsagerRecord = serde_json::from_str(value).unwrap();
            assert_eq!(record.usager_id, usager);
            assert!(record.identifiers.iter().all(|k| keys.is_current(k)), "{record:?}");
            // The level follows its key.
            let certified: Vec<_> = record.levels.keys().collect();
            if usager == "UJEANNE" {
                assert_eq!(
                    certified,
                    vec![&keys.identity_key(&normalize_email("jeanne@example.fr").unwrap())],
                    "{record:?}"
                );
            } else {
                assert!(certified.is_empty(), "{record:?}");
            }
        } else {
            assert!(keys.is_current(key), "{key} -> {value}");
        }
    }
    // Run again: nothing to do, same state.
    let again = rekey::rekey_plain(&whole_bus, keys, None).await.unwrap();
    assert_eq!(again, rekey::RekeyReport::default());
    assert_eq!(state(&whole_bus).await, expected);

    // Interrupted after one key, then resumed, on another server.
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    old_bucket(&bus).await;
    let first = rekey::rekey_plain(&bus, keys, Some(1)).await.unwrap();
    assert_eq!((first.keys_migrated, first.keys_left, first.records_updated), (1, 2, 0));
    let resumed = rekey::rekey_plain(&bus, keys, None).await.unwrap();
    assert_eq!((resumed.keys_migrated, resumed.keys_left), (2, 0));
    assert_eq!(state(&bus).await, expected, "same final state");

    // The router, with the key, recognizes Jeanne by e-mail and by phone.
    let router = RunningRouter::start(&nats, config()).await;
    for (n, claims) in [
        IdentityClaims {
            email: "Jeanne@Example.fr".into(),
            ..Default::default()
        },
        IdentityClaims {
            phone: "+33 6 12 34 56 78".into(),
            ..Default::default()
        },
    ]
    .into_iter()
    .enumerate()
    {
        let contact = with_claims(email_contact("", "Encore", &format!("message {n}")), claims);
        publish(&bus, &contact).await;
        let routed = routed(&bus, &contact.id).await;
        assert_eq!(routed.usager_id, "UJEANNE", "contact {n}");
        assert_eq!(
            Outcome::try_from(routed.identity.as_ref().unwrap().outcome).unwrap(),
            Outcome::Known
        );
    }
    router.shutdown().await;
    drop(whole);
}

/// Rotation: keys written by the router under the test key move to a new
/// key, found from the routed contacts in the journal; the person is still
/// known by e-mail and phone, a key whose contacts left the journal is
/// counted and left, and a second run changes nothing.
#[tokio::test]
async fn a_rotated_key_finds_successors_in_the_journal() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let old = pseudonymizer();
    let router = RunningRouter::start(&nats, config()).await;
    let first = with_claims(
        email_contact("", "Voirie", "un trou"),
        IdentityClaims {
            email: "jeanne@example.fr".into(),
            phone: "06 12 34 56 78".into(),
            ..Default::default()
        },
    );
    publish(&bus, &first).await;
    let jeanne = routed(&bus, &first.id).await.usager_id;
    router.shutdown().await;
    // A key whose contacts are no longer in the journal.
    let gone = normalize_email("parti@example.fr").unwrap();
    bus.stores()
        .identity
        .put(old.identity_key(&gone), Bytes::from("UPARTI"))
        .await
        .unwrap();

    let new = guichet_core::privacy::Pseudonymizer::new(b"another-32-byte-key-for-rotation").unwrap();
    let report = rekey::rekey(&bus, &new, &OldKeys::Key(old.clone()), None)
        .await
        .unwrap();
    assert_eq!(
        (report.keys_migrated, report.keys_unknown, report.records_updated),
        (2, 1, 1)
    );
    for id in [
        normalize_email("Jeanne@example.fr").unwrap(),
        normalize_phone("+33612345678").unwrap(),
    ] {
        assert_eq!(
            bus.usager_of(&new, &id).await.unwrap().as_deref(),
            Some(jeanne.as_str())
        );
        assert_eq!(bus.usager_of(old, &id).await.unwrap(), None, "old key purged");
    }
    let (record, _) = guichet_router::identity::read_record(&bus, &jeanne)
        .await
        .unwrap()
        .unwrap();
    assert!(record.identifiers.iter().all(|k| new.is_current(k)), "{record:?}");
    let before = state(&bus).await;
    let again = rekey::rekey(&bus, &new, &OldKeys::Key(old.clone()), None)
        .await
        .unwrap();
    assert_eq!((again.keys_migrated, again.keys_unknown), (0, 1));
    assert_eq!(state(&bus).await, before);
    // The configured key as the previous one is refused.
    assert!(
        rekey::rekey(&bus, &new, &OldKeys::Key(new.clone()), None)
            .await
            .is_err()
    );
}
