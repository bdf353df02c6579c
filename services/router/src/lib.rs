//! The router: reads every contact from INTAKE and turns it into a routed
//! request in the right service's queue.
//!
//! Per contact ([`route::Router::route`]): resolve the usager id
//! ([`identity`], from the [`identity_cache`] when it can), recognize a follow-up of an existing request
//! ([`requests`]), evaluate the ops rules in force ([`live`], through the
//! [`engine`] seam), open or join the request, publish one `Routed` on
//! `guichet.routed.<service>.<usager>` ([`dispatch`]), then ack the intake
//! message ([`consumer`]). [`admin`] holds what the operators' commands
//! do: merge and forget usagers (with [`erase_files`]), explain a decision, look at a queue;
//! [`deadletter`] lists, replays and discards what the router gave up on;
//! [`rules_replay`] compares candidate rules with past decisions;
//! [`streams`] reads a stream's messages for them. Identity [`levels`]
//! weigh claims; [`usager_records`] hold what each usager is known by;
//! [`identity_conflicts`] holds the conflicts for review.

pub mod admin;
pub mod config;
pub mod consumer;
pub mod deadletter;
pub mod dispatch;
pub mod engine;
pub mod erase_files;
mod error;
pub mod follow_up;
pub mod identity;
pub mod identity_cache;
pub mod identity_conflicts;
pub mod levels;
pub mod live;
pub mod pull;
pub mod rekey;
pub mod requests;
pub mod route;
pub mod rules_replay;
pub mod streams;
pub mod tombstones;
pub mod usager_records;

pub use config::RouterConfig;
pub use error::RouterError;

use std::sync::Arc;

use guichet_core::{ServiceContext, proto::v1::Contact};
use tokio_util::sync::CancellationToken;

/// Test hooks: points where a test can make routing fail as a bug would.
#[derive(Clone, Default)]
#[doc(hidden)]
pub struct Hooks {
    /// Called with each contact before it is routed.
    #[allow(clippy::type_complexity)]
    pub before_route: Option<Arc<dyn Fn(&Contact) + Send + Sync>>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("before_route", &self.before_route.is_some())
            .finish()
    }
}

/// Runs one router until `shutdown`: stops fetching, finishes the
/// contacts in hand, and returns.
pub async fn run(ctx: ServiceContext, config: RouterConfig, shutdown: CancellationToken) -> Result<(), RouterError> {
    run_with_hooks(ctx, config, shutdown, Hooks::default()).await
}

#[doc(hidden)]
pub async fn run_with_hooks(
    ctx: ServiceContext,
    config: RouterConfig,
    shutdown: CancellationToken,
    hooks: Hooks,
) -> Result<(), RouterError> {
    let bus = ctx.bus.clone();
    let (rules, last_seen) = live::load(&bus, &config.rules_key, &config.fallback_service, &ctx.health).await?;
    let active = rules.current();
    metrics::gauge!("guichet_router_rules_revision").set(active.revision as f64);
    dispatch::ensure_queues(&bus, &live::with_manual(active.engine.as_ref())).await?;
    drop(active);

    let watch_stop = shutdown.child_token();
    let watcher = {
        let bus = bus.clone();
        let queues_bus = bus.clone();
        tokio::spawn(live::watch(
            bus,
            config.rules_key.clone(),
            rules.clone(),
            last_seen,
            move |services| {
                let bus = queues_bus.clone();
                async move {
                    if let Err(e) = dispatch::ensure_queues(&bus, &services).await {
                        tracing::error!(error = %e, "service queues not all created; they will be on the next start or push");
                    }
                }
            },
            ctx.health.clone(),
            watch_stop.clone(),
        ))
    };

    // Set up before the router says it is ready: lookups must not start
    // on a cache that has no watch yet.
    let started = async {
        let cache = if config.identity_cache {
            Some(identity_cache::IdentityCache::start(&bus, config.identity_cache_entries, watch_stop.clone()).await?)
        } else {
            None
        };
        let consumer = pull::ensure_intake_consumer(&bus, &config).await?;
        Ok::<_, RouterError>((cache, consumer))
    }
    .await;
    let (cache, consumer) = match started {
        Ok(started) => started,
        Err(e) => {
            watch_stop.cancel();
            let _ = watcher.await;
            return Err(e);
        }
    };
    let (identity_cache, cache_task) = cache.unzip();
    let mut router = route::Router::new(bus.clone(), rules, ctx.privacy.clone())
        .with_crosspost_window(config.crosspost_window)
        .with_hooks(hooks)
        .with_reopen_window(config.reopen_window);
    if let Some(cache) = identity_cache {
        router = router.with_identity_cache(cache);
    }
    let health = ctx.health.clone();
    let outcome = consumer::consume(consumer, router, bus, config, shutdown, move || {
        health.set_ready("router", true);
        tracing::info!("router ready: routing contacts from INTAKE");
    })
    .await;
    watch_stop.cancel();
    let _ = watcher.await;
    if let Some(task) = cache_task {
        let _ = task.await;
    }
    outcome
}
