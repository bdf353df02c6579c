//! `scripts/bench rules` (second part): `guichet rules replay` over N
//! recorded contacts (default 100,000; `RULES_REPLAY_CONTACTS` or the first
//! argument lowers it) with a 5,000-rule candidate, beside the rules
//! engine's own rate on the same contacts in the same run.
//!
//! A fresh nats-server is preloaded with the N contacts on INTAKE and one
//! `Routed` each on ROUTED (decided by a 10-rule file). The replay clock
//! covers everything the command does after connecting: reading both
//! streams, decoding, evaluating, comparing. The engine's rate is decode +
//! qualify on one thread, nothing read from NATS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Instant;

use async_nats::jetstream;
use bytes::Bytes;
use futures::{StreamExt, stream::FuturesUnordered};
use guichet_core::{
    ids,
    proto::{
        self,
        v1::{Contact, Routed},
    },
};
use guichet_harness::Nats;
use guichet_router::rules_replay::{self, Period};
use guichet_rules::{RuleSet, testing};
use prost::Message;

async fn publish_all(js: &jetstream::Context, messages: impl Iterator<Item = (String, String, Bytes)>) {
    let mut in_flight = FuturesUnordered::new();
    for (subject, id, payload) in messages {
        let ack = js
            .send_publish(
                subject,
                jetstream::message::PublishMessage::build()
                    .message_id(id.as_str())
                    .payload(payload),
            )
            .await
            .expect("publish");
        in_flight.push(ack.into_future());
        if in_flight.len() >= 512 {
            in_flight.next().await.unwrap().expect("preload ack");
        }
    }
    while let Some(ack) = in_flight.next().await {
        ack.expect("preload ack");
    }
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .filter(|a| !a.starts_with('-'))
        .or_else(|| std::env::var("RULES_REPLAY_CONTACTS").ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let now = chrono::Utc::now();
    let current = RuleSet::parse(&testing::generate_rules(10), "10 rules").expect("valid rules");
    let candidate = RuleSet::parse(&testing::generate_rules(5_000), "5000 rules").expect("valid rules");
    let contacts: Vec<Contact> = (0..n)
        .map(|i| {
            let mut c = testing::contact_for((i * 7) % 5_500);
            c.id = ids::contact_id();
            c.idempotency_key = format!("bench-{}", c.id);
            c.received_at = Some(proto::timestamp(now));
            c
        })
        .collect();

    let nats = Nats::start().await;
    // Connecting the bus creates the streams.
    let bus = nats.bus().await;
    let js = nats.jetstream().await;
    let t = Instant::now();
    publish_all(
        &js,
        contacts.iter().map(|c| {
            (
                "guichet.intake.web".to_owned(),
                c.idempotency_key.clone(),
                Bytes::from(c.encode_to_vec()),
            )
        }),
    )
    .await;
    publish_all(
        &js,
        contacts.iter().map(|c| {
            let routed = Routed {
                contact: Some(c.clone()),
                usager_id: "U1".into(),
                reference: c.reference.clone(),
                qualification: Some(current.qualify(c, 1)),
                ..Default::default()
            };
            (
                format!("guichet.routed.bench.{}", routed.usager_id),
                c.id.clone(),
                Bytes::from(routed.encode_to_vec()),
            )
        }),
    )
    .await;
    let preload = t.elapsed();

    let period = Period {
        from: now - chrono::Duration::hours(1),
        to: now + chrono::Duration::hours(1),
        services: Vec::new(),
    };
    let t = Instant::now();
    let report = rules_replay::replay(&bus, &candidate, &period).await.expect("replay");
    let replay = t.elapsed();
    assert_eq!(report.contacts, n, "every contact replayed");

    let encoded: Vec<Vec<u8>> = contacts.iter().map(Message::encode_to_vec).collect();
    let t = Instant::now();
    let mut sink = 0usize;
    for bytes in &encoded {
        let c = Contact::decode(bytes.as_slice()).unwrap_or_default();
        sink = sink.wrapping_add(candidate.qualify(&c, 0).rule_id.len());
    }
    let engine = t.elapsed();
    std::hint::black_box(sink);

    let replay_rate = n as f64 / replay.as_secs_f64();
    let engine_rate = n as f64 / engine.as_secs_f64();
    println!("rules replay: {n} recorded contacts, 5000-rule candidate vs 10-rule decisions (preload {preload:.1?})");
    println!(
        "  rules replay (read INTAKE + ROUTED, evaluate, compare)  {replay:>8.2?}  {replay_rate:>10.0} contacts/s"
    );
    println!("  engine alone (decode + qualify, one thread)            {engine:>8.2?}  {engine_rate:>10.0} contacts/s");
    println!("  ratio replay / engine: {:.2}", replay_rate / engine_rate);
    println!(
        "  {} contacts would change; target 100,000 in under 30 s: {}",
        report.changed,
        if n >= 100_000 && replay.as_secs_f64() < 30.0 {
            "met"
        } else if n >= 100_000 {
            "NOT met"
        } else {
            "(run with 100,000 to check)"
        }
    );
}
