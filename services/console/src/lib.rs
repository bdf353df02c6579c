//! console: the operators' read model and indicators (issue 16).
//!
//! The journal — ROUTED, the request events and the other events on
//! EVENTS, DEADLETTER — is [`project`]ed into SQL tables (embedded SQLite
//! by default, PostgreSQL when `console.database_url` is set; see
//! [`store`]) through durable consumers, idempotently: each row carries
//! its stream sequence, and rows and positions move in one transaction.
//! [`apply`] says what each message does; the projection keeps daily
//! counts and delay histograms so the [`indicators`] answer in a few
//! grouped scans. No personal data: references, ids, channels, services,
//! typologies, sites, times and outcomes only.
//!
//! The web console (pages, access, CSV) is built on [`indicators::Console`].

pub mod apply;
pub mod config;
pub mod delays;
mod error;
pub mod indicators;
pub mod project;
pub mod rollup;
pub mod store;
pub mod web;

pub use config::ConsoleConfig;
pub use error::ConsoleError;
use guichet_core::ServiceContext;
pub use indicators::{Console, Filter, Granularity, Overview, Table, ToTables};
pub use project::Projector;
pub use store::Store;
use tokio_util::sync::CancellationToken;

/// Opens the read model of `config` (creating and migrating it).
pub async fn open(config: &ConsoleConfig) -> Result<Store, ConsoleError> {
    let url = config.database().map_err(|e| ConsoleError::Config(e.to_string()))?;
    Store::open(&url).await
}

/// Runs the projection until `shutdown`, and the web console on
/// `listener` when there is one (`console.listen`, bound when
/// `[console.auth]` lets someone in). A failure of either stops both and
/// returns the error: the supervisor starts it again, from the positions
/// in the database.
pub async fn run(
    ctx: ServiceContext,
    config: ConsoleConfig,
    listener: Option<tokio::net::TcpListener>,
    shutdown: CancellationToken,
) -> Result<(), ConsoleError> {
    ctx.health.set_ready("console", false);
    let store = open(&config).await?;
    let web = match listener {
        Some(listener) => {
            let console = Console::with_bus(store.clone(), ctx.bus.clone(), &config.rules_key);
            Some((
                listener,
                std::sync::Arc::new(web::WebState::new(config.auth.clone(), console)?),
            ))
        }
        None => None,
    };
    let mut projector = Projector::start(&ctx.bus, store.clone(), &config.consumer, config.batch).await?;
    ctx.health.set_ready("console", true);
    tracing::info!(
        backend = if store.is_sqlite() { "sqlite" } else { "postgres" },
        web = web.is_some(),
        "console ready: projecting ROUTED, EVENTS and DEADLETTER"
    );
    let stop = shutdown.child_token();
    let serving = async {
        let Some((listener, state)) = web else {
            return Ok(());
        };
        let outcome = web::serve(listener, state, stop.clone()).await;
        stop.cancel();
        outcome
    };
    let projecting = async {
        let outcome = projector.run(config.idle_wait, &stop).await;
        stop.cancel();
        outcome
    };
    let (served, projected) = tokio::join!(serving, projecting);
    store.close().await;
    projected.and(served)
}

/// `guichet indicators rebuild`: empties the read model and projects the
/// streams again from their first message. Returns what was projected.
pub async fn rebuild(bus: &guichet_core::Bus, config: &ConsoleConfig) -> Result<project::Progress, ConsoleError> {
    let store = open(config).await?;
    store.clear().await?;
    let mut projector = Projector::start(bus, store.clone(), &config.consumer, config.batch).await?;
    let progress = projector.catch_up().await;
    store.close().await;
    progress
}
