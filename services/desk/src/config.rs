//! The `[desk]` section: where to listen, TLS, one bearer token per site,
//! size limits, the routing wait and the history page size.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use guichet_core::{Error, config::Validate, secret::Secret};
use serde::Deserialize;

/// `[desk]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeskConfig {
    /// The gRPC listen address.
    pub listen: SocketAddr,
    /// TLS (rustls). Absent: plaintext, for loopback or a TLS-terminating
    /// proxy only.
    pub tls: Option<DeskTlsConfig>,
    /// Serve plaintext on a non-loopback address anyway (a network that
    /// encrypts by itself, e.g. a service mesh). Off: such a start is
    /// refused; on: warned at every start.
    pub insecure_plaintext: bool,
    /// The sites allowed to call, each with its bearer token:
    /// `[desk.sites.mairie-centre] token = { file = "/run/secrets/desk-mairie-centre" }`.
    pub sites: BTreeMap<String, SiteConfig>,
    /// Largest gRPC request accepted, in bytes (attachments included).
    pub max_message_size: usize,
    /// Largest attachment accepted, in bytes.
    pub max_attachment_size: usize,
    /// Request bytes (encoded size) being processed at once, all callers
    /// together; a request that does not fit is refused with UNAVAILABLE
    /// at once (retry with backoff).
    pub max_buffered_bytes: usize,
    /// How long `wait_for_routing` waits when the request does not say.
    #[serde(with = "humantime_serde")]
    pub wait_for_routing_timeout: Duration,
    /// The longest `routing_timeout` a request may ask for.
    #[serde(with = "humantime_serde")]
    pub wait_for_routing_max: Duration,
    /// History entries per page when the request does not say.
    pub history_page_size: u32,
    /// The largest page a request may ask for.
    pub history_max_page_size: u32,
}

impl Default for DeskConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            tls: None,
            insecure_plaintext: false,
            sites: BTreeMap::new(),
            max_message_size: 16 * 1024 * 1024,
            max_attachment_size: 10 * 1024 * 1024,
            max_buffered_bytes: 64 * 1024 * 1024,
            wait_for_routing_timeout: Duration::from_secs(2),
            wait_for_routing_max: Duration::from_secs(10),
            history_page_size: 50,
            history_max_page_size: 500,
        }
    }
}

/// `[desk.tls]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DeskTlsConfig {
    /// The server's certificate chain (PEM).
    pub cert_file: PathBuf,
    /// Its private key (PEM).
    pub key_file: PathBuf,
    /// Set for mutual TLS: clients must present a certificate signed by
    /// this CA (PEM).
    pub client_ca_file: Option<PathBuf>,
}

/// `[desk.sites.<site>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// The site's bearer token (`{ file = … }` or `{ env = … }` in production).
    pub token: Secret,
    /// Which usagers' histories the site's token may read.
    #[serde(default)]
    pub history: HistoryScope,
    /// The site's agents check an identity document before recording:
    /// the usager's identifiers are claimed at the `verified` level
    /// (otherwise `declared`, whatever the calling software says).
    #[serde(default)]
    pub checks_identity_documents: bool,
}

impl SiteConfig {
    /// A site with `token` and the default history scope.
    pub fn new(token: Secret) -> Self {
        Self {
            token,
            history: HistoryScope::default(),
            checks_identity_documents: false,
        }
    }
}

/// `desk.sites.<site>.history`: what `GetUsagerHistory` returns to a site.
///
/// The default is `own_site`, least privilege: a counter sees what it
/// recorded itself, so one leaked or sniffed token exposes the usagers of
/// one site, not every citizen's history. A cross-channel view (the phone
/// platform, a back-office) is granted deliberately with `all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryScope {
    /// Every contact of the usager, from every channel and site.
    All,
    /// Only the contacts recorded at this site (desk channels, `source.name`
    /// = the site).
    #[default]
    OwnSite,
    /// No history at all (a site that only records contacts).
    None,
}

impl HistoryScope {
    /// The value as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            HistoryScope::All => "all",
            HistoryScope::OwnSite => "own_site",
            HistoryScope::None => "none",
        }
    }
}

/// Shortest token accepted: a guessable token is no authentication.
pub const MIN_TOKEN_LEN: usize = 16;

impl DeskConfig {
    /// Whether serving on `addr` would send tokens and personal data in
    /// clear over a network: true without `[desk.tls]` on a non-loopback
    /// address.
    pub fn plaintext_exposed(&self, addr: SocketAddr) -> bool {
        self.tls.is_none() && !addr.ip().is_loopback()
    }

    /// Refuses plaintext on a non-loopback `addr` unless
    /// `desk.insecure_plaintext` says it is deliberate. Bearer tokens,
    /// names, phones, notes and scanned letters would cross the network in
    /// clear, and one sniffed token reads histories.
    pub fn check_plaintext(&self, addr: SocketAddr) -> Result<(), Error> {
        if self.plaintext_exposed(addr) && !self.insecure_plaintext {
            return Err(Error::config(
                "desk.tls",
                format!(
                    "`desk.listen` = {addr} is not a loopback address and `[desk.tls]` is not set: \
                     bearer tokens and personal data would cross the network in clear. \
                     Configure `[desk.tls]` (`cert_file`, `key_file`), or listen on 127.0.0.1 behind a \
                     TLS-terminating proxy, or (only if the network encrypts by itself) set \
                     `desk.insecure_plaintext = true`"
                ),
            ));
        }
        Ok(())
    }
}

impl Validate for DeskConfig {
    /// Shape and limits only, without reading files: the secrets and
    /// certificates are read by [`crate::check`] when desk is started.
    fn validate(&self) -> Result<(), Error> {
        if self.listen.port() == 0 {
            return Err(Error::config("desk.listen", "must have a port (e.g. 127.0.0.1:50051)"));
        }
        self.check_plaintext(self.listen)?;
        for site in self.sites.keys() {
            if !guichet_core::bus::subjects::is_token(site) {
                return Err(Error::config(
                    format!("desk.sites.{site}"),
                    "a site name is letters, digits, '-' and '_' only (at most 64)",
                ));
            }
        }
        if self.max_message_size < 4096 {
            return Err(Error::config("desk.max_message_size", "must be at least 4096 bytes"));
        }
        if self.max_attachment_size == 0 {
            return Err(Error::config("desk.max_attachment_size", "must be at least 1 byte"));
        }
        if self.max_attachment_size >= self.max_message_size {
            return Err(Error::config(
                "desk.max_attachment_size",
                format!(
                    "must be less than `desk.max_message_size` ({} bytes), which bounds the whole request",
                    self.max_message_size
                ),
            ));
        }
        if self.max_buffered_bytes < self.max_message_size {
            return Err(Error::config(
                "desk.max_buffered_bytes",
                format!(
                    "must be at least `desk.max_message_size` ({} bytes): a request of the largest size must fit",
                    self.max_message_size
                ),
            ));
        }
        if self.wait_for_routing_max.is_zero() {
            return Err(Error::config("desk.wait_for_routing_max", "must be more than 0s"));
        }
        if self.wait_for_routing_timeout > self.wait_for_routing_max {
            return Err(Error::config(
                "desk.wait_for_routing_timeout",
                "must not be more than `desk.wait_for_routing_max`",
            ));
        }
        if self.history_max_page_size == 0 || self.history_max_page_size > 10_000 {
            return Err(Error::config(
                "desk.history_max_page_size",
                "must be between 1 and 10000",
            ));
        }
        if self.history_page_size == 0 || self.history_page_size > self.history_max_page_size {
            return Err(Error::config(
                "desk.history_page_size",
                "must be between 1 and `desk.history_max_page_size`",
            ));
        }
        if let Some(tls) = &self.tls {
            if tls.cert_file.as_os_str().is_empty() {
                return Err(Error::config(
                    "desk.tls.cert_file",
                    "required when `[desk.tls]` is present",
                ));
            }
            if tls.key_file.as_os_str().is_empty() {
                return Err(Error::config(
                    "desk.tls.key_file",
                    "required when `[desk.tls]` is present",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_limits_name_their_key() {
        DeskConfig::default().validate().unwrap();
        let cases: Vec<(DeskConfig, &str)> = vec![
            (
                DeskConfig {
                    max_attachment_size: 32 * 1024 * 1024,
                    ..DeskConfig::default()
                },
                "desk.max_attachment_size",
            ),
            (
                DeskConfig {
                    max_buffered_bytes: 1024 * 1024,
                    ..DeskConfig::default()
                },
                "desk.max_buffered_bytes",
            ),
            (
                DeskConfig {
                    wait_for_routing_timeout: Duration::from_secs(60),
                    ..DeskConfig::default()
                },
                "desk.wait_for_routing_timeout",
            ),
            (
                DeskConfig {
                    history_page_size: 0,
                    ..DeskConfig::default()
                },
                "desk.history_page_size",
            ),
            (
                DeskConfig {
                    sites: BTreeMap::from([("a.b".to_owned(), SiteConfig::new(Secret::Inline("x".repeat(32))))]),
                    ..DeskConfig::default()
                },
                "desk.sites.a.b",
            ),
            (
                DeskConfig {
                    tls: Some(DeskTlsConfig::default()),
                    ..DeskConfig::default()
                },
                "desk.tls.cert_file",
            ),
        ];
        for (config, key) in cases {
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}`")), "{key}: {err}");
        }
    }

    #[test]
    fn plaintext_off_loopback_is_refused_unless_deliberate() {
        for listen in ["0.0.0.0:50051", "192.0.2.10:50051", "[::]:50051"] {
            let config = DeskConfig {
                listen: listen.parse().unwrap(),
                ..DeskConfig::default()
            };
            let err = config.validate().unwrap_err().to_string();
            assert!(
                err.contains("`desk.tls`") && err.contains("desk.insecure_plaintext") && err.contains(listen),
                "{listen}: {err}"
            );
            DeskConfig {
                insecure_plaintext: true,
                ..config.clone()
            }
            .validate()
            .unwrap();
            DeskConfig {
                tls: Some(DeskTlsConfig {
                    cert_file: "desk.crt".into(),
                    key_file: "desk.key".into(),
                    client_ca_file: None,
                }),
                ..config
            }
            .validate()
            .unwrap();
        }
        for listen in ["127.0.0.1:50051", "127.0.0.2:50051", "[::1]:50051"] {
            DeskConfig {
                listen: listen.parse().unwrap(),
                ..DeskConfig::default()
            }
            .validate()
            .unwrap();
        }
    }
}
