//! `guichet run`: the gateway, until SIGINT or SIGTERM.

use std::path::Path;

use clap::Args;
use guichet::{Listeners, ServiceName};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Services to run in this process, comma-separated: mail, web, desk,
    /// router, requests, notify, console. The four intake services by default; add
    /// `requests` (it needs `[requests.clients]`) to serve the back-office
    /// API, `notify` once `[notify]` is configured (it writes to usagers), and
    /// `console` for the indicators' read model.
    #[arg(long, value_name = "LIST", default_value = "mail,web,desk,router")]
    pub services: String,
}

pub async fn run(config_path: &Path, args: RunArgs) -> anyhow::Result<()> {
    let services = ServiceName::parse_list(&args.services)?;
    if services.is_empty() {
        anyhow::bail!(
            "--services names no service (expected some of: mail, web, desk, router, requests, notify, console)"
        );
    }
    let config = super::load_config(config_path)?;
    guichet_core::telemetry::init_tracing(&config.log);
    let _ = guichet_core::telemetry::metrics();
    let listeners = Listeners::bind(&config, &services)?;

    let shutdown = CancellationToken::new();
    tokio::spawn(wait_for_signal(shutdown.clone()));
    guichet::run(config, services, listeners, shutdown).await?;
    tracing::info!("guichet stopped");
    Ok(())
}

async fn wait_for_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; stop with SIGINT");
            let _ = tokio::signal::ctrl_c().await;
            shutdown.cancel();
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = term.recv() => tracing::info!("SIGTERM received"),
    }
    shutdown.cancel();
}
