//! Documents ops maintain, kept as revisions of one key of the config
//! bucket (`guichet_config`) and applied live by the services that use
//! them: the routing rules (router), the notification templates (notify).
//!
//! A push validates the text (the caller's check), stores it with who
//! pushed it and from where, and records a `<kind>_pushed` event; the KV
//! revision is the document's revision. Each service loads the newest
//! revision that validates at start ([`load`]) and then [`watch`]es the
//! key: a valid revision is activated, one that fails validation (stored
//! around the CLI, e.g. `nats kv put`) is refused and the previous one
//! stays in force. A rollback pushes an older revision's text again, so
//! the history only grows. The bucket keeps the last 64 revisions.

use async_nats::jetstream::kv::{Entry, Operation};
use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::{Bus, subjects};
use crate::{Error, backoff::Backoff};

/// What is stored under a key: the text and who pushed it. A value that
/// is not this JSON is read as the bare text (stored by hand), and
/// validated like any other.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stored {
    pub text: String,
    /// The file (or directory) it came from.
    pub origin: String,
    /// RFC 3339.
    pub pushed_at: String,
    pub pushed_by: String,
    /// Lower-case hex SHA-256 of `text`.
    pub sha256: String,
}

impl Stored {
    pub fn decode(value: &[u8]) -> Result<Self, String> {
        if let Ok(stored) = serde_json::from_slice::<Stored>(value) {
            return Ok(stored);
        }
        let text = std::str::from_utf8(value).map_err(|_| "the stored value is not UTF-8 text".to_owned())?;
        Ok(Stored {
            text: text.to_owned(),
            origin: "(stored without guichet's push command)".into(),
            pushed_at: String::new(),
            pushed_by: String::new(),
            sha256: sha256_hex(text),
        })
    }
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn store_err(what: String, e: impl std::fmt::Display) -> Error {
    Error::Store {
        store: subjects::CONFIG_BUCKET.to_owned(),
        reason: format!("{what}: {e}"),
    }
}

/// What a push stored.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub revision: u64,
    pub sha256: String,
}

/// Stores `text`, already validated by the caller, as the new revision of
/// `key`, and records the `<kind>_pushed` event (`kind`: "rules",
/// "templates").
pub async fn push(
    bus: &Bus,
    kind: &str,
    key: &str,
    text: &str,
    origin: &str,
    pushed_by: &str,
) -> Result<Pushed, Error> {
    let stored = Stored {
        text: text.to_owned(),
        origin: origin.to_owned(),
        pushed_at: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        pushed_by: pushed_by.to_owned(),
        sha256: sha256_hex(text),
    };
    let value = serde_json::to_vec(&stored).map_err(|e| store_err(format!("encoding `{key}`"), e))?;
    let revision = bus
        .stores()
        .config
        .put(key, Bytes::from(value))
        .await
        .map_err(|e| store_err(format!("storing `{key}`"), e))?;
    let event = serde_json::json!({
        "kind": format!("{kind}_pushed"),
        "key": key,
        "revision": revision,
        "origin": origin,
        "sha256": stored.sha256,
        "pushed_by": pushed_by,
        "at": stored.pushed_at,
    });
    if let Err(e) = bus
        .publish(
            subjects::event(&format!("{kind}_pushed")),
            &format!("{kind}-{key}-{revision}"),
            Bytes::from(event.to_string()),
        )
        .await
    {
        tracing::warn!(kind, error = %e, "pushed, but the audit event was not published");
    }
    Ok(Pushed {
        revision,
        sha256: stored.sha256,
    })
}

/// One revision of a key (serialized as the console's JSON shows it).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Revision {
    pub revision: u64,
    pub deleted: bool,
    pub origin: String,
    pub pushed_at: String,
    pub pushed_by: String,
    pub sha256: String,
    /// Validation outcome with this build's check: `None` when valid.
    pub invalid: Option<String>,
}

/// The kept revisions of `key`, oldest first, each validated with
/// `validate(text, "revision N")`.
pub async fn history(
    bus: &Bus,
    key: &str,
    validate: impl Fn(&str, &str) -> Result<(), String>,
) -> Result<Vec<Revision>, Error> {
    let kv = &bus.stores().config;
    let mut out = Vec::new();
    if kv
        .entry(key)
        .await
        .map_err(|e| store_err(format!("reading `{key}`"), e))?
        .is_none()
    {
        return Ok(out);
    }
    let mut history = kv
        .history(key)
        .await
        .map_err(|e| store_err(format!("reading the history of `{key}`"), e))?;
    while let Some(entry) = history.next().await {
        let entry = entry.map_err(|e| store_err(format!("reading the history of `{key}`"), e))?;
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
        let revision = match Stored::decode(&entry.value) {
            Ok(stored) => Revision {
                revision: entry.revision,
                deleted: false,
                invalid: validate(&stored.text, &format!("revision {}", entry.revision)).err(),
                origin: stored.origin,
                pushed_at: if stored.pushed_at.is_empty() {
                    entry.created.to_string()
                } else {
                    stored.pushed_at
                },
                pushed_by: stored.pushed_by,
                sha256: stored.sha256,
            },
            Err(e) => Revision {
                revision: entry.revision,
                deleted: false,
                origin: String::new(),
                pushed_at: entry.created.to_string(),
                pushed_by: String::new(),
                sha256: String::new(),
                invalid: Some(e),
            },
        };
        out.push(revision);
    }
    Ok(out)
}

/// Revision `revision` of `key`, when the bucket still has it (for a
/// rollback); `None` when unknown, deleted or another key's.
pub async fn stored_revision(bus: &Bus, key: &str, revision: u64) -> Result<Option<Stored>, Error> {
    let entry = bus
        .stores()
        .config
        .entry_for_revision(key, revision)
        .await
        .map_err(|e| store_err(format!("reading revision {revision} of `{key}`"), e))?;
    match entry {
        Some(entry) if entry.key == key && entry.operation == Operation::Put => {
            Stored::decode(&entry.value).map(Some).map_err(|e| Error::Store {
                store: subjects::CONFIG_BUCKET.to_owned(),
                reason: format!("revision {revision} of `{key}`: {e}"),
            })
        }
        _ => Ok(None),
    }
}

fn compile_entry<T>(entry: &Entry, compile: &impl Fn(&Stored, u64) -> Result<T, String>) -> Result<T, String> {
    compile(&Stored::decode(&entry.value)?, entry.revision)
}

/// What [`load`] found.
#[derive(Debug)]
pub struct Loaded<T> {
    /// The newest revision that compiles, with what it compiled to.
    pub active: Option<(u64, T)>,
    /// The last revision looked at: watch after it.
    pub last_seen: u64,
    /// The latest revision, when it was refused (it does not compile).
    pub latest_refused: Option<u64>,
}

/// The newest revision of `key` that `compile` accepts, at start.
pub async fn load<T>(
    bus: &Bus,
    key: &str,
    compile: impl Fn(&Stored, u64) -> Result<T, String>,
) -> Result<Loaded<T>, Error> {
    let kv = &bus.stores().config;
    let latest = kv
        .entry(key)
        .await
        .map_err(|e| store_err(format!("reading `{key}`"), e))?;
    let Some(latest) = latest else {
        return Ok(Loaded {
            active: None,
            last_seen: 0,
            latest_refused: None,
        });
    };
    let last_seen = latest.revision;
    if latest.operation == Operation::Put {
        match compile_entry(&latest, &compile) {
            Ok(value) => {
                return Ok(Loaded {
                    active: Some((latest.revision, value)),
                    last_seen,
                    latest_refused: None,
                });
            }
            Err(e) => tracing::error!(
                key,
                revision = latest.revision,
                error = %e,
                "the latest revision is invalid and is not activated; looking for the newest valid one"
            ),
        }
    }
    // The newest valid revision in the history, newest first.
    let mut history = kv
        .history(key)
        .await
        .map_err(|e| store_err(format!("reading the history of `{key}`"), e))?;
    let mut entries = Vec::new();
    while let Some(entry) = history.next().await {
        entries.push(entry.map_err(|e| store_err(format!("reading the history of `{key}`"), e))?);
    }
    let active = entries
        .iter()
        .rev()
        .filter(|e| e.operation == Operation::Put && e.revision != latest.revision)
        .find_map(|e| compile_entry(e, &compile).ok().map(|value| (e.revision, value)));
    Ok(Loaded {
        active,
        last_seen,
        latest_refused: Some(latest.revision),
    })
}

/// What [`watch`] saw happen to the key.
#[derive(Debug)]
pub enum Change<T> {
    /// A revision that compiles: to be put in force.
    Activated { revision: u64, value: T },
    /// A revision that does not compile: the previous one stays.
    Refused { revision: u64, error: String },
    /// The key was deleted or purged: what is in force stays.
    Deleted { revision: u64 },
}

/// Watches `key` after revision `after` until `shutdown`, handing each new
/// revision, compiled, to `on_change`. A lost watch is re-established
/// after the last revision seen, with backoff.
pub async fn watch<T, F, Fut>(
    bus: Bus,
    key: String,
    mut after: u64,
    compile: impl Fn(&Stored, u64) -> Result<T, String>,
    mut on_change: F,
    shutdown: CancellationToken,
) where
    F: FnMut(Change<T>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let kv = bus.stores().config.clone();
    let mut backoff = Backoff::new(
        std::time::Duration::from_millis(200),
        std::time::Duration::from_secs(10),
    );
    while !shutdown.is_cancelled() {
        let mut watch = match kv.watch_from_revision(&key, after + 1).await {
            Ok(w) => w,
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(key, error = %e, retry_in = ?delay, "cannot watch a config key; retrying");
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
                    tracing::warn!(key, error = %e, "config watch interrupted; watching again");
                    break;
                }
                None => break,
            };
            if entry.revision <= after {
                continue;
            }
            after = entry.revision;
            let change = if entry.operation != Operation::Put {
                Change::Deleted {
                    revision: entry.revision,
                }
            } else {
                match compile_entry(&entry, &compile) {
                    Ok(value) => Change::Activated {
                        revision: entry.revision,
                        value,
                    },
                    Err(error) => Change::Refused {
                        revision: entry.revision,
                        error,
                    },
                }
            };
            on_change(change).await;
        }
    }
}
