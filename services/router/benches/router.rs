//! `scripts/bench router [N]`: contacts routed per second with 10 and with
//! 5,000 rules, beside a baseline consumer measured in the same run that
//! only pulls, acks and republishes the same messages unchanged.
//!
//! Each case gets a fresh nats-server preloaded with the same N contacts
//! (default 100,000; `ROUTER_BENCH_CONTACTS` or the first argument lowers
//! it) from 10,000 usagers; the clock runs from the first pull to the last
//! message stored on ROUTED. The baseline uses the same batch size and the
//! same number of messages in flight as the router.
//!
//! Scale-out (alone: `scripts/bench router N scale-out`): the same
//! contacts routed by one router process, then by
//! three sharing the INTAKE consumer (this bench started again as child
//! processes, `ROUTER_BENCH_CHILD`), on one nats-server; the clock runs
//! from the first child ready to the last message on ROUTED. On one
//! machine the three share its cores with nats-server, so the factor says
//! what sharing costs or gains here, not what three hosts would give.
#![allow(clippy::unwrap_used, clippy::expect_used)]

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

use async_nats::jetstream::{
    self,
    consumer::{AckPolicy, pull},
};
use bytes::Bytes;
use futures::{StreamExt, stream::FuturesUnordered};
use guichet_core::{
    ServiceContext,
    admin::Health,
    ids,
    proto::v1::{Contact, EmailDetails, contact::Details},
};
use guichet_harness::Nats;
use guichet_router::{RouterConfig, live};
use prost::Message;
use tokio_util::sync::CancellationToken;

const USAGERS: usize = 10_000;

fn contacts(n: usize) -> Vec<Contact> {
    let now = chrono::Utc::now();
    (0..n)
        .map(|i| {
            let mut c = guichet_rules::testing::contact_for(i % 5_000);
            c.id = ids::contact_id();
            c.idempotency_key = format!("bench-{}", c.id);
            c.reference = ids::reference(now);
            if let Some(claims) = c.claims.as_mut() {
                claims.email = format!("usager{}@example.fr", i % USAGERS);
            }
            if email_details() {
                // E-mails carry a Message-ID the router indexes (for
                // replies): one more write per contact.
                c.details = Some(Details::Email(EmailDetails {
                    message_id: format!("{}@bench.example.fr", c.id),
                    ..Default::default()
                }));
            }
            c
        })
        .collect()
}

async fn preload(nats: &Nats, contacts: &[Contact]) {
    let js = nats.jetstream().await;
    let mut in_flight = FuturesUnordered::new();
    for c in contacts {
        let ack = js
            .send_publish(
                "guichet.intake.web",
                jetstream::message::PublishMessage::build()
                    .message_id(c.idempotency_key.as_str())
                    .payload(Bytes::from(c.encode_to_vec())),
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

async fn wait_routed(nats: &Nats, n: usize) {
    let js = nats.jetstream().await;
    let mut stream = js.get_stream("ROUTED").await.unwrap();
    loop {
        let stored = stream.info().await.unwrap().state.messages;
        if stored as usize >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `ROUTER_BENCH_EMAIL=true`: contacts with e-mail details (a Message-ID)
/// instead of web-form details.
fn email_details() -> bool {
    std::env::var("ROUTER_BENCH_EMAIL").is_ok_and(|v| v == "true" || v == "1")
}

fn bench_config() -> RouterConfig {
    let mut config = RouterConfig::default();
    if let Some(c) = std::env::var("ROUTER_BENCH_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.concurrency = c;
    }
    // `ROUTER_BENCH_IDENTITY_CACHE=false`: the router without its cache.
    if let Some(on) = std::env::var("ROUTER_BENCH_IDENTITY_CACHE")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.identity_cache = on;
    }
    config
}

async fn router_case(contacts: &[Contact], rules: usize) -> f64 {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    live::push(
        &bus,
        "rules",
        &guichet_rules::testing::generate_rules(rules),
        "generated",
        "bench",
    )
    .await
    .expect("rules push");
    preload(&nats, contacts).await;
    let health = Health::default();
    health.set_bus(bus.clone());
    health.set_ready("router", false);
    let ctx = ServiceContext {
        bus,
        health: health.clone(),
        instance: "bench".into(),
        privacy: guichet_harness::pseudonymizer().clone(),
    };
    let stop = CancellationToken::new();
    let loading = Instant::now();
    let task = tokio::spawn(guichet_router::run(ctx, bench_config(), stop.clone()));
    // The clock starts when the router pulls: loading and compiling the
    // rules is a start-up cost, reported apart.
    while !health.check().0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let started = Instant::now();
    println!(
        "  ({rules} rules loaded and compiled in {:.2} s)",
        loading.elapsed().as_secs_f64()
    );
    wait_routed(&nats, contacts.len()).await;
    let elapsed = started.elapsed();
    stop.cancel();
    task.await.unwrap().expect("router ends cleanly");
    contacts.len() as f64 / elapsed.as_secs_f64()
}

/// Pull, republish unchanged with a Nats-Msg-Id, await the PubAck, ack:
/// the same batch size and messages in flight as the router.
///
/// With `floor`, each message also costs what the issue requires of any
/// router, whatever its code: the request record created in the requests
/// KV and the decision event on core NATS. No router can beat that floor.
async fn baseline_case(contacts: &[Contact], floor: bool) -> f64 {
    let nats = Nats::start().await;
    let bus = nats.bus().await; // the same topology
    preload(&nats, contacts).await;
    let config = bench_config();
    let js = nats.jetstream().await;
    let stream = js.get_stream("INTAKE").await.unwrap();
    let started = Instant::now();
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("baseline".into()),
            ack_policy: AckPolicy::Explicit,
            max_ack_pending: 20_000,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(config.batch_size)
        .messages()
        .await
        .unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let mut in_flight = FuturesUnordered::new();
    let n = contacts.len();
    while done.load(Ordering::Relaxed) < n {
        tokio::select! {
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            Some(message) = messages.next(), if in_flight.len() < config.concurrency => {
                let message: jetstream::Message = message.unwrap();
                let js = js.clone();
                let done = done.clone();
                let bus = bus.clone();
                in_flight.push(async move {
                    let seq = message.info().unwrap().stream_sequence;
                    if floor {
                        bus.stores()
                            .requests
                            .create(format!("bench.{seq}"), Bytes::from_static(b"{\"service\":\"etat-civil\"}"))
                            .await
                            .unwrap();
                    }
                    js.send_publish(
                        format!("guichet.routed.baseline.U{seq}"),
                        jetstream::message::PublishMessage::build()
                            .message_id(format!("baseline-{seq}"))
                            .payload(message.payload.clone()),
                    )
                    .await
                    .unwrap()
                    .await
                    .unwrap();
                    if floor {
                        bus.client()
                            .publish(format!("guichet.decided.{seq}"), Bytes::from_static(b"decision"))
                            .await
                            .unwrap();
                    }
                    message.ack().await.unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                });
            }
        }
    }
    wait_routed(&nats, n).await;
    n as f64 / started.elapsed().as_secs_f64()
}

/// The rules engine alone, on the same contacts: evaluations per second.
fn engine_only(contacts: &[Contact], rules: usize) -> f64 {
    let engine = guichet_router::engine::compile(&guichet_rules::testing::generate_rules(rules), "generated").unwrap();
    let started = Instant::now();
    let mut discarded = 0usize;
    for c in contacts {
        discarded += usize::from(engine.evaluate(c).discard);
    }
    std::hint::black_box(discarded);
    contacts.len() as f64 / started.elapsed().as_secs_f64()
}

/// A child process: one router on the nats-server at `url`, until killed.
/// Prints `ready` once it pulls.
fn child(url: String) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let nats = guichet_core::config::NatsConfig {
            url: Some(url.clone().into()),
            connect_timeout: Duration::from_secs(10),
            ..Default::default()
        };
        let stop = CancellationToken::new();
        let bus = guichet_core::Bus::start(&[url], &nats, &Default::default(), &stop)
            .await
            .expect("child connects");
        let health = Health::default();
        health.set_bus(bus.clone());
        health.set_ready("router", false);
        let ctx = ServiceContext {
            bus,
            health: health.clone(),
            instance: "bench-child".into(),
            privacy: guichet_harness::pseudonymizer().clone(),
        };
        let task = tokio::spawn(guichet_router::run(ctx, bench_config(), stop.clone()));
        while !health.check().0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        println!("ready");
        task.await.unwrap().expect("router runs");
    });
}

/// Contacts per second routed by `processes` router processes.
async fn processes_case(contacts: &[Contact], processes: usize) -> f64 {
    use std::io::BufRead;
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    live::push(
        &bus,
        "rules",
        &guichet_rules::testing::generate_rules(10),
        "generated",
        "bench",
    )
    .await
    .expect("rules push");
    preload(&nats, contacts).await;
    let mut children: Vec<std::process::Child> = (0..processes)
        .map(|_| {
            std::process::Command::new(std::env::current_exe().unwrap())
                .env("ROUTER_BENCH_CHILD", nats.url())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("child starts")
        })
        .collect();
    // The first "ready" starts the clock.
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel();
    for child in &mut children {
        let stdout = child.stdout.take().unwrap();
        let ready_tx = ready_tx.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                if line.is_ok_and(|l| l == "ready") {
                    let _ = ready_tx.send(Instant::now());
                }
            }
        });
    }
    let started = ready_rx.recv().await.expect("a child is ready");
    wait_routed(&nats, contacts.len()).await;
    let elapsed = started.elapsed();
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
    contacts.len() as f64 / elapsed.as_secs_f64()
}

fn main() {
    if let Ok(url) = std::env::var("ROUTER_BENCH_CHILD") {
        child(url);
        return;
    }
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .or_else(|| std::env::var("ROUTER_BENCH_CONTACTS").ok().and_then(|v| v.parse().ok()))
        .unwrap_or(100_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let contacts = contacts(n);
        println!(
            "router bench: {n} {} contacts from {USAGERS} usagers, batch {} / {} in flight, identity cache {}, fresh nats-server per case",
            if email_details() { "e-mail" } else { "web" },
            bench_config().batch_size,
            bench_config().concurrency,
            if bench_config().identity_cache { "on" } else { "off" }
        );
        // `scripts/bench router [N] scale-out`: the process cases only.
        if !std::env::args().any(|a| a == "scale-out") {
            other_cases(&contacts).await;
        }
        let one = processes_case(&contacts, 1).await;
        println!("router, 10 rules, 1 process:               {one:>9.0} contacts/s");
        let three = processes_case(&contacts, 3).await;
        println!(
            "router, 10 rules, 3 processes, one node:   {three:>9.0} contacts/s  scale-out factor {:.2}",
            three / one
        );
    });
}

/// The engine, the baselines and the in-process router cases.
async fn other_cases(contacts: &[Contact]) {
    for rules in [10, 5_000] {
        println!(
            "rules engine alone, {rules:>5} rules:         {:>9.0} evaluations/s",
            engine_only(contacts, rules)
        );
    }
    let baseline = baseline_case(contacts, false).await;
    println!("baseline (pull, republish unchanged, ack): {baseline:>9.0} msg/s");
    let floor = baseline_case(contacts, true).await;
    println!(
        "floor (baseline + request KV create + decision event): {floor:>9.0} msg/s  ratio to baseline {:.2}",
        floor / baseline
    );
    let ten = router_case(contacts, 10).await;
    println!(
        "router, 10 rules:                          {ten:>9.0} contacts/s  ratio to baseline {:.2}",
        ten / baseline
    );
    let many = router_case(contacts, 5_000).await;
    println!(
        "router, 5,000 rules:                       {many:>9.0} contacts/s  ratio to baseline {:.2}, to 10 rules {:.2}",
        many / baseline,
        many / ten
    );
}
