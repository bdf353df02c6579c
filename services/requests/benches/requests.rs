//! `scripts/bench requests`: UpdateRequest (TAKE, each on its own request)
//! over loopback gRPC at concurrency 64, beside the floor of any gRPC
//! service that publishes, measured in the same run on the same
//! nats-server: a health Check then a raw JetStream publish (with
//! `Nats-Msg-Id`, awaiting the PubAck) of an event-sized payload. Then one
//! due-date sweep over `GUICHET_BENCH_SWEEP` (default 100,000) open
//! requests: time and memory.
//!
//! `GUICHET_BENCH_REQUESTS` (default 5000) sets the updates per side.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use guichet_core::{
    Bus, ServiceContext,
    admin::Health,
    proto::v1::{Transition, UpdateRequestRequest, requests_client::RequestsClient},
    request::{RequestRecord, request_key},
    secret::Secret,
};
use guichet_harness::{
    Nats,
    bench::{measure, memory_kib, print},
};
use guichet_requests::{ClientConfig, RequestsConfig, sweep};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

const CONCURRENCY: usize = 64;
const CONNECTIONS: usize = 4;
const TOKEN: &str = "bench-token-0123456789abcdef";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `2026-<prefix>XXX-XXXX`: a valid reference per index.
fn reference(prefix: &str, i: usize) -> String {
    format!("2026-{prefix}{:03X}-{:04X}", i >> 16, i & 0xFFFF)
}

/// `n` open requests `2026-<prefix>-XXXX`, written as the router writes them.
async fn seed(bus: &Bus, prefix: &'static str, n: usize, due_at: String) {
    let bus = bus.clone();
    measure(n, CONCURRENCY, move |i| {
        let bus = bus.clone();
        let due_at = due_at.clone();
        async move {
            let record = RequestRecord {
                reference: reference(prefix, i),
                service: "voirie".into(),
                usager_id: format!("U{i}"),
                typology: "nid-de-poule".into(),
                due_at,
                status: "open".into(),
                opened_by: format!("C{i}"),
                opened_at: "2026-03-02T09:00:00Z".into(),
                contacts: vec![format!("C{i}")],
                channel: "web".into(),
                version: 1,
                ..Default::default()
            };
            bus.stores()
                .requests
                .put(
                    request_key(&record.reference),
                    serde_json::to_vec(&record).expect("json").into(),
                )
                .await
                .expect("seed a request");
        }
    })
    .await;
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(bench());
}

async fn bench() {
    let total = env("GUICHET_BENCH_REQUESTS", 5000).min(0xFFFF);
    let sweep_size = env("GUICHET_BENCH_SWEEP", 100_000);
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("loopback port");
    let addr = listener.local_addr().expect("local address");
    let ctx = ServiceContext {
        bus: bus.clone(),
        health: Health::default(),
        instance: "bench".into(),
        privacy: guichet_harness::pseudonymizer().clone(),
    };
    let config = RequestsConfig {
        clients: [(
            "bench".to_owned(),
            ClientConfig {
                token: Secret::Inline(TOKEN.into()),
                services: vec!["voirie".into()],
            },
        )]
        .into(),
        // The bench sweeps by itself, once, below.
        sweep_interval: Duration::from_secs(3600),
        ..RequestsConfig::default()
    };
    let far = "2099-01-01T00:00:00Z".to_owned();
    seed(&bus, "W", total / 10 + 1, far.clone()).await;
    seed(&bus, "B", total, far.clone()).await;
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(guichet_requests::run(ctx, config, listener, shutdown.clone()));
    let mut channels: Vec<Channel> = Vec::new();
    for _ in 0..CONNECTIONS {
        let deadline = Instant::now() + Duration::from_secs(60);
        let channel = loop {
            match Endpoint::from_shared(format!("http://{addr}"))
                .expect("endpoint")
                .tcp_nodelay(true)
                .connect()
                .await
            {
                Ok(c) => break c,
                Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => panic!("connect to requests: {e}"),
            }
        };
        channels.push(channel);
    }
    let take = |prefix: &'static str| {
        let channels = channels.clone();
        move |i: usize| {
            let mut client = RequestsClient::new(channels[i % CONNECTIONS].clone());
            async move {
                let mut r = tonic::Request::new(UpdateRequestRequest {
                    reference: reference(prefix, i),
                    transition: Transition::Take.into(),
                    agent_id: "agent-42".into(),
                    note: "pris en charge".into(),
                    client_request_id: format!("take-{i}"),
                    ..Default::default()
                });
                r.metadata_mut()
                    .insert("authorization", format!("Bearer {TOKEN}").parse().expect("header"));
                client.update_request(r).await.expect("UpdateRequest");
            }
        }
    };
    let floor = |prefix: &'static str| {
        let channels = channels.clone();
        let bus = bus.clone();
        move |i: usize| {
            let mut client = tonic_health::pb::health_client::HealthClient::new(channels[i % CONNECTIONS].clone());
            let js = bus.jetstream().clone();
            async move {
                client
                    .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
                    .await
                    .expect("health check");
                let publish = async_nats::jetstream::message::PublishMessage::build()
                    .message_id(format!("{prefix}-{i}"))
                    .payload(bytes::Bytes::from(vec![b'x'; 300]));
                js.send_publish(format!("guichet.events.bench.{prefix}"), publish)
                    .await
                    .expect("publish")
                    .await
                    .expect("PubAck");
            }
        }
    };
    measure(total / 10 + 1, CONCURRENCY, take("W")).await;
    measure(total / 10 + 1, CONCURRENCY, floor("warm")).await;

    println!("requests: {total} updates per side, concurrency {CONCURRENCY}, loopback, one nats-server (file storage)");
    let floor_run = measure(total, CONCURRENCY, floor("floor")).await;
    print("floor: health Check + raw publish", &floor_run);
    let update_run = measure(total, CONCURRENCY, take("B")).await;
    print("UpdateRequest TAKE (gRPC)", &update_run);
    println!("ratio UpdateRequest / floor: {:.2}", update_run.rate / floor_run.rate);
    shutdown.cancel();
    let _ = server.await;

    // The sweep: `sweep_size` open requests in all, none due soon.
    let have = total + total / 10 + 1;
    if sweep_size > have {
        seed(&bus, "S", sweep_size - have, far).await;
    }
    let (rss_before, _) = memory_kib();
    let started = Instant::now();
    let swept = sweep::sweep_once(
        &bus,
        Duration::from_secs(2 * 24 * 3600),
        guichet_requests::clock::Rules::Builtin,
        chrono::Utc::now(),
    )
    .await
    .expect("sweep");
    let elapsed = started.elapsed();
    let (rss_after, peak) = memory_kib();
    println!(
        "sweep over {} requests: {:.2} s, resident {} → {} MiB (peak {} MiB), {} alerts",
        swept.requests,
        elapsed.as_secs_f64(),
        rss_before / 1024,
        rss_after / 1024,
        peak / 1024,
        swept.published
    );
}
