//! `scripts/bench notify [N]`: acknowledgments per second to a real SMTP
//! server (smtp-sink), beside lettre's raw sending rate to the same server
//! in the same run, and receipt → `250` p99 under a steady load.
//!
//! notify alone is measured (no router): N `Routed` envelopes of new
//! requests (default 2,000; `NOTIFY_BENCH_N` or the first argument) are
//! put on ROUTED, the clock runs from notify's start to the N-th
//! `notify_sent` event. The baseline sends N messages of the same size
//! with the same transport settings and the same concurrency. Then a
//! steady load at half the measured rate for 10 s gives the p99 of
//! receipt → `250` (the `receipt_to_sent_seconds` of each send).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt, stream::FuturesUnordered};
use guichet_core::{
    Bus, ServiceContext,
    admin::Health,
    bus::subjects,
    ids, proto,
    proto::v1::{Channel, Contact, IdentityClaims, Qualification, Routed},
};
use guichet_harness::{Nats, SmtpSink};
use guichet_notify::{NotifyConfig, config::SmtpSecurity, sender};
use lettre::AsyncTransport;
use prost::Message;
use tokio_util::sync::CancellationToken;

const RULES: &str = r#"
manual_service = "accueil"
[[services]]
name = "accueil"
deadline = "5 business days"
designation = "Accueil général de la mairie"
postal_address = "1 place de la Mairie, 00000 Ville"
email = "accueil@ville.example"
phone = "+33 1 00 00 00 00"
"#;

fn routed(i: usize) -> Routed {
    let now = chrono::Utc::now();
    Routed {
        contact: Some(Contact {
            id: ids::contact_id(),
            received_at: Some(proto::timestamp(now)),
            channel: Channel::Web as i32,
            claims: Some(IdentityClaims {
                email: format!("usager{i}@usager.example"),
                ..Default::default()
            }),
            subject: format!("Demande {i}"),
            ..Default::default()
        }),
        usager_id: format!("U{}", ids::contact_id()),
        reference: ids::reference(now),
        qualification: Some(Qualification {
            service: "accueil".into(),
            due_date: "2026-12-15".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn put(bus: &Bus, r: &Routed) {
    bus.publish(
        subjects::routed("accueil", &r.usager_id),
        &r.contact.as_ref().unwrap().id,
        Bytes::from(r.encode_to_vec()),
    )
    .await
    .unwrap();
}

async fn sent_events(bus: &Bus) -> Vec<f64> {
    guichet_harness::streams::read_all(bus.jetstream(), "EVENTS", Duration::from_secs(60))
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.subject == "guichet.events.notify_sent")
        .filter_map(|m| serde_json::from_slice::<serde_json::Value>(&m.payload).ok())
        .filter_map(|v| v["receipt_to_sent_seconds"].as_f64())
        .collect()
}

fn config(sink: &SmtpSink) -> NotifyConfig {
    let mut c = NotifyConfig {
        from: "Mairie <mairie@ville.example>".into(),
        concurrency: 32,
        ..NotifyConfig::default()
    };
    c.smtp.host = sink.host();
    c.smtp.port = Some(sink.port());
    c.smtp.security = SmtpSecurity::Plain;
    c
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .or_else(|| std::env::var("NOTIFY_BENCH_N").ok()?.parse().ok())
        .unwrap_or(2_000);
    let nats = Nats::start().await;
    let sink = SmtpSink::start().await;
    let bus = nats.bus().await;
    bus.stores()
        .config
        .put("rules", RULES.as_bytes().to_vec().into())
        .await
        .unwrap();
    let config = config(&sink);

    // Baseline: lettre alone, same server, same transport, same concurrency.
    let transport = sender::transport(&config).unwrap();
    let sample = guichet_notify::templates::Templates::compile(guichet_notify::templates::builtin())
        .unwrap()
        .render(
            "acknowledgment",
            "accueil",
            "",
            "fr",
            &guichet_notify::templates::sample(None),
        )
        .unwrap();
    let started = Instant::now();
    let mut in_flight: FuturesUnordered<_> = FuturesUnordered::new();
    for i in 0..n {
        if in_flight.len() >= config.concurrency {
            let sent: Result<_, lettre::transport::smtp::Error> = in_flight.next().await.unwrap();
            sent.unwrap();
        }
        let message = lettre::Message::builder()
            .from(config.from.parse().unwrap())
            .to(format!("raw{i}@usager.example").parse().unwrap())
            .subject(sample.subject.clone())
            .multipart(lettre::message::MultiPart::alternative_plain_html(
                sample.text.clone(),
                sample.html.clone(),
            ))
            .unwrap();
        in_flight.push(transport.send(message));
    }
    while let Some(r) = in_flight.next().await {
        r.unwrap();
    }
    let raw_rate = n as f64 / started.elapsed().as_secs_f64();

    // notify: N new requests waiting on ROUTED.
    let health = Health::default();
    let ctx = ServiceContext {
        bus: nats.bus().await,
        health,
        instance: "bench".into(),
        privacy: guichet_harness::pseudonymizer().clone(),
    };
    let stop = CancellationToken::new();
    let task = tokio::spawn(guichet_notify::run(ctx, config.clone(), Vec::new(), stop.clone()));
    // The consumer starts at new messages: wait for it, then publish.
    loop {
        let js = nats.jetstream().await;
        let s = js.get_stream("ROUTED").await.unwrap();
        if s.get_consumer::<async_nats::jetstream::consumer::pull::Config>("notify")
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started_publish = Instant::now();
    for i in 0..n {
        put(&bus, &routed(i)).await;
    }
    let publish_took = started_publish.elapsed();
    while sent_events(&bus).await.len() < n {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let notify_rate = n as f64 / started_publish.elapsed().as_secs_f64();

    // Steady load: half the measured rate for 10 s.
    let steady = (notify_rate / 2.0).max(1.0);
    let every = Duration::from_secs_f64(1.0 / steady);
    let count = (steady * 10.0) as usize;
    let mut tick = tokio::time::interval(every);
    for i in 0..count {
        tick.tick().await;
        put(&bus, &routed(n + i)).await;
    }
    while sent_events(&bus).await.len() < n + count {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut latencies = sent_events(&bus).await;
    let mut steady_lat: Vec<f64> = latencies.split_off(n);
    steady_lat.sort_by(f64::total_cmp);
    let p = |q: f64| steady_lat[((steady_lat.len() as f64 * q) as usize).min(steady_lat.len() - 1)];
    stop.cancel();
    let _ = task.await;

    println!("notify bench, {n} acknowledgments to smtp-sink (publishing them took {publish_took:?})");
    println!("  lettre raw rate          {raw_rate:>8.0} messages/s");
    println!(
        "  notify (ROUTED → 250)    {notify_rate:>8.0} acknowledgments/s   ratio {:.2}",
        notify_rate / raw_rate
    );
    println!(
        "  steady {steady:.0}/s for 10 s: receipt → 250 p50 {:.3} s, p99 {:.3} s, max {:.3} s",
        p(0.5),
        p(0.99),
        p(1.0)
    );
}
