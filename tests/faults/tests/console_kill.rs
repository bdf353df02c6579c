//! The gateway killed (SIGKILL) while the console projects: the read
//! model ends with every routed request exactly once (no row lost, none
//! counted twice across the kill), and a projection from scratch into a
//! fresh database gives identical tables.
#![allow(clippy::unwrap_used)]

use std::{path::Path, time::Duration};

use guichet_console::{Projector, Store, store::TABLES};
use guichet_core::{
    Bus,
    proto::v1::{Channel, Contact, Source},
};
use guichet_faults::{
    binary,
    gateway::{Gateway, GatewayConfig, SingleBroker, burst_contact},
};
use sqlx::Row;

const BURST: usize = 600;

const RULES: &str = r#"
manual_service = "accueil"

[[services]]
name = "accueil"
deadline = "5 business days"
"#;

fn contact(i: usize) -> Contact {
    let source = Source {
        name: ["centre", "annexe-nord"][i % 2].into(),
        agent_id: "agent-1".into(),
        ..Default::default()
    };
    burst_contact(i, "console", Channel::Counter, source, "Demande au guichet")
}

fn sqlite(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

async fn count(store: &Store, sql: &str) -> i64 {
    sqlx::query(sql)
        .fetch_one(store.pool())
        .await
        .and_then(|row| row.try_get::<i64, _>(0))
        .unwrap()
}

async fn last_sequence(bus: &Bus, stream: &str) -> u64 {
    let mut s = bus.jetstream().get_stream(stream).await.unwrap();
    s.info().await.unwrap().state.last_sequence
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_projection_survives_a_sigkill_and_matches_a_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let broker = SingleBroker::start(dir.path(), RULES)
        .await
        .expect("nats-server and bus");
    let bus = &broker.bus;
    let data = dir.path().join("console");
    let config = GatewayConfig {
        nats: broker.access(),
        services: "router,console",
        // Small batches: many commits, so the kill falls between two.
        extra: format!(
            "\n[console]\ndata_dir = \"{}\"\nbatch = 20\nidle_wait = \"50ms\"\n",
            data.display()
        ),
    };
    let gateway_dir = dir.path().join("gateway");
    std::fs::create_dir_all(&gateway_dir).unwrap();
    let mut gateway = Gateway::start(binary::guichet().expect("the guichet binary"), &gateway_dir, &config)
        .await
        .expect("guichet starts");
    let store = Store::open(&sqlite(&data.join("console.sqlite"))).await.unwrap();

    for i in 0..BURST {
        bus.publish_contact(&contact(i)).await.expect("contact stored");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while store.position("ROUTED").await.unwrap() < (BURST / 4) as u64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the projection never got going: {}",
            gateway.log_tail()
        );
        gateway.check_alive().unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gateway.kill().await;
    let at_kill = store.position("ROUTED").await.unwrap();
    gateway.restart().unwrap();
    gateway.wait_ready(Duration::from_secs(60)).await.unwrap();

    // Caught up: every routed contact and every event projected.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let routed = last_sequence(bus, "ROUTED").await;
        let events = last_sequence(bus, "EVENTS").await;
        if routed >= BURST as u64
            && store.position("ROUTED").await.unwrap() == routed
            && store.position("EVENTS").await.unwrap() == events
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the projection did not catch up ({routed} routed): {}",
            gateway.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gateway.stop().await.unwrap();
    eprintln!("killed at ROUTED position {at_kill} of {BURST}");
    assert!(at_kill < BURST as u64, "killed before the end ({at_kill})");

    let burst = BURST as i64;
    assert_eq!(count(&store, "SELECT COUNT(*) FROM requests").await, burst);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM contacts").await, burst);
    assert_eq!(
        count(&store, "SELECT CAST(SUM(received) AS BIGINT) FROM daily").await,
        burst,
        "each request counted once across the kill"
    );
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM transitions WHERE kind = 'open'").await,
        burst
    );
    assert_eq!(
        count(
            &store,
            "SELECT CAST(SUM(received) AS BIGINT) FROM daily WHERE site = 'annexe-nord'"
        )
        .await,
        burst / 2
    );

    // A projection from scratch gives the same tables.
    let fresh = Store::open(&sqlite(&dir.path().join("fresh.sqlite"))).await.unwrap();
    let mut projector = Projector::start(bus, fresh.clone(), "rebuild", 500).await.unwrap();
    tokio::time::timeout(Duration::from_secs(120), projector.catch_up())
        .await
        .expect("rebuilt in time")
        .unwrap();
    for table in TABLES {
        assert_eq!(
            store.dump(table).await.unwrap(),
            fresh.dump(table).await.unwrap(),
            "table {table} after the kill vs rebuilt"
        );
    }
}
