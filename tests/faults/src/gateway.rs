//! One real `guichet run` process, as an operator starts it from a TOML
//! file, that a scenario can kill with SIGKILL and start again on the same
//! configuration and ports.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use guichet_core::{
    ids,
    nats_server::free_port,
    proto::{
        self,
        v1::{Channel, Contact, IdentityClaims, Source},
    },
};
use tokio::process::{Child, Command};

use crate::web_load::{FORM, SECRET};

/// How guichet reaches NATS in a scenario.
pub struct NatsAccess {
    /// Comma-separated server URLs.
    pub url: String,
    pub user: String,
    pub password: String,
    /// `topology.replicas`: 3 on the cluster.
    pub replicas: usize,
}

/// A broker started from `deploy/nats/single.conf` (as a small town runs
/// it), a bus of the test's own on it holding `rules` under `rules`, and
/// the access a gateway needs: what the kill tests of one service share.
pub struct SingleBroker {
    pub node: guichet_harness::cluster::Node,
    pub bus: guichet_core::Bus,
}

/// Contact `i` of a burst a kill test writes straight to INTAKE (as an
/// adapter would): from `usager{i}@usager.example`, received now on
/// `channel` from `source`, with a new reference and the idempotency key
/// `{prefix}-{id}`; the channel's details are the caller's to add.
pub fn burst_contact(i: usize, prefix: &str, channel: Channel, source: Source, body: &str) -> Contact {
    let id = ids::contact_id();
    let now = chrono::Utc::now();
    Contact {
        idempotency_key: format!("{prefix}-{id}"),
        id,
        received_at: Some(proto::timestamp(now)),
        channel: channel as i32,
        source: Some(source),
        claims: Some(IdentityClaims {
            email: format!("usager{i}@usager.example"),
            ..Default::default()
        }),
        subject: format!("Demande {i}"),
        body: body.into(),
        reference: ids::reference(now),
        ..Default::default()
    }
}

impl SingleBroker {
    pub async fn start(dir: &Path, rules: &str) -> Result<Self, String> {
        use guichet_core::{
            config::{NatsConfig, TopologyConfig},
            secret::Secret,
        };
        use guichet_harness::cluster::{PASSWORD, read_repo_file, start_config};
        let node = start_config(dir, "single", &read_repo_file("deploy/nats/single.conf")).await?;
        let nats = NatsConfig {
            url: Some(node.url().into()),
            user: Some("guichet".into()),
            password: Some(Secret::Inline(PASSWORD.into())),
            connect_timeout: Duration::from_secs(10),
            publish_timeout: Duration::from_secs(5),
            ..NatsConfig::default()
        };
        let bus = guichet_core::Bus::start(
            &[node.url()],
            &nats,
            &TopologyConfig::default(),
            &tokio_util::sync::CancellationToken::new(),
        )
        .await
        .map_err(|e| format!("bus: {e}"))?;
        bus.stores()
            .config
            .put("rules", rules.as_bytes().to_vec().into())
            .await
            .map_err(|e| format!("pushing the rules: {e}"))?;
        Ok(Self { node, bus })
    }

    /// How a gateway reaches this broker.
    pub fn access(&self) -> NatsAccess {
        NatsAccess {
            url: self.node.url(),
            user: "guichet".into(),
            password: guichet_harness::cluster::PASSWORD.into(),
            replicas: 1,
        }
    }
}

/// What a scenario's guichet runs.
pub struct GatewayConfig {
    pub nats: NatsAccess,
    /// `--services`, e.g. `web,router`.
    pub services: &'static str,
    /// Extra TOML appended as is (a `[[mail.mailboxes]]` section).
    pub extra: String,
}

/// A guichet process with its config file and log in a folder of its own.
pub struct Gateway {
    binary: PathBuf,
    config: PathBuf,
    log: PathBuf,
    services: &'static str,
    pub web: SocketAddr,
    pub admin: SocketAddr,
    child: Option<Child>,
    /// How many times it was started (the log says where each start begins).
    pub starts: u32,
}

impl Gateway {
    /// Writes the configuration in `dir` and starts guichet; waits until
    /// `/readyz` says ready.
    pub async fn start(binary: PathBuf, dir: &Path, config: &GatewayConfig) -> Result<Self, String> {
        let port = || free_port().map_err(|e| format!("free port: {e}"));
        let web = SocketAddr::from(([127, 0, 0, 1], port()?));
        let admin = SocketAddr::from(([127, 0, 0, 1], port()?));
        let path = dir.join("guichet.toml");
        std::fs::write(&path, toml(config, web, admin)).map_err(|e| format!("guichet.toml: {e}"))?;
        let mut gateway = Self {
            binary,
            config: path,
            log: dir.join("guichet.log"),
            services: config.services,
            web,
            admin,
            child: None,
            starts: 0,
        };
        gateway.spawn()?;
        gateway.wait_ready(Duration::from_secs(60)).await?;
        Ok(gateway)
    }

    /// The submissions URL of the scenario's form.
    pub fn form_url(&self) -> String {
        format!("http://{}/v1/forms/{FORM}/submissions", self.web)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("guichet log: {e}"))?;
        let stderr = log.try_clone().map_err(|e| format!("guichet log: {e}"))?;
        let child = Command::new(&self.binary)
            .arg("--config")
            .arg(&self.config)
            .args(["run", "--services", self.services])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.binary.display()))?;
        self.child = Some(child);
        self.starts += 1;
        Ok(())
    }

    /// Waits for `/readyz` to answer 200, or fails if the process exits.
    pub async fn wait_ready(&mut self, within: Duration) -> Result<(), String> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| e.to_string())?;
        let url = format!("http://{}/readyz", self.admin);
        let deadline = tokio::time::Instant::now() + within;
        loop {
            self.check_alive()?;
            if client.get(&url).send().await.is_ok_and(|r| r.status() == 200) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!("guichet not ready after {within:?}: {}", self.log_tail()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// An error if the process has exited on its own.
    pub fn check_alive(&mut self) -> Result<(), String> {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(status))) => Err(format!("guichet exited on its own ({status}): {}", self.log_tail())),
            Some(Err(e)) => Err(format!("guichet: {e}")),
            _ => Ok(()),
        }
    }

    /// SIGKILL, as a crash or an OOM kill would.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts the process again on the same configuration and ports,
    /// without waiting for readiness (the load measures the outage).
    pub fn restart(&mut self) -> Result<(), String> {
        self.spawn()
    }

    /// SIGTERM, and an error unless it exits 0 within the grace period.
    pub async fn stop(&mut self) -> Result<(), String> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
        }
        match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(format!("guichet stopped with {status}: {}", self.log_tail())),
            Ok(Err(e)) => Err(format!("guichet: {e}")),
            Err(_) => {
                let _ = child.kill().await;
                Err("guichet did not stop within 30 s of SIGTERM".into())
            }
        }
    }

    /// The first `most` warnings and errors of guichet's log, for a failed
    /// run's report: what guichet saw while the problems arose.
    pub fn warnings(&self, most: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .take(most)
            .collect();
        lines.join("\n")
    }

    /// The end of guichet's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

/// The configuration file: the scenario's NATS, a signed form whose
/// rate limit never refuses the load (the faults are what is measured),
/// and a router that takes a dead process's contacts back after 5 s
/// instead of 30 (a killed gateway's router held some). The router's
/// retries keep their defaults: a contact is dead-lettered only after
/// they are spent, which no outage here should reach.
fn toml(config: &GatewayConfig, web: SocketAddr, admin: SocketAddr) -> String {
    let NatsAccess {
        url,
        user,
        password,
        replicas,
    } = &config.nats;
    format!(
        r#"instance = "faults"
shutdown_grace = "10s"

[nats]
url = "{url}"
user = "{user}"
password = "{password}"
connect_timeout = "30s"

[topology]
replicas = {replicas}

[admin]
listen = "{admin}"

[log]
level = "info"

[web]
listen = "{web}"

[web.forms.{FORM}]
secret = "{SECRET}"
signature_scheme = "v2"
email = "email"
description = "message"
required = ["email", "description"]
rate_limit = {{ per_second = 100000.0, burst = 100000 }}

[router]
ack_wait = "5s"
{privacy}{extra}"#,
        privacy = guichet_harness::privacy_toml(),
        extra = config.extra,
    )
}
