//! The templates ops push (`guichet templates push|history|rollback`),
//! kept as revisions of `notify.templates_key` in `guichet_config` and
//! applied live, like the rules (see `guichet_core::bus::revisions`).
//!
//! A revision is the whole set: a JSON object, template name → source.
//! A push runs the same check as `guichet templates check` (every
//! template renders against the samples, every R112-5 mention present)
//! and stores nothing when it fails. Every notify process watches the key
//! and swaps the set it renders with; a revision stored around the CLI
//! that fails the check is refused and the set in force stays. Until a
//! first push, notify renders with `notify.templates_dir` or the built-in
//! templates.

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
};

use guichet_core::{
    Bus,
    bus::revisions::{self, Change, Pushed, Revision, Stored},
};
use tokio_util::sync::CancellationToken;

use crate::{
    NotifyError,
    templates::{self, Templates},
};

/// The set notify renders with, swapped atomically. Cheap to clone.
#[derive(Clone, Debug)]
pub struct LiveTemplates {
    current: Arc<RwLock<(u64, Arc<Templates>)>>,
}

impl LiveTemplates {
    /// `revision` 0: the files (`notify.templates_dir` or built-in).
    pub fn new(revision: u64, templates: Templates) -> Self {
        Self {
            current: Arc::new(RwLock::new((revision, Arc::new(templates)))),
        }
    }

    /// The set in force and its revision: keep it for one whole message.
    pub fn current(&self) -> (u64, Arc<Templates>) {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn swap(&self, revision: u64, templates: Templates) {
        let next = (revision, Arc::new(templates));
        match self.current.write() {
            Ok(mut guard) => *guard = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
    }
}

/// The text stored for a set of templates.
pub fn encode(sources: &BTreeMap<String, String>) -> Result<String, NotifyError> {
    serde_json::to_string_pretty(sources).map_err(|e| NotifyError::Template(format!("encoding the templates: {e}")))
}

/// A stored set, checked and compiled; the error says why it is refused.
pub fn compile_text(text: &str, origin: &str) -> Result<Templates, String> {
    let sources: BTreeMap<String, String> = serde_json::from_str(text)
        .map_err(|e| format!("{origin}: not a set of templates (a JSON object, name → source): {e}"))?;
    templates::check(&sources).map_err(|problems| format!("{origin}: {}", problems.join("; ")))?;
    Templates::compile(sources).map_err(|e| format!("{origin}: {e}"))
}

fn compile_stored(stored: &Stored, revision: u64) -> Result<Templates, String> {
    compile_text(&stored.text, &format!("revision {revision}"))
}

/// Checks `sources` like `guichet templates check` and stores them as a
/// new revision; refused (nothing stored) with every problem found.
pub async fn push(
    bus: &Bus,
    key: &str,
    sources: &BTreeMap<String, String>,
    origin: &str,
    pushed_by: &str,
) -> Result<Pushed, NotifyError> {
    if let Err(problems) = templates::check(sources) {
        return Err(NotifyError::Template(format!(
            "{origin}: refused, nothing stored: {}",
            problems.join("; ")
        )));
    }
    Ok(revisions::push(bus, "templates", key, &encode(sources)?, origin, pushed_by).await?)
}

/// The kept revisions, oldest first, each checked with this build.
pub async fn history(bus: &Bus, key: &str) -> Result<Vec<Revision>, NotifyError> {
    Ok(revisions::history(bus, key, |text, origin| compile_text(text, origin).map(|_| ())).await?)
}

/// Pushes the set of an older revision again, checked, as a new one.
pub async fn rollback(bus: &Bus, key: &str, revision: u64, pushed_by: &str) -> Result<Pushed, NotifyError> {
    let stored = revisions::stored_revision(bus, key, revision).await?.ok_or_else(|| {
        NotifyError::NotFound(format!(
            "no templates revision {revision} under `{key}` (see `guichet templates history`; the bucket keeps the last 64)"
        ))
    })?;
    let sources: BTreeMap<String, String> = serde_json::from_str(&stored.text)
        .map_err(|e| NotifyError::Template(format!("revision {revision} is not a set of templates: {e}")))?;
    push(
        bus,
        key,
        &sources,
        &format!("rollback to revision {revision} ({})", stored.origin),
        pushed_by,
    )
    .await
}

/// The set in force at start: the newest pushed revision that passes the
/// check, else `files` (already checked). Returns it and the last
/// revision looked at, to watch after.
pub async fn load(bus: &Bus, key: &str, files: Templates) -> Result<(LiveTemplates, u64), NotifyError> {
    let loaded = revisions::load(bus, key, compile_stored).await?;
    if let Some(refused) = loaded.latest_refused {
        tracing::error!(
            revision = refused,
            "the latest templates revision fails the check and is not used"
        );
    }
    let live = match loaded.active {
        Some((revision, templates)) => {
            tracing::info!(revision, "pushed templates loaded");
            LiveTemplates::new(revision, templates)
        }
        None => LiveTemplates::new(0, files),
    };
    metrics::gauge!("guichet_notify_templates_revision").set(live.current().0 as f64);
    Ok((live, loaded.last_seen))
}

/// Applies every new revision of `key` that passes the check, until `shutdown`.
pub async fn watch(bus: Bus, key: String, live: LiveTemplates, after: u64, shutdown: CancellationToken) {
    let on_change = |change: Change<Templates>| {
        let live = live.clone();
        async move {
            match change {
                Change::Activated { revision, value } => {
                    live.swap(revision, value);
                    metrics::gauge!("guichet_notify_templates_revision").set(revision as f64);
                    tracing::info!(revision, "templates revision activated");
                }
                Change::Refused { revision, error } => {
                    metrics::counter!("guichet_notify_templates_refused_total").increment(1);
                    tracing::error!(
                        revision,
                        kept = live.current().0,
                        error = %error,
                        "templates revision refused: it fails the check; the set in force stays"
                    );
                }
                Change::Deleted { revision } => {
                    tracing::warn!(revision, "the templates key was deleted; keeping the set in force");
                }
            }
        }
    };
    revisions::watch(bus, key, after, compile_stored, on_change, shutdown).await;
}
