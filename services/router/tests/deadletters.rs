//! The operators' dead-letter workflow against a real nats-server: a
//! contact dead-lettered, its cause fixed, replayed (once, twice) and
//! routed exactly once; a discard recorded; bad input refused unchanged.

#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::*;
use guichet_core::{Bus, identity::normalize_email};
use guichet_harness::Nats;
use guichet_router::{RouterError, deadletter};

/// Damages the identity bucket for `email`: its key leads to something
/// that is not a usager id, so routing its contacts fails every time.
async fn damage(bus: &Bus, email: &str) -> String {
    let key = guichet_harness::pseudonymizer().identity_key(&normalize_email(email).unwrap());
    bus.stores()
        .identity
        .put(key.clone(), Bytes::from_static(b"not a usager id!"))
        .await
        .unwrap();
    key
}

async fn intake_drained(bus: &Bus) -> bool {
    let stream = bus.jetstream().get_stream("INTAKE").await.unwrap();
    let mut consumer = stream
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>("router")
        .await
        .unwrap();
    let info = consumer.info().await.unwrap();
    info.num_pending == 0 && info.num_ack_pending == 0
}

async fn pending(bus: &Bus, n: usize) -> Vec<deadletter::Pending> {
    eventually(&format!("{n} dead letter(s) pending"), || {
        let bus = bus.clone();
        async move { deadletter::list(&bus, None).await.unwrap().len() == n }
    })
    .await;
    deadletter::list(bus, None).await.unwrap()
}

fn routed_count(journal: &[(String, guichet_core::proto::v1::Routed)], contact_id: &str) -> usize {
    journal
        .iter()
        .filter(|(_, r)| r.contact.as_ref().unwrap().id == contact_id)
        .count()
}

#[tokio::test]
async fn a_dead_letter_replayed_once_its_cause_is_fixed_is_routed_exactly_once() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let key = damage(&bus, "broken@example.fr").await;
    let router = RunningRouter::start(&nats, config()).await;
    let poison = email_contact("broken@example.fr", "x", "x");
    publish(&bus, &poison).await;

    let letters = pending(&bus, 1).await;
    let letter = &letters[0];
    assert_eq!(letter.origin, "router");
    assert_eq!(letter.letter.deliveries, 3);
    let summary = letter.contact().unwrap();
    assert_eq!(summary.id, poison.id);
    assert_eq!(summary.channel, "email");
    assert!(deadletter::list(&bus, Some("router")).await.unwrap().len() == 1);
    assert!(deadletter::list(&bus, Some("mail")).await.unwrap().is_empty());
    let shown = deadletter::get(&bus, letter.id).await.unwrap();
    assert_eq!(shown.letter.original_stream, "INTAKE");
    assert!(
        shown.letter.reason.contains("not a usager id"),
        "{}",
        shown.letter.reason
    );

    // The cause fixed: the damaged key removed.
    bus.stores().identity.purge(&key).await.unwrap();
    let replayed = deadletter::replay(&bus, letter.id, "ops-alice").await.unwrap();
    assert_eq!(replayed.contact_id, poison.id);
    assert!(!replayed.duplicate);
    let first = routed(&bus, &poison.id).await;

    // Replayed twice: the command says it is done, and changes nothing.
    let again = deadletter::replay(&bus, letter.id, "ops-alice").await.unwrap_err();
    assert!(matches!(again, RouterError::NotFound(_)), "{again}");
    let text = again.to_string();
    assert!(
        text.contains("no longer pending") && text.contains("replayed by ops-alice"),
        "{text}"
    );
    // A replay that died before removing the letter, run again: within
    // the duplicate window JetStream drops the copy...
    let resent = deadletter::resend(&bus, letter).await.unwrap();
    assert!(resent.duplicate, "the replay id deduplicates within the window");
    // ...and after it (another msg id, as after 2 minutes) the router's
    // contact index recognizes the contact.
    bus.publish(
        replayed.subject.clone(),
        "deadletter-replay-after-the-window",
        Bytes::from(letter.letter.payload.clone()),
    )
    .await
    .unwrap();
    eventually("the copies are consumed", || {
        let bus = bus.clone();
        async move { intake_drained(&bus).await }
    })
    .await;
    let journal = routed_all(&bus).await;
    assert_eq!(routed_count(&journal, &poison.id), 1, "routed exactly once");
    assert_eq!(routed(&bus, &poison.id).await.reference, first.reference);

    // Recorded, and no longer pending.
    assert!(deadletter::list(&bus, None).await.unwrap().is_empty());
    let events = events(&bus, "deadletter.replayed").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["deadletter_id"], letter.id);
    assert_eq!(events[0]["contact_id"], poison.id.as_str());
    assert_eq!(events[0]["by"], "ops-alice");
    assert!(!events[0].to_string().contains("broken@"), "no personal data");
    router.shutdown().await;
}

#[tokio::test]
async fn a_discard_is_recorded_and_bad_input_changes_nothing() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    damage(&bus, "broken@example.fr").await;
    let router = RunningRouter::start(&nats, config()).await;
    let poison = email_contact("broken@example.fr", "x", "x");
    publish(&bus, &poison).await;
    let garbage = bus
        .publish(
            "guichet.intake.email".into(),
            "garbage-1",
            Bytes::from_static(b"\xff\xff not a contact"),
        )
        .await
        .unwrap();
    let letters = pending(&bus, 2).await;
    let undecodable = letters
        .iter()
        .find(|l| l.letter.original_sequence == garbage.sequence)
        .unwrap();
    let poisoned = letters.iter().find(|l| !l.letter.undecodable).unwrap();

    // Bad input: a clear error naming what is wrong, nothing changed.
    let empty = deadletter::discard(&bus, poisoned.id, "  ", "ops-bob")
        .await
        .unwrap_err();
    assert!(
        matches!(empty, RouterError::Invalid(_)) && empty.to_string().contains("--reason"),
        "{empty}"
    );
    let long = "x".repeat(deadletter::MAX_REASON_CHARS + 1);
    let too_long = deadletter::discard(&bus, poisoned.id, &long, "ops-bob")
        .await
        .unwrap_err();
    assert!(too_long.to_string().contains("--reason"), "{too_long}");
    let unknown = deadletter::discard(&bus, 999_999, "handled", "ops-bob")
        .await
        .unwrap_err();
    assert!(matches!(unknown, RouterError::NotFound(_)), "{unknown}");
    assert!(unknown.to_string().contains("no dead letter 999999"), "{unknown}");
    let unknown = deadletter::replay(&bus, 999_999, "ops-bob").await.unwrap_err();
    assert!(unknown.to_string().contains("no dead letter 999999"), "{unknown}");
    let zero = deadletter::replay(&bus, 0, "ops-bob").await.unwrap_err();
    assert!(matches!(zero, RouterError::Invalid(_)), "{zero}");
    let origin = deadletter::list(&bus, Some("a.b")).await.unwrap_err();
    assert!(origin.to_string().contains("--origin"), "{origin}");
    let hopeless = deadletter::replay(&bus, undecodable.id, "ops-bob").await.unwrap_err();
    assert!(
        matches!(hopeless, RouterError::Invalid(_)) && hopeless.to_string().contains("discard it"),
        "{hopeless}"
    );
    assert_eq!(deadletter::list(&bus, None).await.unwrap().len(), 2, "nothing changed");
    assert!(events(&bus, "deadletter.>").await.is_empty(), "nothing recorded");

    // Discards, recorded with who, why and when.
    deadletter::discard(&bus, undecodable.id, "garbage from a test client", "ops-bob")
        .await
        .unwrap();
    let left = deadletter::list(&bus, None).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, poisoned.id);
    let discarded = events(&bus, "deadletter.discarded").await;
    assert_eq!(discarded.len(), 1);
    assert_eq!(discarded[0]["deadletter_id"], undecodable.id);
    assert_eq!(discarded[0]["reason"], "garbage from a test client");
    assert_eq!(discarded[0]["by"], "ops-bob");
    assert!(discarded[0]["at"].as_str().is_some_and(|at| !at.is_empty()));
    let gone = deadletter::replay(&bus, undecodable.id, "ops-bob").await.unwrap_err();
    assert!(gone.to_string().contains("discarded by ops-bob"), "{gone}");

    deadletter::discard(&bus, poisoned.id, "the usager was called back", "ops-bob")
        .await
        .unwrap();
    assert!(deadletter::list(&bus, None).await.unwrap().is_empty());
    let discarded = events(&bus, "deadletter.discarded").await;
    assert_eq!(discarded.len(), 2);
    assert_eq!(discarded[1]["contact_id"], poison.id.as_str());
    assert!(!discarded[1].to_string().contains("broken@"), "no personal data");
    assert!(
        routed_all(&bus)
            .await
            .iter()
            .all(|(_, r)| r.contact.as_ref().unwrap().id != poison.id),
        "a discarded contact is not routed"
    );
    router.shutdown().await;
}

#[tokio::test]
async fn replay_all_sends_back_every_replayable_letter_and_leaves_the_hopeless_ones() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let key = damage(&bus, "broken@example.fr").await;
    let router = RunningRouter::start(&nats, config()).await;
    let one = email_contact("broken@example.fr", "one", "x");
    let two = email_contact("broken@example.fr", "two", "y");
    publish(&bus, &one).await;
    publish(&bus, &two).await;
    let garbage = bus
        .publish(
            "guichet.intake.web".into(),
            "garbage-2",
            Bytes::from_static(b"\xff\xff not a contact"),
        )
        .await
        .unwrap();
    pending(&bus, 3).await;
    bus.stores().identity.purge(&key).await.unwrap();

    let outcomes = deadletter::replay_all(&bus, Some("router"), "ops-carol").await.unwrap();
    assert_eq!(outcomes.len(), 2, "the undecodable one is skipped: {outcomes:?}");
    assert!(outcomes.iter().all(|(_, o)| o.is_ok()), "{outcomes:?}");
    let first = routed(&bus, &one.id).await;
    let second = routed(&bus, &two.id).await;
    assert_eq!(first.usager_id, second.usager_id, "one person, one usager id");
    // Run again: nothing left to replay, nothing routed twice.
    assert!(
        deadletter::replay_all(&bus, None, "ops-carol")
            .await
            .unwrap()
            .is_empty()
    );
    eventually("the replays are consumed", || {
        let bus = bus.clone();
        async move { intake_drained(&bus).await }
    })
    .await;
    let journal = routed_all(&bus).await;
    assert_eq!(routed_count(&journal, &one.id), 1);
    assert_eq!(routed_count(&journal, &two.id), 1);
    let left = deadletter::list(&bus, None).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].letter.original_sequence, garbage.sequence);
    assert_eq!(events(&bus, "deadletter.replayed").await.len(), 2);
    router.shutdown().await;
}
