//! Readiness and fast failure against a real nats-server: a publish
//! waiting for its PubAck fails as soon as the connection is lost, the
//! bus reports what is wrong (disconnected, INTAKE missing), a server
//! list is tried in full, and credentials in a URL are never printed.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use guichet_core::{
    Bus, Error,
    bus::{NotReady, subjects},
    config::TopologyConfig,
};
use guichet_harness::Nats;
use tokio_util::sync::CancellationToken;

/// Waits (at most `within`) until the bus's readiness satisfies `want`.
async fn wait_ready(bus: &Bus, within: Duration, want: impl Fn(&Result<(), NotReady>) -> bool) -> Result<(), NotReady> {
    let deadline = Instant::now() + within;
    loop {
        let now = bus.ready();
        if want(&now) || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_publish_waiting_for_its_puback_fails_at_once_when_the_connection_is_lost() {
    let mut nats = Nats::start().await;
    // A generous timeout: the failure must come from the disconnection.
    let mut config = nats.nats_config();
    config.publish_timeout = Duration::from_secs(10);
    let bus = Bus::start(
        &[nats.url()],
        &config,
        &TopologyConfig::default(),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    // A subject no stream stores, with a plain subscriber that never
    // answers: the publish waits for a PubAck that will not come.
    let listener = nats.client().await;
    let mut received = listener.subscribe("test.no-ack").await.unwrap();
    // The subscription is in place once the server has delivered one of
    // the listener's own messages back (`flush` only writes it out).
    listener.publish("test.no-ack", "listening".into()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), received.next())
        .await
        .expect("the listener's own message came back")
        .unwrap();

    let publishing = bus.clone();
    let publish = tokio::spawn(async move {
        let outcome = publishing
            .publish("test.no-ack".into(), "wait-1", Bytes::from_static(b"x"))
            .await;
        (outcome, Instant::now())
    });
    // Positive evidence that the publish is out and waiting.
    if tokio::time::timeout(Duration::from_secs(10), received.next())
        .await
        .is_err()
    {
        let outcome = if publish.is_finished() {
            format!("{:?}", publish.await.map(|(outcome, _)| outcome))
        } else {
            "still waiting".to_owned()
        };
        panic!("the publish did not reach the server within 10 s; the publish: {outcome}");
    }
    let killed = Instant::now();
    nats.kill().await;

    let (outcome, failed) = tokio::time::timeout(Duration::from_secs(15), publish)
        .await
        .expect("the publish ends")
        .unwrap();
    let err = outcome.unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)) && err.is_transient(), "{err}");
    assert!(err.to_string().contains("disconnected from NATS"), "{err}");
    let took = failed.duration_since(killed);
    assert!(took < Duration::from_secs(3), "failed after {took:?}, not at once");
    assert_eq!(
        wait_ready(&bus, Duration::from_secs(5), Result::is_err).await,
        Err(NotReady::Disconnected)
    );

    // A publish while disconnected fails at once too.
    let started = Instant::now();
    let err = bus
        .publish("guichet.intake.web".into(), "wait-2", Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("disconnected from NATS"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());

    nats.restart().await;
    assert_eq!(wait_ready(&bus, Duration::from_secs(20), Result::is_ok).await, Ok(()));
    bus.publish("guichet.intake.web".into(), "wait-2", Bytes::from_static(b"x"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_missing_intake_is_reported_as_such_by_readiness_and_publishes() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    assert_eq!(bus.ready(), Ok(()));
    nats.jetstream()
        .await
        .delete_stream(subjects::INTAKE_STREAM)
        .await
        .unwrap();
    assert_eq!(
        wait_ready(&bus, Duration::from_secs(10), Result::is_err).await,
        Err(NotReady::NoStream)
    );
    let err = bus
        .publish("guichet.intake.web".into(), "gone-1", Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("is the topology in place?"), "{err}");

    // Put back (as `guichet run` does at start): ready again.
    let again = nats.bus().await;
    assert_eq!(wait_ready(&bus, Duration::from_secs(10), Result::is_ok).await, Ok(()));
    again
        .publish("guichet.intake.web".into(), "gone-1", Bytes::from_static(b"x"))
        .await
        .unwrap();
}

#[tokio::test]
async fn every_listed_server_is_tried_and_credentials_are_not_printed() {
    let nats = Nats::start().await;
    let down = format!("nats://{}", guichet_harness::loopback::free_addr());
    // The server has no authorization: it ignores the credentials, which
    // must still not show in the bus's Debug.
    let live = format!("nats://guichet:s3cret-pw@{}:{}", nats.host(), nats.port());
    let urls = vec![down.clone(), live];
    let bus = Bus::start(
        &urls,
        &nats.nats_config(),
        &TopologyConfig::default(),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    bus.publish("guichet.intake.web".into(), "list-1", Bytes::from_static(b"x"))
        .await
        .unwrap();
    let shown = format!("{bus:?} {}", bus.urls());
    assert!(!shown.contains("s3cret-pw"), "{shown}");
    assert!(
        shown.contains(&down) && shown.contains(&format!("***@{}", nats.host())),
        "{shown}"
    );

    // Every server down: the error names them, still without credentials.
    let mut config = nats.nats_config();
    config.connect_timeout = Duration::from_secs(1);
    let other = format!("nats://guichet:s3cret-pw@{}", guichet_harness::loopback::free_addr());
    let err = Bus::start(
        &[down, other],
        &config,
        &TopologyConfig::default(),
        &CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    assert!(!err.to_string().contains("s3cret-pw"), "{err}");
}
