//! Reading a subject's messages once (`Bus::scan`, `Bus::scan_until`, `Bus::scan_last`)
//! against a real nats-server: oldest first, only the filtered subjects,
//! nothing for an empty subject, and stopped where the visitor says.

// Test helpers may unwrap: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use std::ops::ControlFlow;

use bytes::Bytes;
use guichet_core::bus::subjects::{self, ROUTED_STREAM};
use guichet_harness::Nats;

#[tokio::test]
async fn a_scan_shows_the_filtered_messages_oldest_first_and_stops_when_told() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;

    // Nothing there yet: nothing shown, no wait.
    let mut seen = 0;
    bus.scan(ROUTED_STREAM, &subjects::usager_history("U1"), |_| seen += 1)
        .await
        .unwrap();
    assert_eq!(seen, 0);

    // U1 and U2 interleaved.
    for i in 0..6 {
        let usager = if i % 2 == 0 { "U1" } else { "U2" };
        bus.publish(
            subjects::routed("voirie", usager),
            &format!("scan-{i}"),
            Bytes::from(format!("{usager}-{i}")),
        )
        .await
        .unwrap();
    }

    let mut u1 = Vec::new();
    bus.scan(ROUTED_STREAM, &subjects::usager_history("U1"), |m| {
        u1.push((m.sequence, m.subject.to_owned(), m.payload.clone()));
    })
    .await
    .unwrap();
    let payloads: Vec<&[u8]> = u1.iter().map(|(_, _, p)| p.as_ref()).collect();
    assert_eq!(payloads, [&b"U1-0"[..], b"U1-2", b"U1-4"], "only U1's, oldest first");
    assert!(u1.windows(2).all(|w| w[0].0 < w[1].0), "stream order");
    assert!(u1.iter().all(|(_, s, _)| *s == subjects::routed("voirie", "U1")));

    // Several filters: every message of both, in stream order.
    let both = [subjects::usager_history("U1"), subjects::usager_history("U2")];
    let mut all = Vec::new();
    bus.scan_until(ROUTED_STREAM, &both, |m| {
        all.push(m.payload.clone());
        ControlFlow::Continue(())
    })
    .await
    .unwrap();
    let expected: Vec<Bytes> = ["U1-0", "U2-1", "U1-2", "U2-3", "U1-4", "U2-5"]
        .into_iter()
        .map(Bytes::from)
        .collect();
    assert_eq!(all, expected);

    // Stopped by the visitor: nothing more is shown.
    let mut shown = 0;
    bus.scan_until(ROUTED_STREAM, &both, |_| {
        shown += 1;
        if shown == 2 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .await
    .unwrap();
    assert_eq!(shown, 2);
}

#[tokio::test]
async fn a_last_per_subject_scan_shows_each_key_once_with_its_headers() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let kv = &bus.stores().requests;
    kv.put("ref.A", Bytes::from("A-1")).await.unwrap();
    kv.put("ref.B", Bytes::from("B-1")).await.unwrap();
    kv.put("ref.A", Bytes::from("A-2")).await.unwrap();
    kv.delete("ref.B").await.unwrap();
    kv.put("other.C", Bytes::from("C-1")).await.unwrap();

    let bucket = subjects::REQUESTS_BUCKET;
    let mut seen = Vec::new();
    bus.scan_last(&format!("KV_{bucket}"), &format!("$KV.{bucket}.ref.>"), |m| {
        let operation = m
            .headers
            .and_then(|h| h.get("KV-Operation"))
            .map(|op| op.as_str().to_owned());
        seen.push((m.subject.to_owned(), m.payload.clone(), operation));
    })
    .await
    .unwrap();
    assert_eq!(
        seen,
        [
            (format!("$KV.{bucket}.ref.A"), Bytes::from("A-2"), None),
            (format!("$KV.{bucket}.ref.B"), Bytes::new(), Some("DEL".to_owned())),
        ],
        "the last entry of each ref.* key, in stream order, the deletion with its header"
    );
}
