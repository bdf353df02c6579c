//! The services' contact details, read from the rules in force.
//!
//! The rules file is the one place where a service is described; notify
//! reads the same `guichet_config` key as the routers and keeps the last
//! revision it compiled, so a push reaches the next acknowledgment.

use std::{collections::HashMap, sync::Arc};

use guichet_core::Bus;
use guichet_rules::{RuleSet, ServiceContact};
use tokio::sync::Mutex;

use crate::NotifyError;

/// Service name → contact details.
pub type Directory = Arc<HashMap<String, ServiceContact>>;

/// The contact details of every service, by revision.
#[derive(Clone, Default)]
pub struct ServiceDirectory {
    cached: Arc<Mutex<(u64, Directory)>>,
}

impl ServiceDirectory {
    /// The details of the rules revision in force now.
    pub async fn current(&self, bus: &Bus, key: &str) -> Result<Directory, NotifyError> {
        let entry = bus
            .stores()
            .config
            .entry(key)
            .await
            .map_err(|e| NotifyError::jetstream(format!("reading the rules `{key}`"), e))?;
        let mut cached = self.cached.lock().await;
        let Some(entry) = entry else {
            return Ok(cached.1.clone());
        };
        if entry.revision == cached.0 {
            return Ok(cached.1.clone());
        }
        // A revision the routers refuse is refused here too: keep the last good one.
        let text = stored_text(&entry.value);
        match RuleSet::parse(&text, &format!("revision {}", entry.revision)) {
            Ok(rules) => {
                let map = rules
                    .services()
                    .iter()
                    .map(|s| (s.name.clone(), s.contact.clone()))
                    .collect();
                *cached = (entry.revision, Arc::new(map));
            }
            Err(e) => {
                tracing::error!(revision = entry.revision, error = %e, "rules revision refused; keeping the services of the last good one");
                cached.0 = entry.revision;
            }
        }
        Ok(cached.1.clone())
    }
}

/// The rules text of a stored value: the `text` of `guichet rules push`'s
/// JSON record, or the value itself when pushed by hand.
fn stored_text(value: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Stored {
        text: String,
    }
    serde_json::from_slice::<Stored>(value)
        .map(|s| s.text)
        .unwrap_or_else(|_| String::from_utf8_lossy(value).into_owned())
}
