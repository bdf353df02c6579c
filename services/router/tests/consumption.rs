//! Consuming INTAKE: dead letters, bounded redelivery, idempotency beyond
//! the duplicate window, routers sharing the consumer, clean shutdown.

#![allow(clippy::unwrap_used)]

mod common;

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use common::*;
use guichet_core::{identity::normalize_email, proto::v1::Contact};
use guichet_harness::Nats;
use guichet_router::RouterConfig;

async fn intake_consumer_state(bus: &guichet_core::Bus) -> (u64, usize) {
    let stream = bus.jetstream().get_stream("INTAKE").await.unwrap();
    let mut consumer = stream
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>("router")
        .await
        .unwrap();
    let info = consumer.info().await.unwrap();
    (info.num_pending, info.num_ack_pending)
}

/// Hooks that note the id of every contact a router begins to route.
fn noting_starts() -> (guichet_router::Hooks, Arc<Mutex<Vec<String>>>) {
    let started = Arc::new(Mutex::new(Vec::new()));
    let noted = started.clone();
    let hooks = guichet_router::Hooks {
        before_route: Some(Arc::new(move |contact: &Contact| {
            noted.lock().unwrap().push(contact.id.clone());
        })),
    };
    (hooks, started)
}

/// The contacts of `started` that have no `Routed` in the journal yet.
async fn unfinished(bus: &guichet_core::Bus, started: &Mutex<Vec<String>>) -> Vec<String> {
    let routed: HashSet<String> = routed_all(bus)
        .await
        .into_iter()
        .map(|(_, r)| r.contact.unwrap_or_default().id)
        .collect();
    let started = started.lock().unwrap().clone();
    started.into_iter().filter(|id| !routed.contains(id)).collect()
}

#[tokio::test]
async fn an_undecodable_payload_is_dead_lettered_at_once_and_terminated() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let router = RunningRouter::start(&nats, config()).await;
    let garbage = Bytes::from_static(b"\xff\xff\xff not a protobuf contact");
    let stored = bus
        .publish("guichet.intake.email".into(), "garbage-1", garbage.clone())
        .await
        .unwrap();
    let ok = email_contact("a@example.fr", "ok", "ok");
    publish(&bus, &ok).await;
    routed(&bus, &ok.id).await;

    eventually("the dead letter is stored", || {
        let bus = bus.clone();
        async move { !dead_letters(&bus).await.is_empty() }
    })
    .await;
    let letters = dead_letters(&bus).await;
    assert_eq!(letters.len(), 1);
    let l = &letters[0];
    assert!(l.undecodable);
    assert_eq!(l.deliveries, 1, "never retried");
    assert_eq!(l.payload, garbage.to_vec(), "payload unchanged");
    assert_eq!(l.original_subject, "guichet.intake.email");
    assert_eq!(l.original_stream, "INTAKE");
    assert_eq!(l.original_sequence, stored.sequence);
    assert_eq!(l.failed_in, "router");
    assert!(l.reason.contains("not a guichet.v1.Contact"), "{}", l.reason);
    // Only the good one was routed; nothing left pending or unacked.
    assert_eq!(routed_all(&bus).await.len(), 1);
    eventually("the intake consumer is drained", || {
        let bus = bus.clone();
        async move { intake_consumer_state(&bus).await == (0, 0) }
    })
    .await;
    router.shutdown().await;
}

#[tokio::test]
async fn a_contact_that_makes_routing_fail_is_retried_then_dead_lettered() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    // The identity bucket is damaged for this person: the key leads to
    // something that is not a usager id, so routing fails every time.
    let key = guichet_harness::pseudonymizer().identity_key(&normalize_email("broken@example.fr").unwrap());
    bus.stores()
        .identity
        .put(key, Bytes::from_static(b"not a usager id!"))
        .await
        .unwrap();
    let router = RunningRouter::start(&nats, config()).await;
    let poison = email_contact("broken@example.fr", "x", "x");
    publish(&bus, &poison).await;
    let fine = email_contact("fine@example.fr", "y", "y");
    publish(&bus, &fine).await;
    routed(&bus, &fine.id).await;

    eventually("the poison contact is dead-lettered", || {
        let bus = bus.clone();
        async move { !dead_letters(&bus).await.is_empty() }
    })
    .await;
    let letters = dead_letters(&bus).await;
    assert_eq!(letters.len(), 1);
    let l = &letters[0];
    assert!(!l.undecodable);
    assert_eq!(l.deliveries, 3, "max_deliveries tries");
    assert!(l.reason.contains("routing failed 3 times"), "{}", l.reason);
    assert!(l.reason.contains("not a usager id"), "the cause: {}", l.reason);
    assert!(
        !l.reason.contains("broken@"),
        "no personal data in the reason: {}",
        l.reason
    );
    let decoded = <Contact as prost::Message>::decode(l.payload.as_slice()).unwrap();
    assert_eq!(decoded.id, poison.id);
    // Not routed, not left pending, and never delivered again.
    assert!(
        routed_all(&bus)
            .await
            .iter()
            .all(|(_, r)| r.contact.as_ref().unwrap().id != poison.id)
    );
    eventually("the intake consumer is drained", || {
        let bus = bus.clone();
        async move { intake_consumer_state(&bus).await == (0, 0) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(dead_letters(&bus).await.len(), 1);
    router.shutdown().await;
}

/// Issue 12: a panic while routing one contact (a bug) used to unwind
/// through the consumer and take the router down with every contact in
/// flight. It is that contact's failure: retried, then dead-lettered with
/// the panic's message, while the others are routed and the router runs on.
#[tokio::test]
async fn a_contact_whose_routing_panics_is_dead_lettered_and_the_router_goes_on() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let hooks = guichet_router::Hooks {
        before_route: Some(std::sync::Arc::new(|contact: &Contact| {
            if contact.subject == "boom" {
                panic!("a bug met while routing");
            }
        })),
    };
    let router = RunningRouter::start_with_hooks(&nats, config(), hooks).await;
    let boom = email_contact("boom@example.fr", "boom", "x");
    publish(&bus, &boom).await;
    let fine: Vec<Contact> = (0..5)
        .map(|n| email_contact(&format!("fine{n}@example.fr"), "y", "y"))
        .collect();
    for c in &fine {
        publish(&bus, c).await;
    }
    eventually("the panicking contact is dead-lettered", || {
        let bus = bus.clone();
        async move { !dead_letters(&bus).await.is_empty() }
    })
    .await;
    for c in &fine {
        routed(&bus, &c.id).await;
    }
    let letters = dead_letters(&bus).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].deliveries, 3, "max_deliveries tries");
    assert!(
        letters[0].reason.contains("routing panicked: a bug met while routing"),
        "{}",
        letters[0].reason
    );
    assert!(!router.task.is_finished(), "the router runs on");
    let after = email_contact("after@example.fr", "z", "z");
    publish(&bus, &after).await;
    routed(&bus, &after.id).await;
    router.shutdown().await;
}

#[tokio::test]
async fn a_contact_seen_again_after_the_duplicate_window_is_not_routed_twice() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let router = RunningRouter::start(&nats, config()).await;
    let c = email_contact("a@example.fr", "x", "x");
    publish(&bus, &c).await;
    let first = routed(&bus, &c.id).await;
    // The same contact again under another Nats-Msg-Id: JetStream cannot
    // deduplicate it (as after the 2-minute window).
    bus.publish(
        "guichet.intake.email".into(),
        "replay-after-window",
        Bytes::from(prost::Message::encode_to_vec(&c)),
    )
    .await
    .unwrap();
    eventually("the replay is consumed", || {
        let bus = bus.clone();
        async move { intake_consumer_state(&bus).await == (0, 0) }
    })
    .await;
    let journal = routed_all(&bus).await;
    assert_eq!(journal.len(), 1, "routed once");
    assert_eq!(journal[0].1.reference, first.reference);
    router.shutdown().await;
}

#[tokio::test]
async fn two_routers_share_the_intake_and_one_takes_over_when_the_other_stops() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let small_batches = RouterConfig {
        batch_size: 5,
        concurrency: 4,
        ..config()
    };
    let (hooks_a, started_a) = noting_starts();
    let (hooks_b, started_b) = noting_starts();
    let a = RunningRouter::start_with_hooks(&nats, small_batches.clone(), hooks_a).await;
    let b = RunningRouter::start_with_hooks(&nats, small_batches, hooks_b).await;
    let mut ids = Vec::new();
    for i in 0..150 {
        let c = email_contact(&format!("u{}@example.fr", i % 30), "x", "x");
        publish(&bus, &c).await;
        ids.push(c.id);
    }
    // Both pull from the same durable consumer.
    let stream = bus.jetstream().get_stream("INTAKE").await.unwrap();
    let names: Vec<String> = {
        use futures::TryStreamExt;
        stream.consumer_names().try_collect().await.unwrap()
    };
    assert_eq!(names, vec!["router".to_owned()], "one shared consumer");
    // Both routers take contacts from it (bounded: 10 s).
    for _ in 0..200 {
        if !started_a.lock().unwrap().is_empty() && !started_b.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (by_a, by_b) = (started_a.lock().unwrap().len(), started_b.lock().unwrap().len());
    assert!(by_a > 0 && by_b > 0, "both routers routed some: a {by_a}, b {by_b}");
    a.shutdown().await;
    // What `a` began, it finished before stopping.
    let left = unfinished(&bus, &started_a).await;
    assert!(
        left.is_empty(),
        "router a stopped with {} contacts begun and not routed",
        left.len()
    );
    for i in 0..150 {
        let c = email_contact(&format!("u{}@example.fr", i % 30), "y", "y");
        publish(&bus, &c).await;
        ids.push(c.id);
    }
    for id in &ids {
        routed(&bus, id).await;
    }
    let journal = routed_all(&bus).await;
    let unique: HashSet<_> = journal
        .iter()
        .map(|(_, r)| r.contact.as_ref().unwrap().id.clone())
        .collect();
    assert_eq!(journal.len(), 300, "each contact routed exactly once");
    assert_eq!(unique.len(), 300);
    // 30 people, one id each, whichever router met them first.
    let usagers: HashSet<_> = journal.iter().map(|(_, r)| r.usager_id.clone()).collect();
    assert_eq!(usagers.len(), 30);
    b.shutdown().await;
    // `b` took over: it routed the rest, the second half included.
    let by_b: HashSet<String> = started_b.lock().unwrap().iter().cloned().collect();
    assert!(
        ids[150..].iter().all(|id| by_b.contains(id)),
        "b routed every contact sent after a stopped"
    );
}

#[tokio::test]
async fn shutdown_finishes_the_contacts_in_hand_and_the_next_router_routes_the_rest() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let mut ids = Vec::new();
    for i in 0..400 {
        let c = email_contact(&format!("s{}@example.fr", i % 40), "x", "x");
        publish(&bus, &c).await;
        ids.push(c.id);
    }
    let (hooks, started) = noting_starts();
    let router = RunningRouter::start_with_hooks(&nats, config(), hooks).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    router.shutdown().await;
    let done = routed_all(&bus).await.len();
    // What was started was finished: no contact is half-routed (routed but
    // not acked is recognized later anyway), and the rest waits in INTAKE.
    assert!(!started.lock().unwrap().is_empty(), "the first router began some");
    let left = unfinished(&bus, &started).await;
    assert!(
        left.is_empty(),
        "{} contacts begun and not routed at shutdown",
        left.len()
    );
    let router = RunningRouter::start(
        &nats,
        RouterConfig {
            ack_wait: Duration::from_secs(1),
            ..config()
        },
    )
    .await;
    for id in &ids {
        routed(&bus, id).await;
    }
    let journal = routed_all(&bus).await;
    assert_eq!(journal.len(), 400, "none lost, none twice (first run routed {done})");
    router.shutdown().await;
}

#[tokio::test]
async fn routing_resumes_after_the_broker_restarts() {
    let mut nats = Nats::start().await;
    let bus = nats.bus().await;
    let router = RunningRouter::start(&nats, config()).await;
    let before = email_contact("a@example.fr", "x", "x");
    publish(&bus, &before).await;
    routed(&bus, &before.id).await;

    nats.restart().await;
    let after = email_contact("a@example.fr", "y", "y");
    let mut published = false;
    for _ in 0..100 {
        if bus.publish_contact(&after).await.is_ok() {
            published = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(published, "the broker came back");
    let r = routed(&bus, &after.id).await;
    assert_eq!(r.usager_id, routed(&bus, &before.id).await.usager_id);
    assert!(!router.task.is_finished(), "the router kept running through the outage");
    router.shutdown().await;
}
