//! The life of a request after intake.
//!
//! The router opens a request; back-office software moves it forward
//! through the `Requests` gRPC service (`proto/guichet/v1/requests.proto`):
//! take it, ask the usager for missing pieces, answer, close, reopen,
//! transfer to another service. Every transition is checked by one state
//! machine, written to the request record (revision-checked: no lost
//! update) and published as a `RequestEvent` on the journal.
//!
//! Modules: [`lifecycle`] (the state machine, pure), [`clock`] (the
//! engagement and legal deadlines), [`store`] (reading a request, applying
//! a transition), [`events`] (the journal and its repair), [`view`] and
//! [`list`] (what the API shows), [`sweep`] (due-soon and overdue
//! alerts, exactly once, and the gauges), [`acknowledgments`] (the
//! receipt → accusé de réception time, folded into the record), [`auth`] (client tokens scoped to
//! services), [`config`] (`[requests]`), [`server`] (tonic, TLS, health,
//! reflection).

pub mod acknowledgments;
pub mod auth;
pub mod clock;
pub mod config;
mod error;
pub mod events;
pub mod lifecycle;
pub mod list;
pub mod server;
pub mod store;
pub mod sweep;
pub mod view;

use guichet_core::ServiceContext;
use tokio_util::sync::CancellationToken;

pub use config::{ClientConfig, RequestsConfig, RequestsTlsConfig};
pub use error::RequestsError;

/// Checks what the service needs before it starts: limits, client tokens,
/// TLS files. Errors name the configuration key.
pub fn check(config: &RequestsConfig) -> Result<(), RequestsError> {
    server::prepare(config).map(|_| ())
}

/// Serves the `Requests` gRPC service on `listener` until `shutdown`, then
/// lets in-flight calls finish. Reports `requests` ready once serving.
pub async fn run(
    ctx: ServiceContext,
    config: RequestsConfig,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> Result<(), RequestsError> {
    server::serve(ctx, config, listener, shutdown).await
}
