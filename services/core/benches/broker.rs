//! `scripts/bench broker`: what the embedded broker's fsync per write
//! (`sync_interval: always`) costs. Publishes of 1 KiB contacts to INTAKE,
//! each awaited until its PubAck, against the embedded broker as guichet
//! starts it (loopback, password, fsync per write) and, in the same run,
//! the same broker with the default lazy fsync: one publisher awaiting
//! each PubAck (an agent at a desk), then 64 publishes in flight (the
//! adapters under load).
//!
//! `BROKER_BENCH_MESSAGES` (default 4,000) sets the count of each case.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt, stream};
use guichet_core::{
    Bus,
    config::{NatsConfig, TopologyConfig},
    nats_server::{self, NatsServer, NatsServerOptions, free_port},
    secret::Secret,
};
use guichet_harness::nats_server_binary;
use tokio_util::sync::CancellationToken;

/// Publishes `n` messages, `in_flight` at a time; messages per second.
async fn publish_rate(bus: &Bus, case: &str, n: usize, in_flight: usize) -> f64 {
    let payload = Bytes::from(vec![b'x'; 1024]);
    let started = Instant::now();
    stream::iter(0..n)
        .map(|i| {
            let payload = payload.clone();
            async move {
                bus.publish(format!("guichet.intake.web.{case}"), &format!("{case}-{i}"), payload)
                    .await
                    .expect("stored")
            }
        })
        .buffer_unordered(in_flight)
        .collect::<Vec<_>>()
        .await;
    n as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("BROKER_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4_000);
    println!("embedded broker, {n} publishes of 1 KiB per case, each awaited until its PubAck");
    println!("{:<34} {:>14} {:>14}", "", "1 in flight", "64 in flight");
    let mut rates = Vec::new();
    for (label, fsync) in [
        ("sync_interval: always (guichet)", true),
        ("default lazy fsync (baseline)", false),
    ] {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = dir.path().join("nats");
        let password = nats_server::ensure_password(&store).expect("password");
        let mut options = NatsServerOptions::embedded(nats_server_binary(), free_port().unwrap(), &store, password);
        options.sync_always = fsync;
        let server = NatsServer::start(&options).await.expect("nats-server starts");
        let nats = NatsConfig {
            url: Some(server.url().into()),
            user: Some(nats_server::EMBEDDED_USER.into()),
            password: Some(Secret::File {
                file: nats_server::password_file(&store),
            }),
            publish_timeout: Duration::from_secs(30),
            ..NatsConfig::default()
        };
        let bus = Bus::start(
            &[server.url()],
            &nats,
            &TopologyConfig::default(),
            &CancellationToken::new(),
        )
        .await
        .expect("bus");
        let one = publish_rate(&bus, "one", n, 1).await;
        let many = publish_rate(&bus, "many", n, 64).await;
        println!("{label:<34} {one:>10.0} /s {many:>10.0} /s");
        rates.push((one, many));
        drop(bus);
        server.stop(Duration::from_secs(10)).await;
    }
    let ((one_sync, many_sync), (one_lazy, many_lazy)) = (rates[0], rates[1]);
    println!(
        "{:<34} {:>12.2}x {:>12.2}x",
        "cost of fsync (lazy / always)",
        one_lazy / one_sync,
        many_lazy / many_sync
    );
}
