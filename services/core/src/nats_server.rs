//! A `nats-server` child process: guichet's embedded mode for a small
//! town (no NATS to run separately) and the test harness's real broker.
//!
//! The server always listens on loopback, with JetStream storing under the
//! directory given. [`NatsServer::stop`] asks it to stop (SIGTERM, so it
//! flushes its stores) and kills it only if it does not.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use tokio::process::{Child, Command};

use crate::Error;

/// How to start the server.
#[derive(Debug, Clone)]
pub struct NatsServerOptions {
    /// The executable (`nats-server`, looked up on PATH, or a path).
    pub binary: PathBuf,
    pub port: u16,
    /// JetStream storage directory; created if missing.
    pub store_dir: PathBuf,
    /// Where the server writes its log (also read back to explain a
    /// failure to start). Defaults to `<store_dir>/nats-server.log`.
    pub log_file: Option<PathBuf>,
    /// Start without JetStream (to test how guichet reports it).
    pub jetstream: bool,
    /// Extra arguments, e.g. `--config file` to test a deploy/ config.
    pub extra_args: Vec<String>,
    /// Extra environment variables (configs may read `$VARS`).
    pub env: Vec<(String, String)>,
}

impl NatsServerOptions {
    pub fn new(binary: impl Into<PathBuf>, port: u16, store_dir: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
            port,
            store_dir: store_dir.into(),
            log_file: None,
            jetstream: true,
            extra_args: Vec::new(),
            env: Vec::new(),
        }
    }
}

/// A running `nats-server` child. Killed if dropped without [`Self::stop`].
#[derive(Debug)]
pub struct NatsServer {
    child: Child,
    port: u16,
    log_file: PathBuf,
}

impl NatsServer {
    /// Starts the server and waits until it accepts connections.
    pub async fn start(options: &NatsServerOptions) -> Result<Self, Error> {
        std::fs::create_dir_all(&options.store_dir).map_err(|e| {
            Error::NatsServer(format!(
                "cannot create store directory {}: {e}",
                options.store_dir.display()
            ))
        })?;
        let log_file = options
            .log_file
            .clone()
            .unwrap_or_else(|| options.store_dir.join("nats-server.log"));
        let mut cmd = Command::new(&options.binary);
        cmd.arg("-a")
            .arg(Ipv4Addr::LOCALHOST.to_string())
            .arg("-p")
            .arg(options.port.to_string())
            .arg("-l")
            .arg(&log_file);
        if options.jetstream {
            cmd.arg("-js").arg("-sd").arg(&options.store_dir);
        }
        // Errors in the config file are printed before logging starts.
        let stderr_file = log_file.with_extension("stderr");
        let stderr = std::fs::File::create(&stderr_file)
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null());
        cmd.args(&options.extra_args)
            .envs(options.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::NatsServer(format!(
                    "`{}` not found: run scripts/bootstrap (it installs nats-server 2.15 under .tools/bin) and put it on PATH, set `nats.embedded.binary`, or set `nats.url` to an existing server",
                    options.binary.display()
                ))
            } else {
                Error::NatsServer(format!("cannot start `{}`: {e}", options.binary.display()))
            }
        })?;
        let mut server = Self {
            child,
            port: options.port,
            log_file,
        };
        server.wait_ready(Duration::from_secs(15)).await?;
        Ok(server)
    }

    async fn wait_ready(&mut self, within: Duration) -> Result<(), Error> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(Error::NatsServer(format!(
                    "exited at start ({status}): {}",
                    last_lines(&self.log_file, 5)
                )));
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Error::NatsServer(format!(
                    "not accepting connections on {addr} after {within:?}: {}",
                    last_lines(&self.log_file, 5)
                )));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// Stops the server gracefully (SIGTERM), killing it after `grace`.
    pub async fn stop(mut self, grace: Duration) {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
            if tokio::time::timeout(grace, self.child.wait()).await.is_ok() {
                return;
            }
        }
        let _ = self.child.kill().await;
    }

    /// Kills the server at once (SIGKILL), as a crash or power cut would.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

fn last_lines(path: &Path, n: usize) -> String {
    let mut text = std::fs::read_to_string(path.with_extension("stderr")).unwrap_or_default();
    text.push_str(&std::fs::read_to_string(path).unwrap_or_default());
    let lines: Vec<&str> = text.lines().rev().take(n).collect();
    if lines.is_empty() {
        format!("no log in {}", path.display())
    } else {
        lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
    }
}

/// A port on loopback that was free a moment ago.
pub fn free_port() -> Result<u16, Error> {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::Io {
            what: "finding a free loopback port".into(),
            source: e,
        })
}
