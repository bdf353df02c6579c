//! The `[requests]` section: where the back-office API listens, TLS, one
//! bearer token per back-office client with the services it may handle,
//! and the limits of notes and pages.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf};

use guichet_core::{Error, config::Validate, secret::Secret};
use serde::Deserialize;

/// `[requests]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RequestsConfig {
    /// The gRPC listen address of the `Requests` service (its own port:
    /// back-offices and counters are different callers with different
    /// tokens, and either can run without the other).
    pub listen: SocketAddr,
    /// TLS (rustls), as `[desk.tls]`. Absent: plaintext, for loopback or a
    /// TLS-terminating proxy only.
    pub tls: Option<RequestsTlsConfig>,
    /// The back-office clients allowed to call, each with its token and
    /// services: `[requests.clients.voirie-app] token = { file = … }, services = ["voirie"]`.
    pub clients: BTreeMap<String, ClientConfig>,
    /// Longest note accepted on a transition, in characters.
    pub max_note_length: usize,
    /// Requests per ListRequests page when the call does not say.
    pub page_size: u32,
    /// The largest page a call may ask for.
    pub max_page_size: u32,
    /// How often each process sweeps the deadlines for due-soon and
    /// overdue alerts (and refreshes the gauges).
    #[serde(with = "humantime_serde")]
    pub sweep_interval: std::time::Duration,
    /// How long before a deadline its `due_soon` alert is published.
    #[serde(with = "humantime_serde")]
    pub due_soon: std::time::Duration,
    /// The key of the rules in `guichet_config` (as `router.rules_key`):
    /// the calendar and deadlines a suspension is counted with.
    pub rules_key: String,
}

impl Default for RequestsConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50052)),
            tls: None,
            clients: BTreeMap::new(),
            max_note_length: 4000,
            page_size: 50,
            max_page_size: 500,
            sweep_interval: std::time::Duration::from_secs(60),
            due_soon: std::time::Duration::from_secs(2 * 24 * 3600),
            rules_key: "rules".into(),
        }
    }
}

/// `[requests.tls]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RequestsTlsConfig {
    /// The server's certificate chain (PEM).
    pub cert_file: PathBuf,
    /// Its private key (PEM).
    pub key_file: PathBuf,
    /// Set for mutual TLS: clients must present a certificate signed by
    /// this CA (PEM).
    pub client_ca_file: Option<PathBuf>,
}

/// `[requests.clients.<name>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// The client's bearer token (`{ file = … }` or `{ env = … }` in production).
    pub token: Secret,
    /// The services whose requests it may read and move (at least one).
    pub services: Vec<String>,
}

/// Shortest token accepted: a guessable token is no authentication.
pub const MIN_TOKEN_LEN: usize = 16;

impl Validate for RequestsConfig {
    /// Shape and limits only; tokens and certificates are read by
    /// [`crate::check`] when the service starts.
    fn validate(&self) -> Result<(), Error> {
        if self.listen.port() == 0 {
            return Err(Error::config(
                "requests.listen",
                "must have a port (e.g. 127.0.0.1:50052)",
            ));
        }
        for (name, client) in &self.clients {
            if !guichet_core::bus::subjects::is_token(name) {
                return Err(Error::config(
                    format!("requests.clients.{name}"),
                    "a client name is letters, digits, '-' and '_' only (at most 64)",
                ));
            }
            if client.services.is_empty() {
                return Err(Error::config(
                    format!("requests.clients.{name}.services"),
                    "list at least one service this client handles, e.g. `services = [\"voirie\"]`",
                ));
            }
            if let Some(bad) = client
                .services
                .iter()
                .find(|s| !guichet_core::bus::subjects::is_token(s))
            {
                return Err(Error::config(
                    format!("requests.clients.{name}.services"),
                    format!(
                        "`{}` is not a service name (letters, digits, '-' and '_')",
                        bad.escape_default()
                    ),
                ));
            }
        }
        if !(1..=1_000_000).contains(&self.max_note_length) {
            return Err(Error::config(
                "requests.max_note_length",
                "between 1 and 1000000 characters",
            ));
        }
        if self.page_size == 0 || self.page_size > self.max_page_size {
            return Err(Error::config(
                "requests.page_size",
                format!("between 1 and `requests.max_page_size` ({})", self.max_page_size),
            ));
        }
        if self.rules_key.trim().is_empty() {
            return Err(Error::config(
                "requests.rules_key",
                "required: the key of the rules in `guichet_config`, as `router.rules_key` (default \"rules\")",
            ));
        }
        if self.sweep_interval < std::time::Duration::from_millis(100) {
            return Err(Error::config("requests.sweep_interval", "at least 100ms (e.g. \"1m\")"));
        }
        Ok(())
    }
}
