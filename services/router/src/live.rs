//! Rules maintained by ops, stored in the config bucket and applied live.
//!
//! `guichet rules push` validates a rules file and stores it under the
//! rules key of `guichet_config`; the KV revision is the rules revision.
//! Every router watches that key and swaps its compiled rule set
//! atomically: a contact takes one snapshot when its routing starts and
//! keeps it to the end, so it is decided by exactly one revision, which
//! its `Routed` records. A revision that fails validation (pushed around
//! the CLI, e.g. with `nats kv put`) is never activated: the router keeps
//! the one it has and logs an error. The revisions themselves (store,
//! history, watch) are `guichet_core::bus::revisions`, shared with the
//! notification templates.

use std::sync::{Arc, RwLock};

pub use guichet_core::bus::revisions::Revision;
use guichet_core::{
    Bus,
    admin::Health,
    bus::revisions::{self, Change, Stored},
};
use tokio_util::sync::CancellationToken;

use crate::{
    RouterError,
    engine::{self, Engine, Fallback},
};

/// The revision recorded while no rules were ever pushed.
pub const BUILTIN_REVISION: u64 = 0;

/// The rule set in force, with its revision.
pub struct Active {
    /// The config-KV revision; [`BUILTIN_REVISION`] for the fallback.
    pub revision: u64,
    pub engine: Arc<dyn Engine>,
}

impl std::fmt::Debug for Active {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Active")
            .field("revision", &self.revision)
            .finish_non_exhaustive()
    }
}

/// The router's current rules, swapped atomically. Cheap to clone.
#[derive(Clone, Debug)]
pub struct LiveRules {
    current: Arc<RwLock<Arc<Active>>>,
}

impl LiveRules {
    pub fn new(active: Active) -> Self {
        Self {
            current: Arc::new(RwLock::new(Arc::new(active))),
        }
    }

    /// A snapshot: keep it for the whole routing of one contact.
    pub fn current(&self) -> Arc<Active> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn swap(&self, active: Active) {
        let active = Arc::new(active);
        match self.current.write() {
            Ok(mut guard) => *guard = active,
            Err(poisoned) => *poisoned.into_inner() = active,
        }
    }
}

/// Compiles one stored revision.
fn compile_stored(stored: &Stored, revision: u64) -> Result<Arc<dyn Engine>, String> {
    engine::compile(&stored.text, &format!("revision {revision}"))
}

/// Loads the newest valid revision, or the fallback when there is none.
/// Returns the rules and the last revision looked at (to watch after it).
pub async fn load(
    bus: &Bus,
    key: &str,
    fallback_service: &str,
    health: &Health,
) -> Result<(LiveRules, u64), RouterError> {
    let fallback = || Active {
        revision: BUILTIN_REVISION,
        engine: Arc::new(Fallback {
            service: fallback_service.to_owned(),
        }),
    };
    let loaded = revisions::load(bus, key, compile_stored).await?;
    let kept = loaded
        .active
        .as_ref()
        .map_or(BUILTIN_REVISION, |(revision, _)| *revision);
    if let Some(refused) = loaded.latest_refused {
        health.set_note(HEALTH_NOTE, Some(refused_note(refused, kept)));
    }
    let rules = match loaded.active {
        Some((revision, engine)) => {
            if loaded.latest_refused.is_some() {
                tracing::warn!(revision, "rules loaded from an older valid revision");
            } else {
                tracing::info!(revision, "rules loaded");
            }
            LiveRules::new(Active { revision, engine })
        }
        None if loaded.latest_refused.is_some() => {
            tracing::error!(
                key,
                "no valid rules revision: every contact goes to manual qualification"
            );
            LiveRules::new(fallback())
        }
        None => {
            tracing::warn!(
                key,
                service = fallback_service,
                "no rules pushed yet: every contact goes to manual qualification (push rules with `guichet rules push FILE`)"
            );
            LiveRules::new(fallback())
        }
    };
    Ok((rules, loaded.last_seen))
}

/// What `/readyz` notes while the latest revision is refused.
const HEALTH_NOTE: &str = "router.rules";

/// Watches the rules key after `after` and activates each valid revision;
/// `on_activate` runs with the services of each activated rule set. A
/// refused revision is noted on `health` (shown by `/readyz`, without
/// turning unready: the previous rules route) until a valid one comes.
pub async fn watch<F, Fut>(
    bus: Bus,
    key: String,
    live: LiveRules,
    after: u64,
    on_activate: F,
    health: Health,
    shutdown: CancellationToken,
) where
    F: Fn(Vec<String>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let on_activate = &on_activate;
    let on_change = |change: Change<Arc<dyn Engine>>| {
        let live = live.clone();
        let health = health.clone();
        async move {
            match change {
                Change::Activated {
                    revision,
                    value: engine,
                } => {
                    let services = with_manual(engine.as_ref());
                    live.swap(Active { revision, engine });
                    metrics::gauge!("guichet_router_rules_revision").set(revision as f64);
                    health.set_note(HEALTH_NOTE, None);
                    tracing::info!(revision, "rules revision activated");
                    on_activate(services).await;
                }
                Change::Refused { revision, error } => {
                    metrics::counter!("guichet_router_rules_refused_total").increment(1);
                    let kept = live.current().revision;
                    health.set_note(HEALTH_NOTE, Some(refused_note(revision, kept)));
                    tracing::error!(
                        revision,
                        kept,
                        error = %error,
                        "rules revision refused: it does not validate; the previous revision stays in force"
                    );
                }
                Change::Deleted { revision } => tracing::warn!(
                    revision,
                    "the rules key was deleted; keeping the rules in force (push rules to change them)"
                ),
            }
        }
    };
    revisions::watch(bus, key, after, compile_stored, on_change, shutdown).await;
}

/// What `/readyz` says while revision `refused` is not in force.
fn refused_note(refused: u64, kept: u64) -> String {
    let kept = if kept == BUILTIN_REVISION {
        "no valid revision: every contact goes to manual qualification".to_owned()
    } else {
        format!("revision {kept} stays in force")
    };
    format!("rules revision {refused} refused (it does not validate: `guichet rules history` says why); {kept}")
}

/// The services of a rule set, its manual-qualification service included.
pub fn with_manual(engine: &dyn Engine) -> Vec<String> {
    let mut services = engine.services();
    let manual = engine.manual_service();
    if !services.contains(&manual) {
        services.push(manual);
    }
    services.sort();
    services.dedup();
    services
}

/// What a push stored.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub revision: u64,
    pub services: Vec<String>,
    pub sha256: String,
}

/// Validates `text` and stores it as the new rules revision.
pub async fn push(bus: &Bus, key: &str, text: &str, origin: &str, pushed_by: &str) -> Result<Pushed, RouterError> {
    let engine = engine::compile(text, origin).map_err(RouterError::RulesRejected)?;
    let pushed = revisions::push(bus, "rules", key, text, origin, pushed_by).await?;
    // The queues exist from now on, even before a router sees the push.
    let services = with_manual(engine.as_ref());
    if let Err(e) = crate::dispatch::ensure_queues(bus, &services).await {
        tracing::warn!(error = %e, "rules pushed; the service queues will be created by the routers");
    }
    Ok(Pushed {
        revision: pushed.revision,
        services,
        sha256: pushed.sha256,
    })
}

/// The kept revisions of the rules key, oldest first.
pub async fn history(bus: &Bus, key: &str) -> Result<Vec<Revision>, RouterError> {
    Ok(revisions::history(bus, key, |text, origin| engine::compile(text, origin).map(|_| ())).await?)
}

/// Pushes the text of an older revision again, validated, as a new one.
pub async fn rollback(bus: &Bus, key: &str, revision: u64, pushed_by: &str) -> Result<Pushed, RouterError> {
    let stored = revisions::stored_revision(bus, key, revision).await?.ok_or_else(|| {
        RouterError::NotFound(format!(
            "no rules revision {revision} under `{key}` (see `guichet rules history`; the bucket keeps the last 64)"
        ))
    })?;
    push(
        bus,
        key,
        &stored.text,
        &format!("rollback to revision {revision} ({})", stored.origin),
        pushed_by,
    )
    .await
}
