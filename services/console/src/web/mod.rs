//! The web console: server-rendered HTML on its own listener
//! (`console.listen`), for directors, elected officials and the GRU team.
//!
//! Pages ([`pages`]) present the indicators and lists of
//! [`crate::indicators::Console`]: each chart is server-rendered SVG
//! ([`chart`]) followed by its data table, and every table downloads as
//! CSV ([`csv`]). `/api/…` gives the same data as JSON. Everything the
//! pages need (templates, stylesheet) is embedded in the binary; nothing
//! is fetched from elsewhere. Access ([`auth`]) is by a trusted proxy's
//! header or a local account; see docs/console.md.

pub mod auth;
pub mod chart;
pub mod config;
pub mod csv;
mod pages;
pub mod render;
pub mod session;
pub mod throttle;

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Router,
    extract::DefaultBodyLimit,
    http::{HeaderName, HeaderValue, header},
    response::IntoResponse,
    routing::{get, post},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use auth::{hash_password, verify_password};
pub use config::{Account, AuthConfig, Role};

use crate::{ConsoleError, indicators::Console};
use config::IpNet;
use session::Signer;
use throttle::Throttle;

/// Largest login or logout form accepted, in bytes.
const MAX_FORM_BYTES: usize = 16 * 1024;

/// What the handlers share.
pub struct WebState {
    pub(crate) auth: AuthConfig,
    trusted: Vec<IpNet>,
    proxy_header: Option<HeaderName>,
    pub(crate) signer: Signer,
    pub(crate) throttle: Throttle,
    /// The hash an unknown user's password is checked against (same cost).
    pub(crate) dummy_hash: String,
    pub(crate) console: Console,
}

impl WebState {
    /// Checks `auth` and prepares the keys; `console` answers the queries.
    pub fn new(auth: AuthConfig, console: Console) -> Result<Self, ConsoleError> {
        use guichet_core::config::Validate;
        auth.validate().map_err(|e| ConsoleError::Config(e.to_string()))?;
        if !auth.enabled() {
            return Err(ConsoleError::Config(format!(
                "console.auth: {}",
                config::NOBODY_CAN_SIGN_IN
            )));
        }
        let signer = match auth
            .session_key_bytes()
            .map_err(|e| ConsoleError::Config(e.to_string()))?
        {
            Some(key) => Signer::new(key),
            None => Signer::random(),
        };
        let proxy_header = match &auth.proxy_header {
            Some(h) => Some(
                HeaderName::from_bytes(h.as_bytes())
                    .map_err(|e| ConsoleError::Config(format!("console.auth.proxy_header: {e}")))?,
            ),
            None => None,
        };
        let dummy_hash = hash_password(&session::random_token())?;
        Ok(Self {
            trusted: auth.trusted_nets(),
            proxy_header,
            signer,
            throttle: Throttle::new(auth.login_failures, auth.login_window, auth.login_tracked_clients),
            dummy_hash,
            auth,
            console,
        })
    }
}

/// The console's routes.
pub fn router(state: Arc<WebState>) -> Router {
    Router::new()
        .route("/login", get(auth::login_form).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/assets/console.css", get(stylesheet))
        // Browsers ask for it on every site: no redirect to the login form.
        .route("/favicon.ico", get(|| async { axum::http::StatusCode::NO_CONTENT }))
        .merge(pages::routes())
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        render::CSS,
    )
}

/// No framing (clickjacking), nothing loaded from elsewhere, no caching of
/// pages with data in shared caches.
async fn security_headers(mut r: axum::response::Response) -> axum::response::Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    r
}

/// Serves the console on `listener` until `shutdown`, then finishes the
/// requests in progress.
pub async fn serve(
    listener: TcpListener,
    state: Arc<WebState>,
    shutdown: CancellationToken,
) -> Result<(), ConsoleError> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "web console listening");
    }
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await
    .map_err(|e| ConsoleError::Bus(format!("web console HTTP server (retry): {e}")))
}
