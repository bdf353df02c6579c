//! Test harness: real brokers and mail servers, never mocks.
//!
//! [`Nats`] starts a real `nats-server` (JetStream on) on a loopback
//! address of its own ([`loopback`]) with its own temporary store, and kills it and removes the store
//! on drop, so tests run in parallel without sharing anything. It can be
//! stopped and started again on the same port and store, to test what
//! happens while the broker is away. [`Dovecot`] does the same for a
//! real IMAP server (plain or TLS), for the mail adapter, and [`SmtpSink`]
//! for a real SMTP server (Postfix's `smtp-sink`), for notify, and
//! [`Browser`] for a headless Chromium through WebDriver, for the console.
//! [`loopback`] gives a test addresses no other test binds.

pub mod bench;
pub mod browser;
pub mod cluster;
pub mod dovecot;
pub mod loopback;
pub mod postgres;
pub mod smtp_sink;
pub mod streams;

use std::{path::PathBuf, time::Duration};

pub use browser::Browser;
pub use cluster::{Cluster, Node};
pub use dovecot::Dovecot;
pub use postgres::Postgres;
pub use smtp_sink::SmtpSink;

use guichet_core::{
    Bus,
    config::{NatsConfig, TopologyConfig},
    nats_server::{NatsServer, NatsServerOptions},
    privacy::{PrivacyConfig, Pseudonymizer},
};
use tokio_util::sync::CancellationToken;

/// The `privacy.pseudonym_key` of tests (32 bytes; never a real key).
pub const TEST_PSEUDONYM_KEY: &str = "guichet-tests-pseudonym-key-0001";

/// The [`Pseudonymizer`] of [`TEST_PSEUDONYM_KEY`], for a test's
/// `ServiceContext` and for computing the identity keys it expects.
pub fn pseudonymizer() -> &'static Pseudonymizer {
    static KEYS: std::sync::OnceLock<Pseudonymizer> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| match Pseudonymizer::new(TEST_PSEUDONYM_KEY.as_bytes()) {
        Ok(p) => p,
        Err(e) => panic!("the test pseudonym key: {e}"),
    })
}

/// The `[privacy]` section of a test's configuration file.
pub fn privacy_toml() -> String {
    format!("\n[privacy]\npseudonym_key = \"{TEST_PSEUDONYM_KEY}\"\n")
}

/// The `[privacy]` section of a test's `guichet::Config`.
pub fn privacy_config() -> PrivacyConfig {
    PrivacyConfig {
        pseudonym_key: Some(guichet_core::secret::Secret::Inline(TEST_PSEUDONYM_KEY.to_owned())),
    }
}

/// The repository root (this crate lives in `tests/harness`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The `nats-server` to test with: `$GUICHET_NATS_SERVER`, else the one
/// `scripts/bootstrap` installs in `.tools/bin`, else whatever is on PATH.
pub fn nats_server_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("GUICHET_NATS_SERVER") {
        return p.into();
    }
    let local = repo_root().join(".tools/bin/nats-server");
    if local.is_file() { local } else { "nats-server".into() }
}

/// A real nats-server for one test.
pub struct Nats {
    server: Option<NatsServer>,
    options: NatsServerOptions,
    _dir: tempfile::TempDir,
}

/// Whether a server's start failed only because a port found free was
/// taken (by another test's connection) before the server could bind it:
/// then starting it again on other ports is the fix.
pub fn port_taken(error: &str) -> bool {
    error.contains("address already in use")
}

impl Nats {
    /// Starts a JetStream-enabled server on a loopback address of its own.
    pub async fn start() -> Self {
        Self::start_with(true, Vec::new()).await
    }

    /// Starts a server without JetStream.
    pub async fn start_without_jetstream() -> Self {
        Self::start_with(false, Vec::new()).await
    }

    /// Starts a server with extra command-line arguments.
    ///
    /// A port found free is on an address no other test binds, but the
    /// start is still tried again on another if it was taken meanwhile.
    pub async fn start_with(jetstream: bool, extra_args: Vec<String>) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut attempts = 0;
        loop {
            attempts += 1;
            // An address of its own: a port found free there stays free
            // (no other test binds it), and stays closed once stopped.
            let host = loopback::own_ip();
            let mut options = NatsServerOptions::new(
                nats_server_binary(),
                loopback::free_port_on(host),
                dir.path().join("jetstream"),
            );
            options.host = host;
            options.jetstream = jetstream;
            options.extra_args = extra_args.clone();
            options.log_file = Some(dir.path().join("nats-server.log"));
            match NatsServer::start(&options).await {
                Ok(server) => {
                    return Self {
                        server: Some(server),
                        options,
                        _dir: dir,
                    };
                }
                Err(e) if attempts < 5 && port_taken(&e.to_string()) => {}
                Err(e) => panic!("nats-server starts: {e}"),
            }
        }
    }

    pub fn url(&self) -> String {
        format!("nats://{}:{}", self.options.host, self.options.port)
    }

    /// The loopback address it listens on (its own: see [`loopback`]).
    pub fn host(&self) -> std::net::Ipv4Addr {
        self.options.host
    }

    pub fn port(&self) -> u16 {
        self.options.port
    }

    /// A plain client.
    pub async fn client(&self) -> async_nats::Client {
        async_nats::connect(self.url())
            .await
            .expect("connect to test nats-server")
    }

    /// A JetStream context on a plain client.
    pub async fn jetstream(&self) -> async_nats::jetstream::Context {
        async_nats::jetstream::new(self.client().await)
    }

    /// The configuration a service under test uses to reach this server.
    pub fn nats_config(&self) -> NatsConfig {
        NatsConfig {
            url: Some(self.url().into()),
            connect_timeout: Duration::from_secs(5),
            publish_timeout: Duration::from_secs(2),
            ..NatsConfig::default()
        }
    }

    /// A bus with guichet's topology (file storage in the test's store).
    pub async fn bus(&self) -> Bus {
        Bus::start(
            &[self.url()],
            &self.nats_config(),
            &TopologyConfig::default(),
            &CancellationToken::new(),
        )
        .await
        .expect("bus starts on the test nats-server")
    }

    /// Stops the server (SIGTERM); its store is kept for [`Self::restart`].
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop(Duration::from_secs(5)).await;
        }
    }

    /// Kills the server (SIGKILL), as a crash would.
    pub async fn kill(&mut self) {
        if let Some(server) = self.server.take() {
            server.kill().await;
        }
    }

    /// Starts the server again on the same port and store.
    ///
    /// The clients under test know this port, so it cannot change: while
    /// it is taken (another test's outgoing connection may have been given
    /// it as its local port while the server was down), the start is tried
    /// again for up to 15 s.
    pub async fn restart(&mut self) {
        self.stop().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            match NatsServer::start(&self.options).await {
                Ok(server) => {
                    self.server = Some(server);
                    return;
                }
                Err(e) if port_taken(&e.to_string()) && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => panic!("nats-server restarts on port {}: {e}", self.options.port),
            }
        }
    }

    pub fn log_file(&self) -> PathBuf {
        self.options.log_file.clone().unwrap_or_default()
    }
}
