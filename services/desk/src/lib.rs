//! Counter, phone and mail-room intake over gRPC, and the usager's unified
//! history.
//!
//! Counter software, the phone platform and the mail room call the `Desk`
//! service (`proto/guichet/v1/desk.proto`):
//! - `RecordContact` turns what an agent logged into a `Contact` (channel
//!   COUNTER, PHONE or POSTAL) on `guichet.intake.<channel>`, exactly once
//!   per `client_request_id`, and answers only after JetStream's PubAck;
//!   with `wait_for_routing` it also waits, bounded, for the router's
//!   decision so the agent can say who handles the request and by when;
//! - `GetUsagerHistory` streams a usager's routed contacts, newest first,
//!   paged, from the ROUTED stream, within the site's history scope, each
//!   page recorded in the access journal before it is returned.
//!
//! Modules: [`config`] (`[desk]`), [`auth`] (bearer token per site),
//! [`record`] and [`history`] (the two calls), [`validate`] (what a
//! recorded contact must satisfy), [`access`] (the journal of history
//! reads), [`state`] (what the handlers share), [`status`] (status codes
//! and field details), [`server`] (tonic, TLS, health, reflection).

pub mod access;
pub mod auth;
pub mod config;
mod error;
pub mod history;
pub mod record;
pub mod server;
pub mod state;
pub mod status;
pub mod validate;

use guichet_core::ServiceContext;
use tokio_util::sync::CancellationToken;

pub use config::{DeskConfig, DeskTlsConfig, HistoryScope, SiteConfig};
pub use error::DeskError;

/// Checks what the service needs before it starts: limits, site tokens
/// (resolved from their files or variables), TLS files. Errors name the
/// configuration key.
pub fn check(config: &DeskConfig) -> Result<(), DeskError> {
    server::prepare(config).map(|_| ())
}

/// Serves the desk gRPC service on `listener` until `shutdown`, then lets
/// in-flight calls finish. Reports `desk` ready once serving.
pub async fn run(
    ctx: ServiceContext,
    config: DeskConfig,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> Result<(), DeskError> {
    // Before the first call, not during it (a caller's deadline is short).
    let _ = tokio::task::spawn_blocking(guichet_core::identity::warm_up).await;
    server::serve(ctx, config, listener, shutdown).await
}
