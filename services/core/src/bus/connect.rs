//! Connecting to NATS with the configured credentials, retrying at start.
//!
//! The client is given every listed server: each attempt tries them all
//! (the ones that failed least first), and once connected the client
//! reconnects by itself forever to any of them (or to a node the cluster
//! advertised). Connection events feed the readiness (and so `/readyz`,
//! the logs, and the publishes waiting for a PubAck) and a metric.

use std::{sync::Arc, time::Duration};

use async_nats::{ConnectOptions, Event, ServerAddr};
use tokio_util::sync::CancellationToken;

use super::readiness::Readiness;
use crate::{Error, backoff::Backoff, config::NatsConfig};

/// Connects to any of `servers` (`shown`: their list without credentials,
/// for messages).
///
/// Not `retry_on_initial_connect`: with it, connecting "succeeds" at once
/// and the first JetStream request times out instead, with no word on
/// which server failed and why; this loop keeps the reason and gives up
/// with it after `nats.connect_timeout`.
pub(super) async fn connect(
    servers: Vec<ServerAddr>,
    shown: &str,
    config: &NatsConfig,
    readiness: &Arc<Readiness>,
    cancel: &CancellationToken,
) -> Result<async_nats::Client, Error> {
    let deadline = tokio::time::Instant::now() + config.connect_timeout;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    // Each attempt tries every server; bounded by `connect_timeout`.
    loop {
        let options = options(config, readiness).await?;
        let attempt = tokio::time::timeout(
            config.connect_timeout.min(Duration::from_secs(5)),
            async_nats::connect_with_options(servers.clone(), options),
        );
        let reason = match attempt.await {
            Ok(Ok(client)) => return Ok(client),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timed out".to_owned(),
        };
        let delay = backoff.next_delay();
        if tokio::time::Instant::now() + delay > deadline {
            return Err(Error::Connect {
                url: shown.to_owned(),
                reason: format!("{reason} (gave up after {:?})", config.connect_timeout),
            });
        }
        tracing::warn!(servers = %shown, %reason, retry_in = ?delay, "NATS not reachable yet");
        tokio::select! {
            () = cancel.cancelled() => {
                return Err(Error::Connect { url: shown.to_owned(), reason: "cancelled during start".into() });
            }
            () = tokio::time::sleep(delay) => {}
        }
    }
}

async fn options(config: &NatsConfig, readiness: &Arc<Readiness>) -> Result<ConnectOptions, Error> {
    let mut options = match &config.creds_file {
        Some(path) => ConnectOptions::with_credentials_file(path.clone())
            .await
            .map_err(|e| Error::config("nats.creds_file", format!("{}: {e}", path.display())))?,
        None => ConnectOptions::new(),
    };
    let readiness = Arc::clone(readiness);
    options = options
        .name("guichet")
        .connection_timeout(Duration::from_secs(3))
        .max_reconnects(None)
        .event_callback(move |event| {
            let readiness = Arc::clone(&readiness);
            async move {
                match event {
                    // The readiness logs the transition ("disconnected from NATS").
                    Event::Disconnected => {
                        metrics::gauge!("guichet_nats_connected").set(0.0);
                        readiness.connection(false);
                    }
                    Event::Connected => {
                        metrics::gauge!("guichet_nats_connected").set(1.0);
                        tracing::info!("NATS connected");
                        readiness.connection(true);
                    }
                    other => tracing::debug!(event = %other, "NATS event"),
                }
            }
        });
    if let (Some(user), Some(password)) = (&config.user, &config.password) {
        options = options.user_and_password(user.clone(), password.resolve("nats.password")?);
    }
    if let Some(token) = &config.token {
        options = options.token(token.resolve("nats.token")?);
    }
    if let Some(tls) = &config.tls {
        options = options.require_tls(true);
        if let Some(ca) = &tls.ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
    }
    Ok(options)
}
