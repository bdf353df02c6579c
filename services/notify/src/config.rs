//! The `[notify]` section of the configuration.

use std::{path::PathBuf, time::Duration};

use guichet_core::{Error, config::Validate, secret::Secret};
use serde::Deserialize;

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// TLS from the first byte (port 465).
    Tls,
    /// Plain, then STARTTLS, required (port 587).
    Starttls,
    /// No TLS at all: refused unless the host is a loopback address
    /// (tests, a local relay).
    Plain,
}

/// The SMTP server the notifications are handed to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    pub host: String,
    /// Defaults to 465 (tls), 587 (starttls) or 25 (plain).
    pub port: Option<u16>,
    pub security: SmtpSecurity,
    /// Login, with `password`; none: no authentication.
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// The longest one SMTP exchange may take.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: None,
            security: SmtpSecurity::Starttls,
            username: None,
            password: None,
            timeout: Duration::from_secs(30),
        }
    }
}

impl SmtpConfig {
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.security {
            SmtpSecurity::Tls => 465,
            SmtpSecurity::Starttls => 587,
            SmtpSecurity::Plain => 25,
        })
    }
}

/// What notify sends, to whom, and how often at most.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// The durable consumer on ROUTED that queues notifications.
    pub consumer: String,
    /// The durable consumer on OUTBOX that sends them.
    pub sender_consumer: String,
    /// The durable consumer on EVENTS that queues the status messages.
    pub status_consumer: String,
    /// The `From:` of every message: `Name <address>` or `address`.
    pub from: String,
    /// `Reply-To:` for every service; empty: the service's own `email`
    /// from the rules file, so a reply comes back to its mailbox.
    pub reply_to: String,
    /// The key of the rules in `guichet_config` (as `router.rules_key`):
    /// the services' contact details come from there.
    pub rules_key: String,
    /// A directory of templates used instead of the built-in ones until
    /// templates are pushed (`guichet templates push`).
    pub templates_dir: Option<PathBuf>,
    /// The key of the pushed templates in `guichet_config`.
    pub templates_key: String,
    /// At most this many messages to one usager per hour.
    pub max_per_usager: u32,
    /// Deliveries of one notification before it is dead-lettered.
    pub max_deliveries: u32,
    /// Delay before each new SMTP attempt after a 4xx or a connection
    /// error (the n-th failure waits the n-th value; the last repeats).
    #[serde(with = "guichet_core::config::duration_list")]
    pub backoff: Vec<Duration>,
    /// How long the server waits for an ack before redelivering.
    #[serde(with = "humantime_serde")]
    pub ack_wait: Duration,
    /// Addresses never written to, besides the watched mailboxes' logins
    /// and the services' own addresses (the town's other mailboxes).
    pub never_send_to: Vec<String>,
    /// Messages sent at once by one process.
    pub concurrency: usize,
    pub smtp: SmtpConfig,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            consumer: "notify".into(),
            sender_consumer: "notify-sender".into(),
            status_consumer: "notify-status".into(),
            from: "Mairie <mairie@ville.example>".into(),
            reply_to: String::new(),
            rules_key: "rules".into(),
            templates_dir: None,
            templates_key: "templates".into(),
            max_per_usager: 5,
            max_deliveries: 10,
            backoff: vec![
                Duration::from_secs(5),
                Duration::from_secs(30),
                Duration::from_secs(120),
                Duration::from_secs(600),
            ],
            ack_wait: Duration::from_secs(120),
            never_send_to: Vec::new(),
            concurrency: 16,
            smtp: SmtpConfig::default(),
        }
    }
}

impl NotifyConfig {
    /// The wait before the attempt after the `delivered`-th one.
    pub fn backoff_after(&self, delivered: u32) -> Duration {
        let i = usize::try_from(delivered.saturating_sub(1)).unwrap_or(usize::MAX);
        self.backoff
            .get(i)
            .or(self.backoff.last())
            .copied()
            .unwrap_or(Duration::from_secs(30))
    }

    /// The address part of `from`.
    pub fn from_address(&self) -> &str {
        match (self.from.rfind('<'), self.from.rfind('>')) {
            (Some(a), Some(b)) if a < b => &self.from[a + 1..b],
            _ => self.from.trim(),
        }
    }
}

impl Validate for NotifyConfig {
    fn validate(&self) -> Result<(), Error> {
        for (key, name) in [
            ("notify.consumer", &self.consumer),
            ("notify.sender_consumer", &self.sender_consumer),
            ("notify.status_consumer", &self.status_consumer),
            ("notify.templates_key", &self.templates_key),
        ] {
            if !guichet_core::bus::subjects::is_token(name) {
                return Err(Error::config(key, "letters, digits, '-' and '_' only (at most 64)"));
            }
        }
        if self.from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(Error::config(
                "notify.from",
                format!(
                    "\"{}\" is not an address: write `Mairie <mairie@ville.example>`",
                    self.from
                ),
            ));
        }
        if !self.reply_to.is_empty() && !guichet_rules::service_contact::is_address(&self.reply_to) {
            return Err(Error::config(
                "notify.reply_to",
                "an e-mail address (local@domain), or empty",
            ));
        }
        if let Some(bad) = self
            .never_send_to
            .iter()
            .find(|a| !guichet_rules::service_contact::is_address(a))
        {
            return Err(Error::config(
                "notify.never_send_to",
                format!("\"{bad}\" is not an e-mail address"),
            ));
        }
        if self.max_per_usager == 0 {
            return Err(Error::config("notify.max_per_usager", "at least 1 (per hour)"));
        }
        if self.max_deliveries == 0 || self.backoff.is_empty() || self.concurrency == 0 {
            return Err(Error::config(
                "notify.max_deliveries",
                "max_deliveries, concurrency and backoff must be at least 1 / non-empty",
            ));
        }
        if self.smtp.host.trim().is_empty() {
            return Err(Error::config(
                "notify.smtp.host",
                "required: the SMTP server's host name",
            ));
        }
        if self.smtp.security == SmtpSecurity::Plain && !is_loopback(&self.smtp.host) {
            return Err(Error::config(
                "notify.smtp.security",
                "\"plain\" only towards a loopback address (127.0.0.1, ::1, localhost): use \"tls\" or \"starttls\"",
            ));
        }
        if self.smtp.username.is_some() != self.smtp.password.is_some() {
            return Err(Error::config(
                "notify.smtp.password",
                "username and password go together: give both or neither",
            ));
        }
        Ok(())
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_smtp_is_refused_off_loopback_and_from_is_checked() {
        let mut c = NotifyConfig::default();
        assert!(c.validate().is_ok());
        c.smtp.security = SmtpSecurity::Plain;
        assert!(c.validate().is_ok(), "127.0.0.1 is loopback");
        c.smtp.host = "smtp.ville.example".into();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("notify.smtp.security"), "{e}");
        let mut c = NotifyConfig {
            from: "not an address".into(),
            ..NotifyConfig::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("notify.from"));
        c.from = "Mairie <mairie@ville.example>".into();
        assert_eq!(c.from_address(), "mairie@ville.example");
    }
}
