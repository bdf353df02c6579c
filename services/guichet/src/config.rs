//! The gateway's configuration file: the core sections and one section
//! per service. See `deploy/guichet.example.toml` for every key.

use std::time::Duration;

use guichet_core::privacy::{self, PrivacyConfig, Pseudonymizer};
use guichet_core::{
    Error,
    config::{AdminConfig, LogConfig, NatsConfig, TopologyConfig, Validate},
    nats_server,
    secret::Secret,
};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Name of this process in logs and traces; defaults to the host name.
    pub instance: Option<String>,
    /// How long services get to finish in-flight work at shutdown.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    pub nats: NatsConfig,
    pub topology: TopologyConfig,
    pub admin: AdminConfig,
    pub log: LogConfig,
    /// `[privacy]`: the key of log pseudonyms and identity keys, required
    /// by `guichet run` and the commands that compute identity keys.
    pub privacy: PrivacyConfig,
    /// `[web]`: the web-form intake adapter.
    pub web: guichet_web::WebConfig,
    /// `[router]`: routing contacts from INTAKE to the service queues.
    pub router: guichet_router::RouterConfig,
    /// `[desk]`: counter, phone and mail-room intake over gRPC.
    pub desk: guichet_desk::DeskConfig,
    /// `[mail]`: the shared mailboxes watched over IMAP.
    pub mail: guichet_mail::MailConfig,
    /// `[requests]`: the back-office API of the request lifecycle.
    pub requests: guichet_requests::RequestsConfig,
    /// `[notify]`: the accusé de réception by e-mail.
    pub notify: guichet_notify::NotifyConfig,
    /// `[console]`: the read model of the indicators, and the web console.
    pub console: guichet_console::ConsoleConfig,
    // Service sections: each service crate owns its config type.
}

impl Default for Config {
    fn default() -> Self {
        Self {
            instance: None,
            shutdown_grace: Duration::from_secs(20),
            nats: NatsConfig::default(),
            topology: TopologyConfig::default(),
            admin: AdminConfig::default(),
            log: LogConfig::default(),
            privacy: PrivacyConfig::default(),
            desk: guichet_desk::DeskConfig::default(),
            mail: guichet_mail::MailConfig::default(),
            requests: guichet_requests::RequestsConfig::default(),
            notify: guichet_notify::NotifyConfig::default(),
            console: guichet_console::ConsoleConfig::default(),
            router: guichet_router::RouterConfig::default(),
            web: guichet_web::WebConfig::default(),
        }
    }
}

impl Config {
    /// Loads and validates `path` with `GUICHET__…` overrides.
    pub fn load(path: &std::path::Path) -> Result<Self, Error> {
        guichet_core::config::load(path)
    }

    /// The pseudonymizer of `privacy.pseudonym_key`: read and checked
    /// (at least 32 bytes). Required: without it identity keys and log
    /// pseudonyms would be plain hashes, reversible with a dictionary.
    pub fn pseudonymizer(&self) -> Result<Pseudonymizer, Error> {
        Pseudonymizer::from_config(&self.privacy)?.ok_or_else(|| {
            Error::config(
                privacy::KEY_NAME,
                "required: a secret of at least 32 bytes, e.g. `pseudonym_key = { file = \"/etc/guichet/pseudonym.key\" }` \
                 with `head -c 32 /dev/urandom | base64 > /etc/guichet/pseudonym.key` (scripts/run generates one into data/)",
            )
        })
    }

    pub fn instance_name(&self) -> String {
        self.instance.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "guichet".to_owned())
        })
    }

    /// The servers and the client settings every command uses (`guichet
    /// run`, `rules push`, `usager forget` …): the configured ones, or the
    /// embedded broker's loopback port with the password generated into
    /// its store directory at its first start.
    pub fn nats_client(&self) -> Result<(Vec<String>, NatsConfig), Error> {
        match &self.nats.url {
            Some(urls) => Ok((urls.to_vec(), self.nats.clone())),
            None => {
                let embedded = &self.nats.embedded;
                // Read now: a missing or world-readable file is named
                // here rather than as a refused connection later.
                nats_server::read_password(&embedded.store_dir)?;
                let nats = NatsConfig {
                    user: Some(nats_server::EMBEDDED_USER.to_owned()),
                    password: Some(Secret::File {
                        file: nats_server::password_file(&embedded.store_dir),
                    }),
                    ..self.nats.clone()
                };
                Ok((vec![format!("nats://127.0.0.1:{}", embedded.port)], nats))
            }
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), Error> {
        if let Some(name) = &self.instance
            && !guichet_core::bus::subjects::is_token(name)
        {
            return Err(Error::config(
                "instance",
                "letters, digits, '-' and '_' only (at most 64)",
            ));
        }
        self.nats.validate()?;
        self.topology.validate()?;
        self.log.validate()?;
        self.desk.validate()?;
        self.mail.validate()?;
        self.notify.validate()?;
        self.console.validate()?;
        self.router.validate()?;
        self.web.validate()?;
        self.requests.validate()?;
        Ok(())
    }
}
