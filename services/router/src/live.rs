//! Rules maintained by ops, stored in the config bucket and applied live.
//!
//! `guichet rules push` validates a rules file and stores it under the
//! rules key of `guichet_config`; the KV revision is the rules revision.
//! Every router watches that key and swaps its compiled rule set
//! atomically: a contact takes one snapshot when its routing starts and
//! keeps it to the end, so it is decided by exactly one revision, which
//! its `Routed` records. A revision that fails validation (pushed around
//! the CLI, e.g. with `nats kv put`) is never activated: the router keeps
//! the one it has and logs an error.

use std::sync::{Arc, RwLock};

use async_nats::jetstream::kv::{Entry, Operation};
use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use guichet_core::{Bus, admin::Health, backoff::Backoff, bus::subjects};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
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

/// What is stored under the rules key: the text and who pushed it.
/// A value that is not this JSON is read as bare rules text (pushed by
/// hand), and validated like any other.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredRules {
    pub text: String,
    /// The file it came from.
    pub origin: String,
    /// RFC 3339.
    pub pushed_at: String,
    pub pushed_by: String,
    /// Lower-case hex SHA-256 of `text`.
    pub sha256: String,
}

impl StoredRules {
    pub fn decode(value: &[u8]) -> Result<Self, String> {
        if let Ok(stored) = serde_json::from_slice::<StoredRules>(value) {
            return Ok(stored);
        }
        let text = std::str::from_utf8(value).map_err(|_| "the stored value is not UTF-8 text".to_owned())?;
        Ok(StoredRules {
            text: text.to_owned(),
            origin: "(stored without guichet rules push)".into(),
            pushed_at: String::new(),
            pushed_by: String::new(),
            sha256: sha256_hex(text),
        })
    }
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Compiles one stored revision.
fn compile_entry(entry: &Entry) -> Result<Arc<dyn Engine>, String> {
    let stored = StoredRules::decode(&entry.value)?;
    engine::compile(&stored.text, &format!("revision {}", entry.revision))
}

/// Loads the newest valid revision, or the fallback when there is none.
/// Returns the rules and the last revision looked at (to watch after it).
pub async fn load(
    bus: &Bus,
    key: &str,
    fallback_service: &str,
    health: &Health,
) -> Result<(LiveRules, u64), RouterError> {
    let kv = &bus.stores().config;
    let fallback = || Active {
        revision: BUILTIN_REVISION,
        engine: Arc::new(Fallback {
            service: fallback_service.to_owned(),
        }),
    };
    let latest = kv
        .entry(key)
        .await
        .map_err(|e| RouterError::config_store(format!("reading `{key}`"), e))?;
    let Some(latest) = latest else {
        tracing::warn!(
            key,
            service = fallback_service,
            "no rules pushed yet: every contact goes to manual qualification (push rules with `guichet rules push FILE`)"
        );
        return Ok((LiveRules::new(fallback()), 0));
    };
    let last_seen = latest.revision;
    if latest.operation == Operation::Put {
        match compile_entry(&latest) {
            Ok(engine) => {
                tracing::info!(revision = latest.revision, "rules loaded");
                return Ok((
                    LiveRules::new(Active {
                        revision: latest.revision,
                        engine,
                    }),
                    last_seen,
                ));
            }
            Err(e) => tracing::error!(
                revision = latest.revision,
                error = %e,
                "the latest rules revision is invalid and is not activated; looking for the newest valid one"
            ),
        }
    }
    let refused = |kept: u64| {
        health.set_note(HEALTH_NOTE, Some(refused_note(latest.revision, kept)));
    };
    // The newest valid revision in the history, newest first.
    let mut history = kv
        .history(key)
        .await
        .map_err(|e| RouterError::config_store(format!("reading the history of `{key}`"), e))?;
    let mut entries = Vec::new();
    while let Some(entry) = history.next().await {
        let entry = entry.map_err(|e| RouterError::config_store(format!("reading the history of `{key}`"), e))?;
        entries.push(entry);
    }
    for entry in entries.iter().rev() {
        if entry.operation != Operation::Put || entry.revision == latest.revision {
            continue;
        }
        if let Ok(engine) = compile_entry(entry) {
            tracing::warn!(revision = entry.revision, "rules loaded from an older valid revision");
            refused(entry.revision);
            return Ok((
                LiveRules::new(Active {
                    revision: entry.revision,
                    engine,
                }),
                last_seen,
            ));
        }
    }
    tracing::error!(
        key,
        "no valid rules revision: every contact goes to manual qualification"
    );
    refused(BUILTIN_REVISION);
    Ok((LiveRules::new(fallback()), last_seen))
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
    mut after: u64,
    on_activate: F,
    health: Health,
    shutdown: CancellationToken,
) where
    F: Fn(Vec<String>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let kv = bus.stores().config.clone();
    let mut backoff = Backoff::new(
        std::time::Duration::from_millis(200),
        std::time::Duration::from_secs(10),
    );
    while !shutdown.is_cancelled() {
        let watch = kv.watch_from_revision(&key, after + 1).await;
        let mut watch = match watch {
            Ok(w) => w,
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, retry_in = ?delay, "cannot watch the rules key; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
                continue;
            }
        };
        backoff.reset();
        loop {
            let next = tokio::select! {
                () = shutdown.cancelled() => return,
                next = watch.next() => next,
            };
            let entry = match next {
                Some(Ok(entry)) => entry,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "rules watch interrupted; watching again");
                    break;
                }
                None => break,
            };
            if entry.revision <= after {
                continue;
            }
            after = entry.revision;
            if entry.operation != Operation::Put {
                tracing::warn!(
                    revision = entry.revision,
                    "the rules key was deleted; keeping the rules in force (push rules to change them)"
                );
                continue;
            }
            match compile_entry(&entry) {
                Ok(engine) => {
                    let services = with_manual(engine.as_ref());
                    live.swap(Active {
                        revision: entry.revision,
                        engine,
                    });
                    metrics::gauge!("guichet_router_rules_revision").set(entry.revision as f64);
                    health.set_note(HEALTH_NOTE, None);
                    tracing::info!(revision = entry.revision, "rules revision activated");
                    on_activate(services).await;
                }
                Err(e) => {
                    metrics::counter!("guichet_router_rules_refused_total").increment(1);
                    health.set_note(HEALTH_NOTE, Some(refused_note(entry.revision, live.current().revision)));
                    tracing::error!(
                        revision = entry.revision,
                        kept = live.current().revision,
                        error = %e,
                        "rules revision refused: it does not validate; the previous revision stays in force"
                    );
                }
            }
        }
    }
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
    let stored = StoredRules {
        text: text.to_owned(),
        origin: origin.to_owned(),
        pushed_at: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        pushed_by: pushed_by.to_owned(),
        sha256: sha256_hex(text),
    };
    let value = serde_json::to_vec(&stored).map_err(|e| RouterError::Invalid(format!("encoding the rules: {e}")))?;
    let revision = bus
        .stores()
        .config
        .put(key, Bytes::from(value))
        .await
        .map_err(|e| RouterError::config_store(format!("storing `{key}`"), e))?;
    let event = serde_json::json!({
        "kind": "rules_pushed",
        "key": key,
        "revision": revision,
        "origin": origin,
        "sha256": stored.sha256,
        "pushed_by": pushed_by,
        "at": stored.pushed_at,
    });
    if let Err(e) = bus
        .publish(
            subjects::event("rules_pushed"),
            &format!("rules-{key}-{revision}"),
            Bytes::from(event.to_string()),
        )
        .await
    {
        tracing::warn!(error = %e, "rules pushed but the audit event was not published");
    }
    // The queues exist from now on, even before a router sees the push.
    let services = with_manual(engine.as_ref());
    if let Err(e) = crate::dispatch::ensure_queues(bus, &services).await {
        tracing::warn!(error = %e, "rules pushed; the service queues will be created by the routers");
    }
    Ok(Pushed {
        revision,
        services,
        sha256: stored.sha256,
    })
}

/// One revision of the rules key.
#[derive(Debug, Clone)]
pub struct Revision {
    pub revision: u64,
    pub deleted: bool,
    pub origin: String,
    pub pushed_at: String,
    pub pushed_by: String,
    pub sha256: String,
    /// Validation outcome with this build's engine: `None` when valid.
    pub invalid: Option<String>,
}

/// The kept revisions of the rules key, oldest first.
pub async fn history(bus: &Bus, key: &str) -> Result<Vec<Revision>, RouterError> {
    let kv = &bus.stores().config;
    let mut out = Vec::new();
    if kv
        .entry(key)
        .await
        .map_err(|e| RouterError::config_store(format!("reading `{key}`"), e))?
        .is_none()
    {
        return Ok(out);
    }
    let mut history = kv
        .history(key)
        .await
        .map_err(|e| RouterError::config_store(format!("reading the history of `{key}`"), e))?;
    while let Some(entry) = history.next().await {
        let entry = entry.map_err(|e| RouterError::config_store(format!("reading the history of `{key}`"), e))?;
        if entry.operation != Operation::Put {
            out.push(Revision {
                revision: entry.revision,
                deleted: true,
                origin: String::new(),
                pushed_at: entry.created.to_string(),
                pushed_by: String::new(),
                sha256: String::new(),
                invalid: None,
            });
            continue;
        }
        let (stored, invalid) = match StoredRules::decode(&entry.value) {
            Ok(stored) => {
                let invalid = engine::compile(&stored.text, &format!("revision {}", entry.revision)).err();
                (Some(stored), invalid)
            }
            Err(e) => (None, Some(e)),
        };
        let stored = stored.unwrap_or(StoredRules {
            text: String::new(),
            origin: String::new(),
            pushed_at: String::new(),
            pushed_by: String::new(),
            sha256: String::new(),
        });
        out.push(Revision {
            revision: entry.revision,
            deleted: false,
            origin: stored.origin,
            pushed_at: if stored.pushed_at.is_empty() {
                entry.created.to_string()
            } else {
                stored.pushed_at
            },
            pushed_by: stored.pushed_by,
            sha256: stored.sha256,
            invalid,
        });
    }
    Ok(out)
}

/// Pushes the text of an older revision again, validated, as a new one.
pub async fn rollback(bus: &Bus, key: &str, revision: u64, pushed_by: &str) -> Result<Pushed, RouterError> {
    let entry = bus
        .stores()
        .config
        .entry_for_revision(key, revision)
        .await
        .map_err(|e| RouterError::config_store(format!("reading revision {revision} of `{key}`"), e))?;
    let entry = match entry {
        Some(entry) if entry.key == key && entry.operation == Operation::Put => entry,
        _ => {
            return Err(RouterError::NotFound(format!(
                "no rules revision {revision} under `{key}` (see `guichet rules history`; the bucket keeps the last 64)"
            )));
        }
    };
    let stored = StoredRules::decode(&entry.value).map_err(RouterError::RulesRejected)?;
    push(
        bus,
        key,
        &stored.text,
        &format!("rollback to revision {revision} ({})", stored.origin),
        pushed_by,
    )
    .await
}
