//! `scripts/bench web`: the web adapter under load over loopback, beside
//! its baseline measured in the same run.
//!
//! - web: 64 concurrent clients POST signed 1 KiB JSON submissions to the
//!   adapter (HMAC check, parse, mapping, exactly-once publish, PubAck);
//! - baseline: the same number of raw async-nats JetStream publishes of
//!   the same 1 KiB payloads, 64 in flight, awaiting each PubAck.
//!
//! For the breakdown it also times the core's `publish_contact` alone
//! (one publish on the contact's own subject, refused if already taken).
//!
//! Both against one nats-server started here (file storage, default
//! fsync). Prints both rates, their ratio and p50/p99 latencies.
//! `GUICHET_BENCH_N` sets the number of operations per side (default 20000).

// A benchmark's main may panic on anything unexpected: that is a failed run.
#![allow(clippy::unwrap_used)]

// The allocator of the `guichet` binary, so the bench measures what runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use guichet_core::{ServiceContext, admin::Health, secret::Secret};
use guichet_harness::Nats;
use guichet_web::{FormConfig, Locator, RateLimit, WebConfig, signature};
use tokio_util::sync::CancellationToken;

const CONCURRENCY: usize = 64;
const PAYLOAD: usize = 1024;
const SECRET: &str = "bench-secret-0123456789abcdef";

/// Submission `i`: a 1 KiB JSON object, distinct for each `i`.
fn payload(i: usize) -> Bytes {
    let head = format!(
        r#"{{"id":"{i:010}","usager":{{"email":"usager{i}@example.fr","nom":"Camille Martin"}},"objet":"Signalement voirie","description":""#
    );
    let tail = r#""}"#;
    let filler = "Nid de poule devant le numero 12. ".repeat(40);
    let room = PAYLOAD - head.len() - tail.len();
    Bytes::from(format!("{head}{}{tail}", &filler[..room]))
}

struct Run {
    count: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let at = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
        sorted[at]
    }
}

/// Runs `op(i)` for i in `offset..offset + n`, `CONCURRENCY` at a time.
async fn drive<F, Fut>(n: usize, offset: usize, op: F) -> Run
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let op = Arc::new(op);
    let started = Instant::now();
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (next, op) = (next.clone(), op.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return latencies;
                    }
                    let t = Instant::now();
                    op(offset + i).await;
                    latencies.push(t.elapsed());
                }
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(n);
    for w in workers {
        latencies.extend(w.await.unwrap());
    }
    Run {
        count: n,
        elapsed: started.elapsed(),
        latencies,
    }
}

async fn web_run(client: reqwest::Client, url: String, n: usize, offset: usize) -> Run {
    drive(n, offset, move |i| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let body = payload(i);
            let t = chrono::Utc::now().timestamp();
            let response = client
                .post(&url)
                .header("content-type", "application/json")
                .header(
                    "x-guichet-signature",
                    signature::header_value(SECRET.as_bytes(), t, &body),
                )
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 202, "{}", response.text().await.unwrap_or_default());
        }
    })
    .await
}

async fn raw_run(js: async_nats::jetstream::Context, n: usize, offset: usize) -> Run {
    drive(n, offset, move |i| {
        let js = js.clone();
        async move {
            let publish = async_nats::jetstream::message::PublishMessage::build()
                .message_id(format!("raw:{i}"))
                .payload(payload(i));
            js.send_publish("guichet.intake.web", publish)
                .await
                .unwrap()
                .await
                .unwrap();
        }
    })
    .await
}

/// The core's `publish_contact` alone (one publish on the contact's own
/// subject), without HTTP: where the adapter's time goes.
async fn contact_run(bus: guichet_core::Bus, n: usize, offset: usize) -> Run {
    use guichet_core::proto::v1::{Channel, Contact};
    drive(n, offset, move |i| {
        let bus = bus.clone();
        async move {
            let contact = Contact {
                id: guichet_core::ids::contact_id(),
                channel: Channel::Web.into(),
                body: String::from_utf8(payload(i).to_vec()).unwrap(),
                idempotency_key: format!("bench:{i}"),
                ..Contact::default()
            };
            bus.publish_contact(&contact).await.unwrap();
        }
    })
    .await
}

fn report(name: &str, run: &Run) {
    println!(
        "{name:<34} {:>9.0} msg/s   p50 {:>7.2} ms   p99 {:>7.2} ms   ({} in {:.2} s)",
        run.rate(),
        run.percentile(0.50).as_secs_f64() * 1e3,
        run.percentile(0.99).as_secs_f64() * 1e3,
        run.count,
        run.elapsed.as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("GUICHET_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let form = FormConfig {
        secret: Some(Secret::Inline(SECRET.into())),
        email: Some(Locator::One("/usager/email".into())),
        name: Some(Locator::One("/usager/nom".into())),
        subject: Some(Locator::One("/objet".into())),
        description: Some(Locator::One("/description".into())),
        submission_id: Some(Locator::One("/id".into())),
        required: vec!["email".into(), "description".into()],
        rate_limit: Some(RateLimit {
            per_second: 1e9,
            burst: u32::MAX,
        }),
        ..FormConfig::default()
    };
    let config = WebConfig {
        forms: BTreeMap::from([("bench".to_owned(), form)]),
        ..WebConfig::default()
    };
    let ctx = ServiceContext {
        bus: bus.clone(),
        health: Health::default(),
        instance: "bench".into(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/forms/bench/submissions", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(guichet_web::run(ctx, config, listener, shutdown.clone()));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()
        .unwrap();
    let js = async_nats::jetstream::new(nats.client().await);

    println!(
        "web intake benchmark: {n} submissions of {PAYLOAD} B JSON, concurrency {CONCURRENCY}, loopback, one nats-server"
    );
    // Warm-up: connections, JIT-free but caches and the stream's first blocks.
    let warm = (n / 20).max(200);
    web_run(client.clone(), url.clone(), warm, 10_000_000).await;
    raw_run(js.clone(), warm, 20_000_000).await;

    let raw = raw_run(js.clone(), n, 30_000_000).await;
    let web = web_run(client.clone(), url.clone(), n, 40_000_000).await;
    let core = contact_run(bus.clone(), n, 50_000_000).await;
    report("baseline: raw JetStream publish", &raw);
    report("web: POST /v1/forms/{form}/...", &web);
    report("(core publish_contact, no HTTP)", &core);
    println!(
        "ratio web / baseline: {:.2} (target >= 0.50); web p99 {:.2} ms (target < 20 ms)",
        web.rate() / raw.rate(),
        web.percentile(0.99).as_secs_f64() * 1e3
    );

    shutdown.cancel();
    let _ = server.await;
}
