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
//!
//! Then, hostile load (`scripts/bench web hostile` runs only this part,
//! `scripts/bench web throughput` only the first): signed 1 KiB
//! submissions at 100/s for `GUICHET_BENCH_SECONDS` (default 20) with no
//! other load (the baseline), then the same while 300 unauthenticated
//! connections trickle a body at 1 byte/s and 20 connections send chunked
//! 20 MiB bodies with a signature that does not match, over and over.
//! Prints the share of 202s, p50/p99 latency, and this process's resident
//! memory (VmRSS: adapter and load generator together; the nats-server is
//! another process) at its peak and a few seconds after each phase.

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
use tokio::io::AsyncWriteExt;
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

/// The bench form: signed with [`SECRET`], mapped, no rate limit.
fn bench_config() -> WebConfig {
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
    WebConfig {
        forms: BTreeMap::from([("bench".to_owned(), form)]),
        ..WebConfig::default()
    }
}

/// The adapter, served on a loopback port until the token is cancelled.
struct Served {
    url: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), guichet_web::WebError>>,
}

async fn serve(bus: &guichet_core::Bus, config: WebConfig) -> Served {
    let ctx = ServiceContext {
        bus: bus.clone(),
        health: Health::default(),
        instance: "bench".into(),
        privacy: guichet_harness::pseudonymizer().clone(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/forms/bench/submissions", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(guichet_web::run(ctx, config, listener, shutdown.clone()));
    Served { url, shutdown, task }
}

impl Served {
    async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; a bare word picks one part.
    let part = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let all = part.is_none();
    if all || part.as_deref() == Some("throughput") {
        throughput().await;
    }
    if all || part.as_deref() == Some("hostile") {
        hostile::run().await;
    }
}

async fn throughput() {
    let n: usize = std::env::var("GUICHET_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let served = serve(&bus, bench_config()).await;
    let url = served.url.clone();
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
    served.stop().await;
}

/// Signed submissions at a steady rate beside hostile clients.
mod hostile {
    use super::*;

    /// Signed submissions per second.
    const RATE: u64 = 100;
    /// Slow unauthenticated connections, each trickling 1 byte a second.
    const SLOW: usize = 300;
    /// Connections sending chunked 20 MiB bodies whose signature does not match.
    const CHUNKED: usize = 20;
    const CHUNKED_BYTES: usize = 20 * 1024 * 1024;
    const CHUNK: usize = 64 * 1024;

    /// This process's resident memory, in KiB (`VmRSS`).
    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Samples VmRSS every 50 ms and keeps the peak until stopped.
    struct Peak {
        stop: CancellationToken,
        task: tokio::task::JoinHandle<u64>,
    }

    impl Peak {
        fn start() -> Self {
            let stop = CancellationToken::new();
            let token = stop.clone();
            let task = tokio::spawn(async move {
                let mut peak = rss_kib();
                // Bounded: a phase lasts minutes at most.
                for _ in 0..20 * 60 * 10 {
                    tokio::select! {
                        () = token.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_millis(50)) => {}
                    }
                    peak = peak.max(rss_kib());
                }
                peak
            });
            Self { stop, task }
        }

        async fn finish(self) -> u64 {
            self.stop.cancel();
            self.task.await.unwrap()
        }
    }

    /// One phase's signed submissions.
    struct Paced {
        sent: usize,
        accepted: usize,
        statuses: BTreeMap<String, usize>,
        latencies: Vec<Duration>,
        peak_kib: u64,
        after_kib: u64,
    }

    /// `seconds * RATE` signed submissions, one every 1/RATE s whatever
    /// the answers (an open loop: a slow answer does not slow the load).
    async fn paced(
        client: &reqwest::Client,
        url: &str,
        seconds: u64,
        offset: usize,
    ) -> Vec<(Result<u16, String>, Duration)> {
        let mut ticks = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut sent = Vec::new();
        for i in 0..(seconds * RATE) as usize {
            ticks.tick().await;
            let (client, url) = (client.clone(), url.to_owned());
            sent.push(tokio::spawn(async move {
                let body = payload(offset + i);
                let t = chrono::Utc::now().timestamp();
                let started = Instant::now();
                let answer = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header(
                        "x-guichet-signature",
                        signature::header_value(SECRET.as_bytes(), t, &body),
                    )
                    .timeout(Duration::from_secs(10))
                    .body(body)
                    .send()
                    .await;
                let status = match answer {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let _ = r.bytes().await;
                        Ok(status)
                    }
                    Err(e) => Err(if e.is_timeout() {
                        "timeout".to_owned()
                    } else {
                        "error".to_owned()
                    }),
                };
                (status, started.elapsed())
            }));
        }
        let mut out = Vec::with_capacity(sent.len());
        for task in sent {
            out.push(task.await.unwrap());
        }
        out
    }

    fn summarize(answers: Vec<(Result<u16, String>, Duration)>, peak_kib: u64, after_kib: u64) -> Paced {
        let mut statuses = BTreeMap::new();
        let mut latencies = Vec::with_capacity(answers.len());
        for (status, latency) in &answers {
            let label = match status {
                Ok(code) => code.to_string(),
                Err(e) => e.clone(),
            };
            *statuses.entry(label).or_insert(0) += 1;
            latencies.push(*latency);
        }
        latencies.sort();
        Paced {
            sent: answers.len(),
            accepted: statuses.get("202").copied().unwrap_or(0),
            statuses,
            latencies,
            peak_kib,
            after_kib,
        }
    }

    impl Paced {
        fn share(&self) -> f64 {
            100.0 * self.accepted as f64 / self.sent.max(1) as f64
        }

        fn percentile(&self, p: f64) -> Duration {
            let at = ((self.latencies.len() as f64 * p).ceil() as usize).clamp(1, self.latencies.len().max(1)) - 1;
            self.latencies.get(at).copied().unwrap_or_default()
        }

        fn row(&self, name: &str) {
            println!(
                "{name:<30} {:>5} sent {:>7.2} % 202   p50 {:>7.2} ms   p99 {:>8.2} ms   RSS peak {:>6.1} MB, after {:>6.1} MB   {:?}",
                self.sent,
                self.share(),
                self.percentile(0.50).as_secs_f64() * 1e3,
                self.percentile(0.99).as_secs_f64() * 1e3,
                self.peak_kib as f64 / 1024.0,
                self.after_kib as f64 / 1024.0,
                self.statuses,
            );
        }
    }

    /// A client that opens a connection, sends headers announcing a
    /// 10,000-byte body with a well-formed signature that cannot match,
    /// then one byte a second; reconnects when the adapter closes it.
    async fn slow_client(addr: String, stop: CancellationToken, opened: Arc<AtomicUsize>) {
        // Bounded: each connection lasts at least until the idle or total
        // timeout, so a few hundred at most in any run.
        for _ in 0..1000 {
            if stop.is_cancelled() {
                return;
            }
            let Ok(mut tcp) = tokio::net::TcpStream::connect(&addr).await else {
                return;
            };
            opened.fetch_add(1, Ordering::Relaxed);
            let head = format!(
                "POST /v1/forms/bench/submissions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
                 x-guichet-signature: t={},v1={}\r\ncontent-length: 10000\r\n\r\n",
                chrono::Utc::now().timestamp(),
                "00".repeat(32)
            );
            if tcp.write_all(head.as_bytes()).await.is_err() {
                continue;
            }
            for _ in 0..10_000 {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                if tcp.write_all(b" ").await.is_err() {
                    break;
                }
            }
        }
    }

    /// A client that sends chunked 20 MiB bodies (no Content-Length) with
    /// a signature that does not match, one after the other.
    async fn chunked_client(
        url: String,
        stop: CancellationToken,
        outcomes: Arc<std::sync::Mutex<BTreeMap<String, usize>>>,
    ) {
        let client = reqwest::Client::new();
        let chunk = Bytes::from(vec![b' '; CHUNK]);
        // Bounded: each body takes a fraction of a second at least.
        for _ in 0..10_000 {
            if stop.is_cancelled() {
                return;
            }
            let chunk = chunk.clone();
            let body =
                futures::stream::iter((0..CHUNKED_BYTES / CHUNK).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
            let answer = client
                .post(&url)
                .header("content-type", "application/json")
                .header(
                    "x-guichet-signature",
                    format!("t={},v1={}", chrono::Utc::now().timestamp(), "00".repeat(32)),
                )
                .timeout(Duration::from_secs(60))
                .body(reqwest::Body::wrap_stream(body))
                .send()
                .await;
            let label = match answer {
                Ok(r) => r.status().as_u16().to_string(),
                Err(_) => "error".to_owned(),
            };
            *outcomes.lock().unwrap().entry(label).or_insert(0) += 1;
        }
    }

    /// The settle time before "after" is read: mimalloc returns freed
    /// memory after its purge delay (10 ms by default).
    const SETTLE: Duration = Duration::from_secs(5);

    pub async fn run() {
        let seconds: u64 = std::env::var("GUICHET_BENCH_SECONDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20)
            .clamp(1, 600);
        let nats = Nats::start().await;
        let bus = nats.bus().await;
        let served = serve(&bus, bench_config()).await;
        let url = served.url.clone();
        let addr = url
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let client = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
        println!(
            "\nweb under hostile load: signed {PAYLOAD} B submissions at {RATE}/s for {seconds} s; hostile: {SLOW} \
             connections trickling 1 B/s, {CHUNKED} sending chunked {} MiB bodies (bad signature); default [web] limits",
            CHUNKED_BYTES >> 20
        );
        // Warm-up: the connection pool, the stream's first blocks.
        let _ = paced(&client, &url, 2, 60_000_000).await;
        tokio::time::sleep(SETTLE).await;
        let start_kib = rss_kib();

        let peak = Peak::start();
        let answers = paced(&client, &url, seconds, 61_000_000).await;
        let base_peak = peak.finish().await;
        tokio::time::sleep(SETTLE).await;
        let baseline = summarize(answers, base_peak, rss_kib());

        let stop = CancellationToken::new();
        let opened = Arc::new(AtomicUsize::new(0));
        let outcomes = Arc::new(std::sync::Mutex::new(BTreeMap::new()));
        let peak = Peak::start();
        let mut hostile = Vec::new();
        for _ in 0..SLOW {
            hostile.push(tokio::spawn(slow_client(addr.clone(), stop.clone(), opened.clone())));
        }
        for _ in 0..CHUNKED {
            hostile.push(tokio::spawn(chunked_client(
                url.clone(),
                stop.clone(),
                outcomes.clone(),
            )));
        }
        // The hostile clients are all connected and sending within a
        // second; the measured submissions start then.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let answers = paced(&client, &url, seconds, 62_000_000).await;
        stop.cancel();
        for task in hostile {
            let _ = task.await;
        }
        let hostile_peak = peak.finish().await;
        tokio::time::sleep(SETTLE).await;
        let under = summarize(answers, hostile_peak, rss_kib());
        // Later still: tokio's idle blocking threads (the spool's file
        // writes) exit after 10 s, and their allocator caches with them.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let later_kib = rss_kib();

        println!("RSS at start (after warm-up): {:.1} MB", start_kib as f64 / 1024.0);
        baseline.row("baseline: no hostile load");
        under.row("under hostile load");
        println!(
            "RSS {:.1} MB {} s after the hostile load stopped",
            later_kib as f64 / 1024.0,
            (SETTLE + Duration::from_secs(10)).as_secs()
        );
        let chunked = outcomes.lock().unwrap().clone();
        let bodies: usize = chunked.values().sum();
        println!(
            "hostile: {} slow connections opened, {bodies} chunked bodies ({} MiB) answered {chunked:?}",
            opened.load(Ordering::Relaxed),
            bodies * (CHUNKED_BYTES >> 20)
        );
        println!(
            "targets: >= 99 % 202 under hostile load: {}; p99 < 100 ms: {} (p99 ratio hostile / baseline {:.2})",
            if under.share() >= 99.0 { "met" } else { "NOT met" },
            if under.percentile(0.99) < Duration::from_millis(100) {
                "met"
            } else {
                "NOT met"
            },
            under.percentile(0.99).as_secs_f64() / baseline.percentile(0.99).as_secs_f64().max(1e-9)
        );
        served.stop().await;
    }
}
