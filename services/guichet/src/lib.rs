//! The `guichet` binary's library: its configuration and the one
//! [`run`] that `main` and the tests both call.
//!
//! `run` connects to NATS (or starts an embedded `nats-server`), puts the
//! JetStream topology in place, serves the admin port, and starts each
//! chosen service as a supervised task: a service that fails is restarted
//! with backoff, and on shutdown every service is asked to stop intake and
//! finish its in-flight work before the process exits.

pub mod config;
mod error;
pub mod supervisor;

use std::{net::TcpListener as StdListener, time::Duration};

use guichet_core::{
    Bus, ServiceContext,
    admin::{self, Health},
    nats_server::{self, NatsServer, NatsServerOptions},
};
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use error::RunError;
pub use supervisor::ServiceName;

/// Listeners bound before `run`: tests bind port 0 and read the address;
/// `main` binds the configured addresses. A listener left `None` is bound
/// by `run` from the configuration.
#[derive(Default)]
pub struct Listeners {
    pub admin: Option<StdListener>,
    pub web: Option<StdListener>,
    pub grpc: Option<StdListener>,
    /// The back-office `Requests` gRPC listener (`requests.listen`).
    pub requests: Option<StdListener>,
    /// The web console (`console.listen`), when `[console.auth]` lets someone in.
    pub console: Option<StdListener>,
}

impl Listeners {
    /// Binds the configured address of every listener the chosen services need.
    pub fn bind(config: &Config, services: &[ServiceName]) -> Result<Self, RunError> {
        let grpc = services
            .contains(&ServiceName::Desk)
            .then(|| bind("desk.listen", config.desk.listen))
            .transpose()?;
        let web = services
            .contains(&ServiceName::Web)
            .then(|| bind("web.listen", config.web.listen))
            .transpose()?;
        let requests = services
            .contains(&ServiceName::Requests)
            .then(|| bind("requests.listen", config.requests.listen))
            .transpose()?;
        let console = (services.contains(&ServiceName::Console) && config.console.auth.enabled())
            .then(|| bind("console.listen", config.console.listen))
            .transpose()?;
        Ok(Self {
            admin: Some(bind("admin.listen", config.admin.listen)?),
            web,
            grpc,
            requests,
            console,
        })
    }
}

/// Binds `addr` for the config key `key`, non-blocking for tokio.
pub fn bind(key: &'static str, addr: std::net::SocketAddr) -> Result<StdListener, RunError> {
    let listener = StdListener::bind(addr).map_err(|source| RunError::Bind { key, addr, source })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| RunError::Bind { key, addr, source })?;
    Ok(listener)
}

/// Runs the gateway until `shutdown` is cancelled, then stops cleanly.
pub async fn run(
    config: Config,
    services: Vec<ServiceName>,
    mut listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let health = Health::default();
    let admin_listener = match listeners.admin.take() {
        Some(l) => l,
        None => bind("admin.listen", config.admin.listen)?,
    };
    let admin_stop = CancellationToken::new();
    let admin_task = tokio::spawn(admin::serve(
        tokio::net::TcpListener::from_std(admin_listener).map_err(|source| RunError::Bind {
            key: "admin.listen",
            addr: config.admin.listen,
            source,
        })?,
        health.clone(),
        admin_stop.clone(),
    ));

    let outcome = run_with_admin(&config, services, listeners, &health, &shutdown).await;

    admin_stop.cancel();
    let _ = admin_task.await;
    outcome
}

async fn run_with_admin(
    config: &Config,
    services: Vec<ServiceName>,
    listeners: Listeners,
    health: &Health,
    shutdown: &CancellationToken,
) -> Result<(), RunError> {
    // Checked before anything starts: without it identity keys and log
    // pseudonyms cannot be computed.
    let privacy = config.pseudonymizer()?;
    if !guichet_core::telemetry::install_pseudonym_key(&privacy) {
        tracing::warn!("log pseudonyms keep the key installed first in this process");
    }
    let embedded = match &config.nats.url {
        Some(_) => None,
        None => {
            let e = &config.nats.embedded;
            let password = nats_server::ensure_password(&e.store_dir)?;
            let mut options = NatsServerOptions::embedded(e.binary.clone(), e.port, e.store_dir.clone(), password);
            options.log_file = Some(e.store_dir.join("nats-server.log"));
            let server = NatsServer::start(&options).await?;
            tracing::info!(url = %server.url(), store = %e.store_dir.display(), "embedded nats-server started (loopback, password, fsync per write)");
            Some(server)
        }
    };
    let outcome = async {
        let (urls, nats) = config.nats_client()?;
        let bus = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            bus = Bus::start(&urls, &nats, &config.topology, shutdown) => bus?,
        };
        health.set_bus(bus.clone());
        tracing::info!(servers = %bus.urls(), services = ?services, "NATS ready, topology in place; starting services");
        let context = ServiceContext {
            bus: bus.clone(),
            health: health.clone(),
            instance: config.instance_name(),
            privacy,
        };
        let supervisor = supervisor::Supervisor::start(config, context, &services, listeners, shutdown)?;
        shutdown.cancelled().await;
        tracing::info!("shutting down: stopping intake, finishing in-flight work");
        supervisor.join(config.shutdown_grace).await;
        // Drain: flush what is buffered and close, so that stopping an
        // embedded server afterwards is not reported as an outage.
        if let Err(e) = bus.client().drain().await {
            tracing::warn!(error = %e, "NATS drain at shutdown failed");
        }
        Ok(())
    }
    .await;

    if let Some(server) = embedded {
        server.stop(Duration::from_secs(10)).await;
        tracing::info!("embedded nats-server stopped");
    }
    outcome
}
