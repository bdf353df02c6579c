//! The topology on the 3-node cluster of `deploy/nats/cluster`: an
//! installation moved from one replica to three keeps its identities,
//! requests and files when the node that held them dies, and processes
//! started together all come up ready.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use async_nats::jetstream;
use guichet::{Config, Listeners, RunError, ServiceName};
use guichet_core::{Bus, bus::subjects, config::TopologyConfig};
use guichet_e2e::loopback;
use guichet_harness::Cluster;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// `guichet::run` in this process, with its admin port.
struct Running {
    admin: std::net::SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), RunError>>,
}

impl Running {
    fn start(config: Config, services: Vec<ServiceName>) -> Self {
        let admin_listener = loopback();
        let admin = admin_listener.local_addr().unwrap();
        let listeners = Listeners {
            admin: Some(admin_listener),
            ..Listeners::default()
        };
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(guichet::run(config, services, listeners, shutdown.clone()));
        Self { admin, shutdown, task }
    }

    /// Polls `/readyz` until 200, at most `within`; the error says why not.
    async fn wait_ready(&mut self, client: &reqwest::Client, within: Duration) -> Result<Duration, String> {
        let started = Instant::now();
        loop {
            if client
                .get(format!("http://{}/readyz", self.admin))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
            {
                return Ok(started.elapsed());
            }
            if self.task.is_finished() {
                return Err(format!(
                    "run returned before it was ready: {:?}",
                    (&mut self.task).await
                ));
            }
            if started.elapsed() > within {
                return Err(format!("not ready after {within:?}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let outcome = tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("run returns after shutdown")
            .expect("run does not panic");
        assert!(outcome.is_ok(), "{outcome:?}");
    }
}

/// guichet's configuration on the cluster, with `replicas`.
fn config(cluster: &Cluster, replicas: usize) -> Config {
    Config {
        nats: cluster.nats_config(),
        topology: TopologyConfig {
            replicas,
            ..TopologyConfig::default()
        },
        privacy: guichet_harness::privacy_config(),
        ..Config::default()
    }
}

/// A bus with `topology`, tried again while the cluster elects its leaders.
async fn bus(cluster: &Cluster, topology: &TopologyConfig) -> Bus {
    let mut last = String::new();
    for _ in 0..4 {
        match Bus::start(
            &cluster.urls(),
            &cluster.nats_config(),
            topology,
            &CancellationToken::new(),
        )
        .await
        {
            Ok(bus) => return bus,
            Err(e) => last = e.to_string(),
        }
    }
    panic!("no bus on the cluster: {last}")
}

/// The streams that hold guichet's state.
fn state_streams() -> Vec<String> {
    vec![
        subjects::INTAKE_STREAM.to_owned(),
        subjects::ROUTED_STREAM.to_owned(),
        format!("KV_{}", subjects::IDENTITY_BUCKET),
        format!("KV_{}", subjects::REQUESTS_BUCKET),
        format!("OBJ_{}", subjects::ATTACHMENTS_STORE),
    ]
}

/// A stream's info, asked again while an election makes it time out.
async fn stream_info(js: &jetstream::Context, name: &str, within: Duration) -> jetstream::stream::Info {
    let deadline = Instant::now() + within;
    loop {
        let info = match js.get_stream(name).await {
            Ok(mut stream) => stream.info().await.cloned().map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match info {
            Ok(info) => return info,
            Err(e) if Instant::now() > deadline => panic!("{name}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Waits until `name` has three replicas, all current (the leader and two
/// followers caught up), at most `within`.
async fn wait_three_current(js: &jetstream::Context, name: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let info = stream_info(js, name, within).await;
        let cluster = info.cluster.clone().unwrap_or_default();
        let current = cluster.leader.is_some()
            && cluster.replicas.len() == 2
            && cluster.replicas.iter().all(|p| p.current && !p.offline);
        if info.config.num_replicas == 3 && current {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} not on three current replicas after {within:?}: {:?}",
            info.cluster
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What the R1 installation holds, read back through a bus; tried again
/// while the cluster re-elects leaders after a node is killed.
async fn assert_state_readable(bus: &Bus, identity_key: &str, reference: &str, attachment: (&str, &[u8])) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while Instant::now() < deadline {
        let identity = bus.stores().identity.get(identity_key).await;
        let request = bus.stores().requests.get(reference).await;
        let file = bus.get_attachment(attachment.0).await;
        match (identity, request, file) {
            (Ok(Some(u)), Ok(Some(r)), Ok(f)) => {
                assert_eq!(&u[..], b"U-MIGRATED", "identity value");
                assert_eq!(&r[..], b"{\"service\":\"voirie\"}", "request value");
                assert_eq!(f, attachment.1, "file content");
                return;
            }
            other => last = format!("{other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("the state is not readable: {last}");
}

/// An R1 installation (identities, a request, a file, a contact) is moved
/// to `topology.replicas = 3` by restarting guichet; once every replica is
/// current, each node that held R1 state is killed in turn, and
/// identities, requests and files are all still there.
#[tokio::test]
async fn an_r1_installation_moved_to_r3_survives_the_node_that_held_it() {
    let mut cluster = Cluster::start().await;
    let r1 = TopologyConfig {
        replicas: 1,
        ..TopologyConfig::default()
    };
    let identity_key = "id.email.migration-test";
    let reference = "GU-2026-MIGR-0001";
    let file = b"%PDF-1.4 scanned letter of the migration test".to_vec();
    let (attachment, holders) = {
        let bus = bus(&cluster, &r1).await;
        bus.stores()
            .identity
            .put(identity_key, b"U-MIGRATED".as_slice().into())
            .await
            .unwrap();
        bus.stores()
            .requests
            .put(reference, b"{\"service\":\"voirie\"}".as_slice().into())
            .await
            .unwrap();
        let attachment = bus
            .put_attachment(&file, "courrier.pdf", "application/pdf")
            .await
            .unwrap();
        bus.publish("guichet.intake.web.migration".into(), "migration-1", "contact".into())
            .await
            .unwrap();
        // Where each piece of state lives: one node per stream at R1.
        let js = bus.jetstream();
        let mut holders = Vec::new();
        for name in state_streams() {
            let info = stream_info(js, &name, Duration::from_secs(30)).await;
            assert_eq!(info.config.num_replicas, 1, "{name}");
            let leader = info.cluster.and_then(|c| c.leader).unwrap();
            if !holders.contains(&leader) {
                holders.push(leader);
            }
        }
        (attachment.key, holders)
    };

    // guichet restarted with three replicas: ready once the topology is
    // reconciled, every stream and bucket on three nodes.
    let mut gateway = Running::start(config(&cluster, 3), vec![ServiceName::Router]);
    let client = reqwest::Client::new();
    gateway
        .wait_ready(&client, Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("guichet with replicas = 3: {e}"));
    let bus = bus(&cluster, &Cluster::topology()).await;
    for name in state_streams() {
        wait_three_current(bus.jetstream(), &name, Duration::from_secs(60)).await;
    }
    assert_state_readable(&bus, identity_key, reference, (&attachment, &file)).await;

    // Each node that held R1 state, killed in turn (one at a time: three
    // replicas keep a quorum with one node down).
    for holder in &holders {
        let node = cluster.nodes.iter().position(|n| &n.name == holder).unwrap();
        cluster.nodes[node].kill().await;
        assert_state_readable(&bus, identity_key, reference, (&attachment, &file)).await;
        let intake = stream_info(bus.jetstream(), subjects::INTAKE_STREAM, Duration::from_secs(60)).await;
        assert_eq!(intake.state.messages, 1, "INTAKE lost its contact with {holder} down");
        cluster.nodes[node].restart().await;
        for name in state_streams() {
            wait_three_current(bus.jetstream(), &name, Duration::from_secs(60)).await;
        }
    }
    gateway.stop().await;
    cluster.stop().await;
}

/// Processes started together on a fresh cluster all come up ready: 4
/// rounds of 5 `guichet run` at once, a fresh cluster each round, 20
/// concurrent starts in all, each creating (or finding) the topology.
#[tokio::test]
async fn twenty_concurrent_starts_on_a_fresh_cluster_all_come_up_ready() {
    let client = reqwest::Client::new();
    let mut slowest = Duration::ZERO;
    for round in 0..4 {
        let cluster = Cluster::start().await;
        let mut runs: Vec<Running> = (0..5)
            .map(|_| Running::start(config(&cluster, 3), Vec::new()))
            .collect();
        let mut failures = Vec::new();
        for (i, run) in runs.iter_mut().enumerate() {
            match run.wait_ready(&client, Duration::from_secs(90)).await {
                Ok(took) => slowest = slowest.max(took),
                Err(e) => failures.push(format!("round {round}, process {i}: {e}")),
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
        // Ready means the topology answers: every stream on three nodes.
        let bus = bus(&cluster, &Cluster::topology()).await;
        for name in state_streams() {
            let info = stream_info(bus.jetstream(), &name, Duration::from_secs(30)).await;
            assert_eq!(info.config.num_replicas, 3, "{name}");
        }
        for run in runs {
            run.stop().await;
        }
        cluster.stop().await;
    }
    eprintln!("slowest start to ready: {slowest:?}");
}
