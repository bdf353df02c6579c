//! The rules in force, for the services that read them without routing
//! (`requests` for the calendar, `notify` for the services' contact
//! details): the newest valid revision under the rules key of
//! `guichet_config`, compiled once per revision.
//!
//! The routers watch the key and swap their rule set (`guichet-router`'s
//! `live` module, which also keeps the health notes and the service
//! queues); a reader that needs the rules now and then asks this one,
//! which costs one KV read per call and one compilation per new revision.
//! A revision that does not validate is refused here as the routers refuse
//! it: the last good one stays in force (on a first read, the newest valid
//! one of the key's history).

use std::sync::{Arc, Mutex};

use async_nats::jetstream::kv::{Entry, Operation};
use futures::StreamExt;
use guichet_core::{Bus, Error};

use crate::RuleSet;

/// One compiled revision.
#[derive(Debug)]
pub struct Compiled {
    /// The config-KV revision.
    pub revision: u64,
    pub rules: RuleSet,
}

/// The rules in force, cached by revision. Cheap to clone (shared cache).
#[derive(Clone, Debug, Default)]
pub struct InForce {
    /// The last revision looked at, and the last valid one compiled.
    cached: Arc<Mutex<(u64, Option<Arc<Compiled>>)>>,
}

/// The rules text of a stored value: the `text` of `guichet rules push`'s
/// JSON record, or the value itself when pushed by hand.
pub fn stored_text(value: &[u8]) -> Result<String, String> {
    #[derive(serde::Deserialize)]
    struct Stored {
        text: String,
    }
    if let Ok(stored) = serde_json::from_slice::<Stored>(value) {
        return Ok(stored.text);
    }
    std::str::from_utf8(value)
        .map(str::to_owned)
        .map_err(|_| "the stored value is not UTF-8 text".to_owned())
}

fn compile(entry: &Entry) -> Result<Compiled, String> {
    let text = stored_text(&entry.value)?;
    let rules = RuleSet::parse(&text, &format!("revision {}", entry.revision)).map_err(|e| e.to_string())?;
    Ok(Compiled {
        revision: entry.revision,
        rules,
    })
}

fn unavailable(what: String, e: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("{what}: {e}"))
}

impl InForce {
    /// The rules in force under `key` now; `None` while no valid rules
    /// were ever pushed. Errors only when the bucket cannot be read.
    pub async fn current(&self, bus: &Bus, key: &str) -> Result<Option<Arc<Compiled>>, Error> {
        let kv = &bus.stores().config;
        let latest = kv
            .entry(key)
            .await
            .map_err(|e| unavailable(format!("reading the rules `{key}`"), e))?;
        let (seen, kept) = self.snapshot();
        let Some(latest) = latest else {
            return Ok(kept);
        };
        if latest.revision == seen {
            return Ok(kept);
        }
        if latest.operation == Operation::Put {
            match compile(&latest) {
                Ok(compiled) => return Ok(self.keep(latest.revision, Some(Arc::new(compiled)))),
                Err(e) => tracing::error!(
                    revision = latest.revision,
                    error = %e,
                    "rules revision refused: it does not validate; the previous revision stays in force"
                ),
            }
        }
        if kept.is_some() {
            return Ok(self.keep(latest.revision, kept));
        }
        // First read and the latest revision is refused (or deleted): the
        // newest valid one of the history, as a router starting now does.
        let mut history = kv
            .history(key)
            .await
            .map_err(|e| unavailable(format!("reading the history of `{key}`"), e))?;
        let mut newest_valid = None;
        while let Some(entry) = history.next().await {
            let entry = entry.map_err(|e| unavailable(format!("reading the history of `{key}`"), e))?;
            if entry.operation == Operation::Put
                && entry.revision != latest.revision
                && let Ok(compiled) = compile(&entry)
            {
                newest_valid = Some(Arc::new(compiled));
            }
        }
        Ok(self.keep(latest.revision, newest_valid))
    }

    fn snapshot(&self) -> (u64, Option<Arc<Compiled>>) {
        match self.cached.lock() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Records `seen` as looked at and `kept` as in force, unless another
    /// call already recorded a later revision.
    fn keep(&self, seen: u64, kept: Option<Arc<Compiled>>) -> Option<Arc<Compiled>> {
        let mut guard = match self.cached.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if seen >= guard.0 {
            *guard = (seen, kept);
        }
        guard.1.clone()
    }
}
