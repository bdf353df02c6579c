//! The 3-node NATS cluster of `deploy/nats/cluster`, on loopback.
//!
//! The very files operators deploy are started (not a look-alike): only
//! the host names, the store directory and the ports are rewritten for
//! loopback (an address of its own per node), so a cluster test exercises `sync_interval: always`, the
//! routes and the authorization that production uses. A node can be
//! killed (SIGKILL) and started again on its port and store.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    time::Duration,
};

use guichet_core::{
    Bus,
    config::{NatsConfig, TopologyConfig},
    nats_server::{NatsServer, NatsServerOptions},
    secret::Secret,
};

use tokio_util::sync::CancellationToken;

use crate::{nats_server_binary, port_taken, repo_root};

/// The password the deploy configs read from `$GUICHET_NATS_PASSWORD`.
pub const PASSWORD: &str = "deploy-test-password";

/// A nats-server started from a deploy/ config file.
pub struct Node {
    pub name: String,
    server: Option<NatsServer>,
    options: NatsServerOptions,
}

impl Node {
    pub fn port(&self) -> u16 {
        self.options.port
    }

    pub fn url(&self) -> String {
        format!("nats://{}:{}", self.options.host, self.options.port)
    }

    pub fn is_running(&self) -> bool {
        self.server.is_some()
    }

    pub fn log_file(&self) -> std::path::PathBuf {
        self.options.store_dir.join("nats-server.log")
    }

    /// Kills the node (SIGKILL), as a crash or a power cut would.
    pub async fn kill(&mut self) {
        if let Some(server) = self.server.take() {
            server.kill().await;
        }
    }

    /// Stops the node (SIGTERM).
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop(Duration::from_secs(5)).await;
        }
    }

    /// Starts the node again on its port and store.
    pub async fn restart(&mut self) {
        self.stop().await;
        let mut last = String::new();
        // The port was ours a moment ago; another test may hold it briefly.
        for _ in 0..50 {
            match NatsServer::start(&self.options).await {
                Ok(server) => {
                    self.server = Some(server);
                    return;
                }
                Err(e) if port_taken(&e.to_string()) => {
                    last = e.to_string();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("{} restarts: {e}", self.name),
            }
        }
        panic!("{} restarts: {last}", self.name);
    }
}

/// Writes `config_text` as `<dir>/<name>.conf` with its store under `dir`
/// and starts it on a loopback address of its own (see [`crate::loopback`]):
/// client port and monitoring (the file's `http:` moved there too).
pub async fn start_config(dir: &Path, name: &str, config_text: &str) -> Result<Node, String> {
    start_config_on(dir, name, config_text, crate::loopback::own_ip()).await
}

/// [`start_config`] on `host`: the address the file's routes name it by.
async fn start_config_on(dir: &Path, name: &str, config_text: &str, host: Ipv4Addr) -> Result<Node, String> {
    let config_path = dir.join(format!("{name}.conf"));
    let store = dir.join(name);
    let monitoring = crate::loopback::free_port_on(host);
    let text = config_text
        .replace(
            "store_dir: /var/lib/nats",
            &format!("store_dir: {:?}", store.display().to_string()),
        )
        .replace("http: 127.0.0.1:8222", &format!("http: {host}:{monitoring}"));
    std::fs::write(&config_path, text).map_err(|e| e.to_string())?;
    let mut options = NatsServerOptions::new(nats_server_binary(), crate::loopback::free_port_on(host), &store);
    options.host = host;
    // JetStream and its store come from the file itself.
    options.jetstream = false;
    options.log_file = Some(store.join("nats-server.log"));
    options.extra_args = vec![
        "-c".into(),
        config_path.display().to_string(),
        "-m".into(),
        monitoring.to_string(),
    ];
    options.env = vec![("GUICHET_NATS_PASSWORD".into(), PASSWORD.into())];
    let server = NatsServer::start(&options).await.map_err(|e| e.to_string())?;
    Ok(Node {
        name: name.to_owned(),
        server: Some(server),
        options,
    })
}

/// Reads a file of the repository (`deploy/nats/single.conf`…).
pub fn read_repo_file(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The three nodes of `deploy/nats/cluster`, on loopback.
pub struct Cluster {
    pub nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts the three configs. The route ports are written in the
    /// files, so a route port taken before its server binds it means
    /// starting the three again on other ports (in a fresh folder).
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut last = String::new();
        for attempt in 0..5 {
            let sub = dir.path().join(format!("attempt-{attempt}"));
            std::fs::create_dir_all(&sub).expect("cluster folder");
            // Each node on a loopback address of its own, as on its host:
            // clients, routes and monitoring there.
            let hosts: Vec<Ipv4Addr> = (0..3).map(|_| crate::loopback::own_ip()).collect();
            let routes: Vec<SocketAddr> = hosts
                .iter()
                .map(|&host| SocketAddr::from((host, crate::loopback::free_port_on(host))))
                .collect();
            let mut nodes = Vec::new();
            for n in 1..=3 {
                let mut text = read_repo_file(&format!("deploy/nats/cluster/nats-{n}.conf"));
                // Same file, loopback addresses: the hosts' names become addresses here.
                for (i, route) in routes.iter().enumerate() {
                    text = text.replace(&format!("nats-{}.internal:6222", i + 1), &route.to_string());
                }
                text = text.replace("listen: 0.0.0.0:6222", &format!("listen: {}", routes[n - 1]));
                match start_config_on(&sub, &format!("nats-{n}"), &text, hosts[n - 1]).await {
                    Ok(node) => nodes.push(node),
                    Err(e) if port_taken(&e) => {
                        last = e;
                        break;
                    }
                    Err(e) => panic!("nats-{n}: {e}"),
                }
            }
            if nodes.len() == 3 {
                return Self { nodes, _dir: dir };
            }
            for mut node in nodes {
                node.stop().await;
            }
        }
        panic!("the cluster did not start: {last}")
    }

    /// Every node's client URL, in node order.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Node::url).collect()
    }

    /// The configuration guichet uses to reach the cluster: every node
    /// listed, with the deploy configs' user.
    pub fn nats_config(&self) -> NatsConfig {
        NatsConfig {
            url: Some(self.urls().into()),
            user: Some("guichet".into()),
            password: Some(Secret::Inline(PASSWORD.into())),
            connect_timeout: Duration::from_secs(20),
            ..NatsConfig::default()
        }
    }

    /// guichet's topology as on a cluster: every stream and bucket
    /// replicated on the three nodes.
    pub fn topology() -> TopologyConfig {
        TopologyConfig {
            replicas: 3,
            ..TopologyConfig::default()
        }
    }

    /// A bus on the cluster with [`Self::topology`] in place. The meta
    /// group needs a moment to elect a leader after start: `Bus::start`
    /// waits for JetStream up to `nats.connect_timeout` (20 s), and is
    /// tried again a few times on a loaded machine.
    pub async fn bus(&self) -> Bus {
        let mut last = String::new();
        for _ in 0..4 {
            match Bus::start(
                &self.urls(),
                &self.nats_config(),
                &Self::topology(),
                &CancellationToken::new(),
            )
            .await
            {
                Ok(bus) => return bus,
                Err(e) => {
                    last = e.to_string();
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        panic!("guichet's topology not created on the 3-node cluster: {last}")
    }

    /// Stops every node still running.
    pub async fn stop(mut self) {
        for node in &mut self.nodes {
            node.stop().await;
        }
    }
}
