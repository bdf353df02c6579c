//! Connecting to NATS with the configured credentials, retrying at start.
//!
//! Once connected, the client reconnects by itself forever; connection
//! events are logged and exported as a metric so that `/readyz` and the
//! dashboards show an outage.

use std::time::Duration;

use async_nats::{ConnectOptions, Event};
use tokio_util::sync::CancellationToken;

use crate::{Error, config::NatsConfig};

pub(super) async fn connect(
    url: &str,
    config: &NatsConfig,
    cancel: &CancellationToken,
) -> Result<async_nats::Client, Error> {
    let deadline = tokio::time::Instant::now() + config.connect_timeout;
    let mut delay = Duration::from_millis(100);
    loop {
        let options = options(config).await?;
        let attempt = tokio::time::timeout(
            config.connect_timeout.min(Duration::from_secs(5)),
            async_nats::connect_with_options(url, options),
        );
        let reason = match attempt.await {
            Ok(Ok(client)) => return Ok(client),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timed out".to_owned(),
        };
        if tokio::time::Instant::now() + delay > deadline {
            return Err(Error::Connect {
                url: url.to_owned(),
                reason: format!("{reason} (gave up after {:?})", config.connect_timeout),
            });
        }
        tracing::warn!(%url, %reason, retry_in = ?delay, "NATS not reachable yet");
        tokio::select! {
            () = cancel.cancelled() => {
                return Err(Error::Connect { url: url.to_owned(), reason: "cancelled during start".into() });
            }
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

async fn options(config: &NatsConfig) -> Result<ConnectOptions, Error> {
    let mut options = match &config.creds_file {
        Some(path) => ConnectOptions::with_credentials_file(path.clone())
            .await
            .map_err(|e| Error::config("nats.creds_file", format!("{}: {e}", path.display())))?,
        None => ConnectOptions::new(),
    };
    options = options
        .name("guichet")
        .connection_timeout(Duration::from_secs(3))
        .max_reconnects(None)
        .event_callback(|event| async move {
            match event {
                Event::Disconnected => {
                    metrics::gauge!("guichet_nats_connected").set(0.0);
                    tracing::warn!("NATS connection lost; reconnecting");
                }
                Event::Connected => {
                    metrics::gauge!("guichet_nats_connected").set(1.0);
                    tracing::info!("NATS connected");
                }
                other => tracing::debug!(event = %other, "NATS event"),
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
