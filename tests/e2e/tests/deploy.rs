//! Every nats-server configuration in deploy/nats is started for real, so
//! that a configuration the server rejects cannot ship; guichet's topology
//! is then created on it (replicated three times on the cluster).

use std::{path::Path, time::Duration};

use guichet_core::{
    Bus,
    config::{NatsConfig, TopologyConfig},
    secret::Secret,
};
use guichet_harness::{
    Cluster, Node,
    cluster::{PASSWORD, read_repo_file as read, start_config},
    port_taken,
};
use tokio_util::sync::CancellationToken;

fn nats_config(node: &Node) -> NatsConfig {
    NatsConfig {
        url: Some(node.url().into()),
        user: Some("guichet".into()),
        password: Some(Secret::Inline(PASSWORD.into())),
        connect_timeout: Duration::from_secs(20),
        ..NatsConfig::default()
    }
}

/// Starts `config_text` on free ports; a port found free can be taken
/// by another test before the server binds it: then it tries other ports.
async fn start(dir: &Path, name: &str, config_text: &str) -> Node {
    let mut last = String::new();
    for _ in 0..5 {
        match start_config(dir, name, config_text).await {
            Ok(node) => return node,
            Err(e) if port_taken(&e) => last = e,
            Err(e) => panic!("{name}: {e}"),
        }
    }
    panic!("{name}: {last}")
}

#[tokio::test]
async fn the_single_node_config_starts_with_fsync_per_write_and_auth() {
    let text = read("deploy/nats/single.conf");
    assert!(text.contains("sync_interval: always"));
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path(), "single", &text).await;

    // Without the password: refused.
    let anonymous = NatsConfig {
        user: None,
        password: None,
        connect_timeout: Duration::from_secs(1),
        ..nats_config(&server)
    };
    let url = anonymous.url.clone().unwrap();
    assert!(
        Bus::start(&url, &anonymous, &TopologyConfig::default(), &CancellationToken::new())
            .await
            .is_err()
    );

    let config = nats_config(&server);
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
    server.stop().await;
}

#[tokio::test]
async fn the_three_node_cluster_configs_form_a_cluster_with_replicated_streams() {
    let cluster = Cluster::start().await;

    let bus = cluster.bus().await;
    let mut stream = bus.jetstream().get_stream("INTAKE").await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.config.num_replicas, 3);
    let raft = info.cluster.clone().expect("cluster info");
    assert_eq!(raft.replicas.len(), 2, "two followers beside the leader");
    bus.publish("guichet.intake.web".into(), "cluster-1", "x".into())
        .await
        .unwrap();
    cluster.stop().await;
}
