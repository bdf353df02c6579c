//! `web`: the web-form intake adapter.
//!
//! Online-procedure platforms POST each form submission to
//! `/v1/forms/{form}/submissions` (JSON, URL-encoded or multipart, signed
//! with the form's shared secret). The adapter maps it to a `Contact` with
//! channel WEB according to the form's configuration, stores uploaded
//! files in the object store, publishes the contact on
//! `guichet.intake.web.<key>`, and answers 202 with the contact id and the
//! request reference only once JetStream has acknowledged it. Errors are
//! `application/problem+json` with a stable `type`.

mod app;
pub mod body;
pub mod config;
pub mod mapping;
pub mod problem;
mod ratelimit;
pub mod receive;
pub mod signature;
mod submit;

use std::sync::Arc;

use axum::{Router, routing::post, serve::ListenerExt};
use guichet_core::ServiceContext;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{FormConfig, Locator, RateLimit, WebConfig};
pub use problem::{PROBLEM_BASE, Problem};
pub use submit::Accepted;

/// The submission route.
pub const SUBMISSIONS_PATH: &str = "/v1/forms/{form}/submissions";

/// Why the web adapter could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// `[web]` is not usable (the message names the key); fix the
    /// configuration, retrying will not help.
    #[error(transparent)]
    Config(#[from] guichet_core::Error),

    /// The HTTP server failed (the listener broke); the supervisor retries.
    #[error("web HTTP server: {0}")]
    Serve(#[source] std::io::Error),
}

/// The HTTP routes of the adapter, for `ctx`'s bus. Fails if `config`
/// does not validate or a secret cannot be read.
pub fn router(ctx: &ServiceContext, config: WebConfig) -> Result<Router, WebError> {
    let app = Arc::new(app::App::new(ctx.bus.clone(), ctx.instance.clone(), config)?);
    Ok(Router::new()
        .route(
            SUBMISSIONS_PATH,
            post(submit::submit).fallback(|| async { Problem::method_not_allowed() }),
        )
        .fallback(|| async { Problem::not_found() })
        .with_state(app))
}

/// Serves the adapter on `listener` until `shutdown`; then stops
/// accepting connections and finishes the requests in progress.
pub async fn run(
    ctx: ServiceContext,
    config: WebConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), WebError> {
    let routes = router(&ctx, config)?;
    // Before the first submission, not during it.
    let _ = tokio::task::spawn_blocking(guichet_core::identity::warm_up).await;
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "web intake listening");
    }
    ctx.health.set_ready("web", true);
    // Answers are small and sent at once: do not let Nagle hold them back.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
    });
    let served = axum::serve(listener, routes)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    ctx.health.set_ready("web", false);
    served.map_err(WebError::Serve)
}
