//! Every nats-server configuration in deploy/nats is started for real, so
//! that a configuration the server rejects cannot ship; guichet's topology
//! is then created on it (replicated three times on the cluster).

use std::{path::Path, time::Duration};

use guichet_core::{
    Bus,
    config::{NatsConfig, TopologyConfig},
    nats_server::{NatsServer, NatsServerOptions, free_port},
    secret::Secret,
};
use guichet_harness::{nats_server_binary, port_taken, repo_root};
use tokio_util::sync::CancellationToken;

const PASSWORD: &str = "deploy-test-password";

fn nats_config(port: u16) -> NatsConfig {
    NatsConfig {
        url: Some(format!("nats://127.0.0.1:{port}")),
        user: Some("guichet".into()),
        password: Some(Secret::Inline(PASSWORD.into())),
        connect_timeout: Duration::from_secs(20),
        ..NatsConfig::default()
    }
}

/// Starts `config_text` written in `dir`, on free client and monitoring
/// ports, with its store in `dir`. A port found free can be taken by
/// another test before the server binds it: then it tries other ports.
async fn start(dir: &Path, name: &str, config_text: &str) -> NatsServer {
    let mut last = String::new();
    for _ in 0..5 {
        match try_start(dir, name, config_text).await {
            Ok(server) => return server,
            Err(e) if port_taken(&e) => last = e,
            Err(e) => panic!("{name}: {e}"),
        }
    }
    panic!("{name}: {last}")
}

async fn try_start(dir: &Path, name: &str, config_text: &str) -> Result<NatsServer, String> {
    let config_path = dir.join(format!("{name}.conf"));
    let store = dir.join(name);
    let text = config_text.replace(
        "store_dir: /var/lib/nats",
        &format!("store_dir: {:?}", store.display().to_string()),
    );
    std::fs::write(&config_path, text).unwrap();
    let mut options = NatsServerOptions::new(nats_server_binary(), free_port().unwrap(), &store);
    // JetStream and its store come from the file itself.
    options.jetstream = false;
    options.extra_args = vec![
        "-c".into(),
        config_path.display().to_string(),
        "-m".into(),
        free_port().unwrap().to_string(),
    ];
    options.env = vec![("GUICHET_NATS_PASSWORD".into(), PASSWORD.into())];
    NatsServer::start(&options).await.map_err(|e| e.to_string())
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path)).unwrap()
}

#[tokio::test]
async fn the_single_node_config_starts_with_fsync_per_write_and_auth() {
    let text = read("deploy/nats/single.conf");
    assert!(text.contains("sync_interval: always"));
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "single", &text).await;

    // Without the password: refused.
    let anonymous = NatsConfig {
        user: None,
        password: None,
        connect_timeout: Duration::from_secs(1),
        ..nats_config(server.port())
    };
    let url = anonymous.url.clone().unwrap();
    assert!(
        Bus::start(&url, &anonymous, &TopologyConfig::default(), &CancellationToken::new())
            .await
            .is_err()
    );

    let config = nats_config(server.port());
    let bus = Bus::start(&url, &config, &TopologyConfig::default(), &CancellationToken::new())
        .await
        .unwrap();
    let ack = bus
        .publish("guichet.intake.web".into(), "deploy-1", "x".into())
        .await
        .unwrap();
    assert_eq!(ack.sequence, 1);
    let log = std::fs::read_to_string(server.log_file()).unwrap();
    // The only errors are the anonymous client's refusals above.
    let unexpected: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("[ERR]") || l.contains("[FTL]"))
        .filter(|l| !l.contains("authentication error"))
        .collect();
    assert!(unexpected.is_empty(), "{unexpected:?}");
    assert!(log.contains("authentication error"), "the anonymous client was refused");
    server.stop(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn the_three_node_cluster_configs_form_a_cluster_with_replicated_streams() {
    let dir = tempfile::tempdir().unwrap();
    let servers = start_cluster(dir.path()).await;

    let config = nats_config(servers[0].port());
    let topology = TopologyConfig {
        replicas: 3,
        ..TopologyConfig::default()
    };
    // The meta group needs a moment to elect a leader after start.
    let mut bus = None;
    for _ in 0..60 {
        match Bus::start(&servers[0].url(), &config, &topology, &CancellationToken::new()).await {
            Ok(b) => {
                bus = Some(b);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    let bus = bus.expect("topology created on the 3-node cluster");
    let mut stream = bus.jetstream().get_stream("INTAKE").await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.config.num_replicas, 3);
    let cluster = info.cluster.clone().expect("cluster info");
    assert_eq!(cluster.replicas.len(), 2, "two followers beside the leader");
    bus.publish("guichet.intake.web".into(), "cluster-1", "x".into())
        .await
        .unwrap();
    for server in servers {
        server.stop(Duration::from_secs(5)).await;
    }
}

/// The three cluster configs on loopback. The route ports are written in
/// the files, so a route port taken before its server binds it means
/// starting the three again on other ports (in a fresh folder).
async fn start_cluster(dir: &Path) -> Vec<NatsServer> {
    let mut last = String::new();
    for attempt in 0..5 {
        let dir = dir.join(format!("attempt-{attempt}"));
        std::fs::create_dir_all(&dir).unwrap();
        let route_ports: Vec<u16> = (0..3).map(|_| free_port().unwrap()).collect();
        let mut servers = Vec::new();
        for n in 1..=3 {
            let mut text = read(&format!("deploy/nats/cluster/nats-{n}.conf"));
            assert!(text.contains("sync_interval: always"), "nats-{n}");
            // Same file, loopback addresses: the hosts' names become ports here.
            for (i, port) in route_ports.iter().enumerate() {
                text = text.replace(&format!("nats-{}.internal:6222", i + 1), &format!("127.0.0.1:{port}"));
            }
            text = text.replace(
                "listen: 0.0.0.0:6222",
                &format!("listen: 127.0.0.1:{}", route_ports[n - 1]),
            );
            match try_start(&dir, &format!("nats-{n}"), &text).await {
                Ok(server) => servers.push(server),
                Err(e) if port_taken(&e) => {
                    last = e;
                    break;
                }
                Err(e) => panic!("nats-{n}: {e}"),
            }
        }
        if servers.len() == 3 {
            return servers;
        }
        for server in servers {
            server.stop(Duration::from_secs(5)).await;
        }
    }
    panic!("the cluster did not start: {last}")
}
