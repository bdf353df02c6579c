//! The `[console]` section of the configuration.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use guichet_core::{Error, config::Validate, secret::Secret};
use serde::Deserialize;

/// Where the read model lives and how the projection pulls.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// The web console's listen address (served by the web half).
    pub listen: SocketAddr,
    /// PostgreSQL, e.g. `postgres://guichet@127.0.0.1/guichet_console`;
    /// absent: an embedded SQLite file `<data_dir>/console.sqlite`.
    pub database_url: Option<Secret>,
    /// The directory of the SQLite file when `database_url` is absent.
    pub data_dir: PathBuf,
    /// Prefix of the durable consumers (`<prefix>-routed`, `-events`,
    /// `-deadletter`).
    pub consumer: String,
    /// Messages applied in one SQL transaction at most.
    pub batch: usize,
    /// How long a fetch waits for new messages before the loop looks again.
    #[serde(with = "humantime_serde")]
    pub idle_wait: Duration,
    /// The key of the rules in `guichet_config` (as `router.rules_key`):
    /// the console reads their revisions.
    pub rules_key: String,
    /// `[console.auth]`: who may open the web console (see docs/console.md).
    pub auth: crate::web::AuthConfig,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8090)),
            database_url: None,
            data_dir: "./data".into(),
            consumer: "console".into(),
            batch: 500,
            idle_wait: Duration::from_millis(500),
            rules_key: "rules".into(),
            auth: crate::web::AuthConfig::default(),
        }
    }
}

impl ConsoleConfig {
    /// The database to open: the PostgreSQL URL, or the SQLite file.
    pub fn database(&self) -> Result<String, Error> {
        match &self.database_url {
            Some(url) => url.resolve("console.database_url"),
            None => Ok(format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("console.sqlite").display()
            )),
        }
    }
}

impl Validate for ConsoleConfig {
    fn validate(&self) -> Result<(), Error> {
        self.auth.validate()?;
        if let Some(url) = &self.database_url {
            let url = url.resolve("console.database_url")?;
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(Error::config(
                    "console.database_url",
                    "a PostgreSQL URL (postgres://user@host/database); remove the key for the embedded SQLite file",
                ));
            }
        }
        if self.listen.port() == 0 {
            return Err(Error::config("console.listen", "a fixed port, e.g. 127.0.0.1:8090"));
        }
        if !(1..=10_000).contains(&self.batch) {
            return Err(Error::config("console.batch", "between 1 and 10000 messages"));
        }
        if self.idle_wait < Duration::from_millis(10) || self.idle_wait > Duration::from_secs(60) {
            return Err(Error::config("console.idle_wait", "between 10ms and 60s"));
        }
        if !guichet_core::bus::subjects::is_token(&self.consumer) {
            return Err(Error::config("console.consumer", "letters, digits, '-' and '_' only"));
        }
        Ok(())
    }
}
