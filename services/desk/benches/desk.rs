//! `scripts/bench desk`: RecordContact over loopback gRPC at concurrency 64,
//! against, in the same run and on the same nats-server, raw JetStream
//! publishes (with `Nats-Msg-Id`, awaiting each PubAck) of the same contact
//! payload at the same concurrency. Prints both rates, their ratio, and
//! p50/p99 latencies.
//!
//! It also measures where the cost goes and the floor: the core's
//! `publish_contact` alone, the gRPC round trip alone (a request refused by
//! validation), the cheapest call tonic serves (the health Check), and the
//! adapter floor: a health Check then the raw publish, per operation, which
//! no gRPC adapter that publishes can beat on the same machine.
//!
//! `GUICHET_BENCH_REQUESTS` (default 10000) sets the requests per side,
//! `GUICHET_BENCH_CONNECTIONS` (default 4) the gRPC client connections.

// The allocator of the `guichet` binary, so the bench measures what runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use guichet_core::{
    ServiceContext,
    admin::Health,
    bus::subjects,
    proto::v1::{
        Channel as ContactChannel, Contact, CounterDetails, IdentityClaims, RecordContactRequest, Source, contact,
        desk_client::DeskClient, record_contact_request,
    },
    secret::Secret,
};
use guichet_desk::{DeskConfig, SiteConfig};
use guichet_harness::Nats;
use prost::Message;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

const CONCURRENCY: usize = 64;
const TOKEN: &str = "bench-token-0123456789abcdef";

fn request(id: usize) -> RecordContactRequest {
    RecordContactRequest {
        client_request_id: format!("bench-{id}"),
        channel: ContactChannel::Counter as i32,
        site: "bench".into(),
        agent_id: "agent-42".into(),
        usager: Some(IdentityClaims {
            name: "Mme Jeanne Martin".into(),
            email: "jeanne.martin@example.fr".into(),
            phone: "06 12 34 56 78".into(),
            ..Default::default()
        }),
        subject: "Demande de carte d'identité".into(),
        notes: "Vient pour un renouvellement ; il manque le justificatif de domicile. ".repeat(6),
        language: "fr".into(),
        details: Some(record_contact_request::Details::Counter(CounterDetails {
            wait_seconds: 300,
            service_seconds: 420,
        })),
        ..Default::default()
    }
}

/// The contact desk publishes for `request(id)`, for the raw baseline.
fn contact_payload(id: usize) -> bytes::Bytes {
    let r = request(id);
    let now = chrono::Utc::now();
    Contact {
        id: guichet_core::ids::contact_id(),
        received_at: Some(guichet_core::proto::timestamp(now)),
        channel: r.channel,
        source: Some(Source {
            name: r.site.clone(),
            agent_id: r.agent_id.clone(),
            adapter_instance: "bench".into(),
        }),
        claims: r.usager,
        subject: r.subject,
        body: r.notes,
        language: r.language,
        reference: guichet_core::ids::reference(now),
        idempotency_key: format!("desk:bench:{}", r.client_request_id),
        details: Some(contact::Details::Counter(CounterDetails {
            wait_seconds: 300,
            service_seconds: 420,
        })),
        ..Default::default()
    }
    .encode_to_vec()
    .into()
}

/// The baseline's unit: one JetStream publish with `Nats-Msg-Id`, awaiting
/// its PubAck.
async fn raw_publish(js: &async_nats::jetstream::Context, msg_id: String, payload: bytes::Bytes) {
    let publish = async_nats::jetstream::message::PublishMessage::build()
        .message_id(msg_id)
        .payload(payload);
    js.send_publish(subjects::intake(ContactChannel::Counter), publish)
        .await
        .expect("publish")
        .await
        .expect("PubAck");
}

struct Run {
    rate: f64,
    p50: Duration,
    p99: Duration,
}

/// Runs `total` operations at `CONCURRENCY`, `op(i)` each.
async fn measure<F, Fut>(total: usize, op: F) -> Run
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (op, next) = (op.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return latencies;
                }
                let t = Instant::now();
                op(i).await;
                latencies.push(t.elapsed());
            }
        }));
    }
    let mut all = Vec::with_capacity(total);
    for t in tasks {
        all.extend(t.await.expect("bench task"));
    }
    let elapsed = started.elapsed();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Run {
        rate: total as f64 / elapsed.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
    }
}

fn print(name: &str, r: &Run) {
    println!(
        "{name:<34} {:>9.0} req/s   p50 {:>6.2} ms   p99 {:>6.2} ms",
        r.rate,
        r.p50.as_secs_f64() * 1e3,
        r.p99.as_secs_f64() * 1e3
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(bench());
}

async fn bench() {
    let total: usize = std::env::var("GUICHET_BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    // Client connections the 64 callers share (counter software runs many).
    let connections: usize = std::env::var("GUICHET_BENCH_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
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
    let config = DeskConfig {
        sites: [("bench".to_owned(), SiteConfig::new(Secret::Inline(TOKEN.into())))].into(),
        ..DeskConfig::default()
    };
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(guichet_desk::run(ctx, config, listener, shutdown.clone()));

    let mut channels: Vec<Channel> = Vec::new();
    for _ in 0..connections {
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .tcp_nodelay(true)
            .connect()
            .await
            .expect("connect to desk");
        channels.push(channel);
    }
    let record = {
        let channels = channels.clone();
        move |prefix: &'static str| {
            let channels = channels.clone();
            move |i: usize| {
                let mut client = DeskClient::new(channels[i % connections].clone());
                async move {
                    let mut r = tonic::Request::new(RecordContactRequest {
                        client_request_id: format!("{prefix}-{i}"),
                        ..request(i)
                    });
                    r.metadata_mut()
                        .insert("authorization", format!("Bearer {TOKEN}").parse().expect("header"));
                    client.record_contact(r).await.expect("RecordContact");
                }
            }
        }
    };
    // The gRPC round trip alone: the same request, refused by validation
    // (an empty subject) before anything reaches NATS.
    let grpc_only = {
        let channels = channels.clone();
        move |i: usize| {
            let mut client = DeskClient::new(channels[i % connections].clone());
            async move {
                let mut r = tonic::Request::new(RecordContactRequest {
                    subject: String::new(),
                    ..request(i)
                });
                r.metadata_mut()
                    .insert("authorization", format!("Bearer {TOKEN}").parse().expect("header"));
                let status = client.record_contact(r).await.expect_err("refused");
                assert_eq!(status.code(), tonic::Code::InvalidArgument);
            }
        }
    };
    // The floor of any gRPC service on this machine: the standard health
    // Check (no auth, no validation, no NATS) over the same connections.
    let health_only = {
        let channels = channels.clone();
        move |i: usize| {
            let mut client = tonic_health::pb::health_client::HealthClient::new(channels[i % connections].clone());
            async move {
                client
                    .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
                    .await
                    .expect("health check");
            }
        }
    };
    // The floor of any gRPC adapter that publishes: a health Check, then
    // the raw publish, per operation.
    let grpc_then_raw = |prefix: &'static str| {
        let channels = channels.clone();
        let bus = bus.clone();
        move |i: usize| {
            let mut client = tonic_health::pb::health_client::HealthClient::new(channels[i % connections].clone());
            let js = bus.jetstream().clone();
            let payload = contact_payload(i);
            async move {
                client
                    .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
                    .await
                    .expect("health check");
                raw_publish(&js, format!("{prefix}-{i}"), payload).await;
            }
        }
    };
    let raw = |prefix: &'static str| {
        let bus = bus.clone();
        move |i: usize| {
            let js = bus.jetstream().clone();
            let payload = contact_payload(i);
            async move { raw_publish(&js, format!("{prefix}-{i}"), payload).await }
        }
    };

    // The exactly-once path alone (one publish on the contact's own
    // subject), without gRPC: says where RecordContact's cost goes.
    let exactly_once = |prefix: &'static str| {
        let bus = bus.clone();
        move |i: usize| {
            let bus = bus.clone();
            async move {
                let mut contact = Contact::decode(contact_payload(i)).expect("contact");
                contact.idempotency_key = format!("{prefix}-{i}");
                bus.publish_contact(&contact).await.expect("publish_contact");
            }
        }
    };

    let warmup = (total / 10).max(200);
    measure(warmup, raw("warm-raw")).await;
    measure(warmup, exactly_once("warm-once")).await;
    measure(warmup, record("warm-desk")).await;
    measure(warmup, grpc_then_raw("warm-floor")).await;

    println!("desk: {total} requests per side, concurrency {CONCURRENCY}, loopback, one nats-server (file storage)");
    let baseline = measure(total, raw("raw")).await;
    print("raw JetStream publish + PubAck", &baseline);
    let once = measure(total, exactly_once("once")).await;
    print("Bus::publish_contact (no gRPC)", &once);
    let desk = measure(total, record("desk")).await;
    print("RecordContact (gRPC, exactly-once)", &desk);
    let grpc = measure(total, grpc_only).await;
    print("gRPC round trip only (no NATS)", &grpc);
    let floor = measure(total, health_only).await;
    print("gRPC floor: health Check", &floor);
    let adapter_floor = measure(total, grpc_then_raw("floor")).await;
    print("adapter floor: health Check + raw", &adapter_floor);
    println!("ratio desk / raw: {:.2}", desk.rate / baseline.rate);
    println!("ratio publish_contact / raw: {:.2}", once.rate / baseline.rate);
    println!(
        "ratio gRPC floor (health Check) / raw: {:.2}",
        floor.rate / baseline.rate
    );
    println!(
        "ratio adapter floor / raw: {:.2}: no tonic service that publishes does better on this machine",
        adapter_floor.rate / baseline.rate
    );
    println!("ratio desk / adapter floor: {:.2}", desk.rate / adapter_floor.rate);

    shutdown.cancel();
    let _ = server.await;
}
