//! The services' contact details, read from the rules in force.
//!
//! The rules file is the one place where a service is described; notify
//! reads the same `guichet_config` key as the routers, through the rules
//! crate's [`InForce`] (one compilation per revision), so a push reaches
//! the next acknowledgment.

use std::{collections::HashMap, sync::Arc};

use guichet_core::Bus;
use guichet_rules::{InForce, ServiceContact};
use tokio::sync::Mutex;

use crate::NotifyError;

/// Service name → contact details.
pub type Directory = Arc<HashMap<String, ServiceContact>>;

/// The contact details of every service, by revision.
#[derive(Clone, Default)]
pub struct ServiceDirectory {
    rules: InForce,
    cached: Arc<Mutex<(u64, Directory)>>,
}

impl ServiceDirectory {
    /// The details of the rules revision in force now.
    pub async fn current(&self, bus: &Bus, key: &str) -> Result<Directory, NotifyError> {
        let Some(compiled) = self.rules.current(bus, key).await? else {
            return Ok(Directory::default());
        };
        let mut cached = self.cached.lock().await;
        if cached.0 != compiled.revision {
            let map = compiled
                .rules
                .services()
                .iter()
                .map(|s| (s.name.clone(), s.contact.clone()))
                .collect();
            *cached = (compiled.revision, Arc::new(map));
        }
        Ok(cached.1.clone())
    }
}
