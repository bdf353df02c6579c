//! The bus against a real nats-server: topology, deduplication, exactly
//! once intake however late the retry, and what publishing does when the
//! broker is away.

// Test helpers may unwrap: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use guichet_core::{
    Bus, Error,
    bus::subjects,
    config::{StorageKind, TopologyConfig},
    proto::v1::{Channel, Contact},
};
use guichet_harness::Nats;
use prost::Message;
use tokio_util::sync::CancellationToken;

async fn stream_messages(js: &jetstream::Context, stream: &str) -> u64 {
    js.get_stream(stream)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages
}

fn contact(key: &str) -> Contact {
    Contact {
        id: guichet_core::ids::contact_id(),
        received_at: Some(guichet_core::proto::timestamp(chrono::Utc::now())),
        channel: Channel::Web as i32,
        reference: guichet_core::ids::reference(chrono::Utc::now()),
        idempotency_key: key.to_owned(),
        subject: "Encombrants rue des Lilas".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn topology_is_created_and_creating_it_again_changes_nothing() {
    let nats = Nats::start().await;
    let _bus = nats.bus().await;
    let js = nats.jetstream().await;

    let mut before = Vec::new();
    for name in [
        subjects::INTAKE_STREAM,
        subjects::ROUTED_STREAM,
        subjects::DEADLETTER_STREAM,
        subjects::EVENTS_STREAM,
    ] {
        let info = js.get_stream(name).await.unwrap().info().await.unwrap().clone();
        assert_eq!(info.config.duplicate_window, Duration::from_secs(120), "{name}");
        before.push((info.created, info.config.clone()));
    }
    assert_eq!(before[0].1.subjects, vec!["guichet.intake.>".to_owned()]);
    assert_eq!(before[1].1.subjects, vec!["guichet.routed.>".to_owned()]);
    for bucket in [
        subjects::IDENTITY_BUCKET,
        subjects::REQUESTS_BUCKET,
        subjects::CHECKPOINTS_BUCKET,
        subjects::CONFIG_BUCKET,
        subjects::REPLAY_GUARD_BUCKET,
        subjects::LEASES_BUCKET,
    ] {
        js.get_key_value(bucket)
            .await
            .unwrap_or_else(|e| panic!("{bucket}: {e}"));
    }
    js.get_object_store(subjects::ATTACHMENTS_STORE).await.unwrap();

    // Again, with data in a stream: nothing is recreated or lost.
    js.publish("guichet.intake.web", "x".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let _again = nats.bus().await;
    for (i, name) in [
        subjects::INTAKE_STREAM,
        subjects::ROUTED_STREAM,
        subjects::DEADLETTER_STREAM,
        subjects::EVENTS_STREAM,
    ]
    .iter()
    .enumerate()
    {
        let info = js.get_stream(*name).await.unwrap().info().await.unwrap().clone();
        assert_eq!(info.created, before[i].0, "{name} was recreated");
        assert_eq!(info.config, before[i].1, "{name} config changed");
    }
    assert_eq!(stream_messages(&js, subjects::INTAKE_STREAM).await, 1);
}

#[tokio::test]
async fn changed_retention_is_applied_to_the_existing_stream() {
    let nats = Nats::start().await;
    let _bus = nats.bus().await;
    let topology = TopologyConfig {
        routed_max_age: Duration::from_secs(400 * 86_400),
        ..TopologyConfig::default()
    };
    Bus::start(&[nats.url()], &nats.nats_config(), &topology, &CancellationToken::new())
        .await
        .unwrap();
    let js = nats.jetstream().await;
    let info = js
        .get_stream(subjects::ROUTED_STREAM)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    assert_eq!(info.config.max_age, Duration::from_secs(400 * 86_400));
}

/// The configuration of a bucket's stream (`KV_<bucket>`, `OBJ_<store>`).
async fn store_config(js: &jetstream::Context, stream: &str) -> (jetstream::stream::Config, u64) {
    let info = js.get_stream(stream).await.unwrap().info().await.unwrap().clone();
    (info.config, info.state.messages)
}

/// KV buckets are reconciled like streams: a new `replay_guard_ttl`
/// takes effect on the existing bucket, a history changed behind
/// guichet's back is put back, and the values stay.
#[tokio::test]
async fn a_changed_ttl_or_history_is_applied_to_the_existing_buckets() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let seen_stream = format!("KV_{}", subjects::REPLAY_GUARD_BUCKET);
    let config_stream = format!("KV_{}", subjects::CONFIG_BUCKET);
    let js = nats.jetstream().await;
    let (before, _) = store_config(&js, &seen_stream).await;
    assert_eq!(before.max_age, TopologyConfig::default().replay_guard_ttl);
    bus.stores()
        .replay_guard
        .put("m.abc", Bytes::from_static(b"1"))
        .await
        .unwrap();
    // An operator's `nats kv edit`: the rules' history cut to 2.
    let (mut edited, _) = store_config(&js, &config_stream).await;
    edited.max_messages_per_subject = 2;
    js.update_stream(&edited).await.unwrap();

    let ttl = Duration::from_secs(10 * 86_400);
    let topology = TopologyConfig {
        replay_guard_ttl: ttl,
        ..TopologyConfig::default()
    };
    let bus = Bus::start(&[nats.url()], &nats.nats_config(), &topology, &CancellationToken::new())
        .await
        .unwrap();
    let (after, messages) = store_config(&js, &seen_stream).await;
    assert_eq!(after.max_age, ttl, "replay_guard_ttl was not applied");
    assert_eq!(messages, 1, "the bucket lost its values");
    assert!(
        bus.stores().replay_guard.get("m.abc").await.unwrap().is_some(),
        "the key is gone"
    );
    let (config_after, _) = store_config(&js, &config_stream).await;
    assert_eq!(
        config_after.max_messages_per_subject, 64,
        "the rules' history was not put back"
    );

    // A TTL shorter than the duplicate window (2 min) shortens the window
    // too, as the server requires, instead of failing the start.
    let short = TopologyConfig {
        replay_guard_ttl: Duration::from_secs(30),
        ..TopologyConfig::default()
    };
    Bus::start(&[nats.url()], &nats.nats_config(), &short, &CancellationToken::new())
        .await
        .unwrap();
    let (after, _) = store_config(&js, &seen_stream).await;
    assert_eq!(after.max_age, Duration::from_secs(30));
    assert!(after.duplicate_window <= after.max_age);
}

/// Processes starting together create the topology at the same time:
/// every one of them starts, and the topology is made once.
#[tokio::test]
async fn peers_creating_the_topology_at_once_all_start() {
    let nats = Nats::start().await;
    let starts = (0..8).map(|_| {
        let (url, config) = (nats.url(), nats.nats_config());
        tokio::spawn(
            async move { Bus::start(&[url], &config, &TopologyConfig::default(), &CancellationToken::new()).await },
        )
    });
    for outcome in futures::future::join_all(starts).await {
        outcome.unwrap().unwrap();
    }
    let js = nats.jetstream().await;
    let mut names = js.stream_names();
    let mut count = 0;
    while let Some(name) = futures::StreamExt::next(&mut names).await {
        name.unwrap();
        count += 1;
    }
    assert_eq!(count, 4 + 6 + 1, "four streams, six buckets, one object store");
}

/// What cannot change in place (a bucket's storage) stops the start with
/// the bucket, the setting and the fix, and leaves the bucket as it was.
#[tokio::test]
async fn a_bucket_with_another_storage_is_refused_with_the_fix() {
    let nats = Nats::start().await;
    let js = nats.jetstream().await;
    let identity = js
        .create_key_value(jetstream::kv::Config {
            bucket: subjects::IDENTITY_BUCKET.into(),
            history: 5,
            storage: jetstream::stream::StorageType::Memory,
            ..Default::default()
        })
        .await
        .unwrap();
    identity.put("k", Bytes::from_static(b"U1")).await.unwrap();
    let err = Bus::start(
        &[nats.url()],
        &nats.nats_config(),
        &TopologyConfig::default(),
        &CancellationToken::new(),
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Incompatible { .. }), "{text}");
    assert!(
        text.contains(subjects::IDENTITY_BUCKET) && text.contains("topology.storage") && text.contains("Memory"),
        "{text}"
    );
    let (config, messages) = store_config(&js, &format!("KV_{}", subjects::IDENTITY_BUCKET)).await;
    assert_eq!(config.storage, jetstream::stream::StorageType::Memory);
    assert_eq!(messages, 1, "the bucket was touched");
}

#[tokio::test]
async fn a_stream_with_another_storage_is_reported_with_the_fix() {
    let nats = Nats::start().await;
    let js = nats.jetstream().await;
    js.create_stream(jetstream::stream::Config {
        name: subjects::INTAKE_STREAM.into(),
        subjects: vec!["guichet.intake.>".into()],
        storage: jetstream::stream::StorageType::Memory,
        ..Default::default()
    })
    .await
    .unwrap();
    let err = Bus::start(
        &[nats.url()],
        &nats.nats_config(),
        &TopologyConfig::default(),
        &CancellationToken::new(),
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Incompatible { .. }), "{text}");
    assert!(
        text.contains("INTAKE") && text.contains("topology.storage") && text.contains("Memory"),
        "{text}"
    );

    // With the matching storage configured, it starts.
    let memory = TopologyConfig {
        storage: StorageKind::Memory,
        ..TopologyConfig::default()
    };
    Bus::start(&[nats.url()], &nats.nats_config(), &memory, &CancellationToken::new())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_server_without_jetstream_is_reported() {
    let nats = Nats::start_without_jetstream().await;
    let err = Bus::start(
        &[nats.url()],
        &nats.nats_config(),
        &TopologyConfig::default(),
        &CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::NoJetStream { .. }), "{err}");
    assert!(err.to_string().contains("-js"), "{err}");
}

#[tokio::test]
async fn an_unreachable_server_is_an_error_not_a_hang() {
    let port = guichet_core::nats_server::free_port().unwrap();
    let mut config = guichet_core::config::NatsConfig {
        url: Some(format!("nats://127.0.0.1:{port}").into()),
        ..Default::default()
    };
    config.connect_timeout = Duration::from_secs(1);
    let started = std::time::Instant::now();
    let err = Bus::start(
        config.url.as_deref().unwrap(),
        &config,
        &TopologyConfig::default(),
        &CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    assert!(err.is_transient());
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn the_same_msg_id_twice_stores_one_message() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let first = bus
        .publish("guichet.intake.web".into(), "web:form:abc", Bytes::from_static(b"one"))
        .await
        .unwrap();
    let second = bus
        .publish("guichet.intake.web".into(), "web:form:abc", Bytes::from_static(b"two"))
        .await
        .unwrap();
    assert!(!first.duplicate);
    assert!(second.duplicate);
    assert_eq!(second.sequence, first.sequence);
    let js = nats.jetstream().await;
    assert_eq!(stream_messages(&js, subjects::INTAKE_STREAM).await, 1);
    let stored = js
        .get_stream(subjects::INTAKE_STREAM)
        .await
        .unwrap()
        .direct_get(first.sequence)
        .await
        .unwrap();
    assert_eq!(&stored.payload[..], b"one");
}

#[tokio::test]
async fn a_contact_retry_returns_the_first_receipt_even_after_the_duplicate_window() {
    let nats = Nats::start().await;
    // A tiny duplicate window, so the retry lands after it: only the
    // contact's own subject, already taken in INTAKE, can catch it.
    let topology = TopologyConfig {
        duplicate_window: Duration::from_secs(1),
        ..TopologyConfig::default()
    };
    let bus = Bus::start(&[nats.url()], &nats.nats_config(), &topology, &CancellationToken::new())
        .await
        .unwrap();
    let first = contact("web:contact:retry-1");
    let receipt = bus.publish_contact(&first).await.unwrap();
    assert_eq!(receipt.contact_id, first.id);
    assert!(!receipt.duplicate);

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let retry = contact("web:contact:retry-1");
    assert_ne!(retry.id, first.id);
    let again = bus.publish_contact(&retry).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.contact_id, first.id);
    assert_eq!(again.reference, first.reference);
    assert_eq!(again.received_at, receipt.received_at);
    assert_eq!(again.sequence, receipt.sequence);

    let js = nats.jetstream().await;
    assert_eq!(stream_messages(&js, subjects::INTAKE_STREAM).await, 1);
    let stored = js
        .get_stream(subjects::INTAKE_STREAM)
        .await
        .unwrap()
        .direct_get(receipt.sequence)
        .await
        .unwrap();
    assert_eq!(
        stored.subject.as_str(),
        subjects::intake_keyed(Channel::Web, "web:contact:retry-1")
    );
    assert_eq!(Contact::decode(stored.payload).unwrap().id, first.id);
}

#[tokio::test]
async fn a_retry_within_the_window_gets_the_stored_ids_and_other_keys_are_other_contacts() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let first = contact("desk:site:req-7");
    let receipt = bus.publish_contact(&first).await.unwrap();
    let retry = contact("desk:site:req-7");
    let again = bus.publish_contact(&retry).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.contact_id, first.id);
    assert_eq!(again.sequence, receipt.sequence);

    let other = contact("desk:site:req-8");
    let third = bus.publish_contact(&other).await.unwrap();
    assert!(!third.duplicate);
    assert_eq!(third.contact_id, other.id);
    let js = nats.jetstream().await;
    assert_eq!(stream_messages(&js, subjects::INTAKE_STREAM).await, 2);

    // What an adapter asks before uploading attachments again.
    let found = bus
        .already_received(Channel::Web, "desk:site:req-7")
        .await
        .unwrap()
        .unwrap();
    assert!(found.duplicate);
    assert_eq!(found.contact_id, first.id);
    assert!(
        bus.already_received(Channel::Web, "desk:site:never")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        bus.already_received(Channel::Phone, "desk:site:req-7")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn many_concurrent_retries_of_one_contact_store_it_once() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let attempts: Vec<_> = (0..32)
        .map(|_| {
            let bus = bus.clone();
            tokio::spawn(async move { bus.publish_contact(&contact("web:contact:storm")).await })
        })
        .collect();
    let mut receipts = Vec::new();
    for a in attempts {
        receipts.push(a.await.unwrap().unwrap());
    }
    assert_eq!(receipts.iter().filter(|r| !r.duplicate).count(), 1);
    let first = receipts.iter().find(|r| !r.duplicate).unwrap();
    assert!(
        receipts
            .iter()
            .all(|r| r.contact_id == first.contact_id && r.sequence == first.sequence)
    );
    let js = nats.jetstream().await;
    assert_eq!(stream_messages(&js, subjects::INTAKE_STREAM).await, 1);
}

#[tokio::test]
async fn publishing_while_the_server_is_down_fails_fast_then_recovers() {
    let mut nats = Nats::start().await;
    let bus = nats.bus().await;
    nats.stop().await;

    let started = std::time::Instant::now();
    let err = bus
        .publish("guichet.intake.web".into(), "down-1", Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(matches!(err, Error::Unavailable(_)), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );

    nats.restart().await;
    // The client reconnects by itself; the same publish then succeeds.
    let mut published = None;
    for _ in 0..50 {
        match bus
            .publish("guichet.intake.web".into(), "down-1", Bytes::from_static(b"x"))
            .await
        {
            Ok(p) => {
                published = Some(p);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    assert!(published.is_some(), "publish never recovered after restart");
    let js = nats.jetstream().await;
    assert_eq!(stream_messages(&js, subjects::INTAKE_STREAM).await, 1);
}

#[tokio::test]
async fn attachments_are_stored_once_by_content() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let a = bus
        .put_attachment(b"%PDF-1.4 plan", "../plan.pdf", "application/pdf")
        .await
        .unwrap();
    let b = bus
        .put_attachment(b"%PDF-1.4 plan", "copie.pdf", "application/pdf")
        .await
        .unwrap();
    assert_eq!(a.key, b.key);
    assert_eq!(a.file_name, "plan.pdf");
    assert_eq!(a.size, 13);
    assert_eq!(bus.get_attachment(&a.key).await.unwrap(), b"%PDF-1.4 plan");
}
