//! Typed configuration shared by every service, and the loader.
//!
//! A configuration is one TOML file plus environment overrides:
//! `GUICHET__NATS__URL=nats://a:4222,nats://b:4222` overrides `nats.url`.
//! Each section is a
//! struct that rejects unknown keys (a typo must not be silently ignored)
//! and is validated once at start by [`Validate`], with errors naming the
//! key at fault.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Deserializer, de::DeserializeOwned};

use crate::{Error, secret::Secret};

/// Validation that runs once, at start, after loading.
pub trait Validate {
    fn validate(&self) -> Result<(), Error>;
}

/// Loads `T` from `path` (TOML) and `GUICHET__…` environment variables.
pub fn load<T: DeserializeOwned + Validate>(path: &Path) -> Result<T, Error> {
    if !path.exists() {
        return Err(Error::ConfigFile {
            path: path.to_owned(),
            reason: "no such file (copy deploy/guichet.example.toml and adapt it)".into(),
        });
    }
    let raw = ::config::Config::builder()
        .add_source(::config::File::from(path).format(::config::FileFormat::Toml))
        .add_source(
            ::config::Environment::with_prefix("GUICHET")
                .prefix_separator("__")
                .separator("__"),
        )
        .build()
        .map_err(|e| file_error(path, e))?;
    let typed: T = raw.try_deserialize().map_err(|e| file_error(path, e))?;
    typed.validate().map_err(|e| file_error(path, e))?;
    Ok(typed)
}

/// The source excerpt and caret lines a TOML error comes with (`1 | [nats`, `|   ^`).
fn is_snippet_line(line: &str) -> bool {
    line.split_once('|')
        .is_some_and(|(gutter, _)| gutter.trim().chars().all(|c| c.is_ascii_digit()))
}

/// One line, whatever the parser printed (TOML errors come with a snippet).
fn file_error(path: &Path, error: impl std::fmt::Display) -> Error {
    let reason = error
        .to_string()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !is_snippet_line(l))
        .collect::<Vec<_>>()
        .join(" ");
    // The config crate appends " in <path>", sometimes relative: the path is said once already.
    let file_name = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let reason = match reason.rfind(" in ") {
        Some(at) if !file_name.is_empty() && reason.ends_with(&file_name) => reason[..at].to_owned(),
        _ => reason,
    };
    Error::ConfigFile {
        path: path.to_owned(),
        reason,
    }
}

/// How guichet reaches NATS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// Server URL(s): one, a comma-separated list or a TOML array
    /// (`nats://host:4222`, `tls://…`). Every server listed is tried at
    /// start and on reconnection. Absent: guichet starts its own
    /// `nats-server` (see [`EmbeddedConfig`]).
    pub url: Option<NatsUrls>,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub token: Option<Secret>,
    /// A `.creds` file (JWT + NKey), as issued by `nsc`.
    pub creds_file: Option<PathBuf>,
    pub tls: Option<NatsTlsConfig>,
    /// How long to keep trying to connect at start before giving up
    /// (then `topology.ready_timeout` for JetStream and the topology).
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long a publish may wait for its PubAck before the adapter
    /// answers "unavailable, retry".
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
    /// Publishes awaiting their PubAck, at most, across the process: past
    /// it adapters answer "unavailable" instead of queueing without bound.
    pub max_in_flight: usize,
    pub embedded: EmbeddedConfig,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: None,
            user: None,
            password: None,
            token: None,
            creds_file: None,
            tls: None,
            connect_timeout: Duration::from_secs(10),
            publish_timeout: Duration::from_secs(2),
            max_in_flight: 1024,
            embedded: EmbeddedConfig::default(),
        }
    }
}

/// The NATS servers to try, in the order written: from one URL, a
/// comma-separated list (what an environment variable can hold) or a TOML
/// array. Printed (`Debug`, `Display`) without the credentials a URL may
/// carry (`nats://user:password@host`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct NatsUrls(Vec<String>);

impl NatsUrls {
    /// The URLs of `list`, split at commas, trimmed.
    pub fn parse(list: &str) -> Self {
        let mut urls = Self::default();
        urls.push_list(list);
        urls
    }

    fn push_list(&mut self, list: &str) {
        self.0.extend(list.split(',').map(|one| one.trim().to_owned()));
    }

    /// Parses each URL as async-nats will, naming the first bad one
    /// (without its credentials).
    pub fn server_addrs(&self) -> Result<Vec<async_nats::ServerAddr>, Error> {
        if self.0.is_empty() {
            return Err(Error::config("nats.url", "the list of servers is empty"));
        }
        self.0
            .iter()
            .map(|one| {
                let scheme_ok = ["nats://", "tls://", "ws://", "wss://"]
                    .iter()
                    .any(|s| one.starts_with(s))
                    || !one.contains("://");
                let parsed = if !one.is_empty() && scheme_ok {
                    one.parse::<async_nats::ServerAddr>().map_err(|e| e.to_string())
                } else {
                    Err("expected nats://host:port or tls://host:port".into())
                };
                parsed.map_err(|reason| {
                    Error::config("nats.url", format!("`{}` is not a NATS URL: {reason}", redact_url(one)))
                })
            })
            .collect()
    }
}

impl std::ops::Deref for NatsUrls {
    type Target = [String];
    fn deref(&self) -> &[String] {
        &self.0
    }
}

impl From<String> for NatsUrls {
    fn from(list: String) -> Self {
        Self::parse(&list)
    }
}

impl From<&str> for NatsUrls {
    fn from(list: &str) -> Self {
        Self::parse(list)
    }
}

impl From<Vec<String>> for NatsUrls {
    fn from(urls: Vec<String>) -> Self {
        Self(urls)
    }
}

impl std::fmt::Display for NatsUrls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact_urls(&self.0))
    }
}

impl std::fmt::Debug for NatsUrls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.iter().map(|u| redact_url(u))).finish()
    }
}

impl<'de> Deserialize<'de> for NatsUrls {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = NatsUrls;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a NATS URL, a comma-separated list of them, or an array of them")
            }
            fn visit_str<E: serde::de::Error>(self, list: &str) -> Result<NatsUrls, E> {
                Ok(NatsUrls::parse(list))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<NatsUrls, A::Error> {
                let mut urls = NatsUrls::default();
                // Bounded by the document being read; an element may be a list itself.
                while let Some(one) = seq.next_element::<String>()? {
                    urls.push_list(&one);
                }
                Ok(urls)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// `url` without the user, password or token it may carry
/// (`nats://***@host:4222`), for logs and error messages.
pub fn redact_url(url: &str) -> std::borrow::Cow<'_, str> {
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[authority_start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..authority_start], &rest[at..]).into(),
        None => url.into(),
    }
}

/// Every URL of `urls`, redacted, comma-separated.
pub fn redact_urls(urls: &[String]) -> String {
    urls.iter().map(|u| redact_url(u)).collect::<Vec<_>>().join(",")
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct NatsTlsConfig {
    /// Extra CA certificate (PEM) to trust, for a private CA.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// The `nats-server` guichet starts itself when no URL is configured.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddedConfig {
    /// The executable, looked up on PATH unless it is a path.
    pub binary: PathBuf,
    /// JetStream storage directory.
    pub store_dir: PathBuf,
    /// Loopback port the embedded server listens on.
    pub port: u16,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        Self {
            binary: "nats-server".into(),
            store_dir: "./data/nats".into(),
            port: 4222,
        }
    }
}

/// Where data is kept and for how long.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopologyConfig {
    pub storage: StorageKind,
    /// Copies of each stream and bucket (1 on a single node, 3 on a cluster).
    pub replicas: usize,
    /// Window within which the server drops a publish whose `Nats-Msg-Id`
    /// it has already stored.
    #[serde(with = "humantime_serde")]
    pub duplicate_window: Duration,
    /// How long intake messages are kept (they are routed within seconds;
    /// this is the buffer for a router outage). Each contact keeps its own
    /// subject that long, so it is also how long a retry of the same source
    /// message is recognized.
    #[serde(with = "humantime_serde")]
    pub intake_max_age: Duration,
    /// The journal's retention period: how long routed requests (and so
    /// each usager's history) are kept.
    #[serde(with = "humantime_serde")]
    pub routed_max_age: Duration,
    #[serde(with = "humantime_serde")]
    pub deadletter_max_age: Duration,
    /// How long the mail adapter remembers an ingested Message-ID (its
    /// guard across UIDVALIDITY changes).
    #[serde(with = "humantime_serde")]
    pub replay_guard_ttl: Duration,
    /// Largest message accepted on the streams, in bytes.
    pub max_message_size: i32,
    /// How long start-up, once connected, keeps putting the topology in
    /// place (look-ups and creations retried with backoff): a cluster that
    /// just started, or lost a node, answers only once it has elected its
    /// leaders, and processes starting together create the topology at once.
    #[serde(with = "humantime_serde")]
    pub ready_timeout: Duration,
}

impl Default for TopologyConfig {
    fn default() -> Self {
        const DAY: u64 = 86_400;
        Self {
            storage: StorageKind::File,
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
            intake_max_age: Duration::from_secs(30 * DAY),
            routed_max_age: Duration::from_secs(3 * 365 * DAY),
            deadletter_max_age: Duration::from_secs(90 * DAY),
            replay_guard_ttl: Duration::from_secs(90 * DAY),
            max_message_size: 1024 * 1024,
            ready_timeout: Duration::from_secs(60),
        }
    }
}

/// A file already in the object store is written again (its age starts
/// over) when a new contact brings it and its copy is older than this; see
/// [`TopologyConfig::attachments_max_age`].
pub const ATTACHMENTS_REFRESH_AFTER: Duration = Duration::from_secs(7 * 86_400);

impl TopologyConfig {
    /// The object store's retention (`guichet_attachments`), derived from
    /// the streams' so that a file never expires before the last message
    /// that points at it: a contact is published at most
    /// [`ATTACHMENTS_REFRESH_AFTER`] after its file's copy was written (an
    /// older copy is written again), routed or dead-lettered within
    /// `intake_max_age`, then kept `routed_max_age` (or
    /// `deadletter_max_age`). A file no message points at any more (a
    /// usager's past retention, an abandoned submission) is gone at most
    /// that long after it was last sent.
    pub fn attachments_max_age(&self) -> Duration {
        self.routed_max_age
            .max(self.deadletter_max_age)
            .saturating_add(self.intake_max_age)
            .saturating_add(ATTACHMENTS_REFRESH_AFTER)
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    File,
    Memory,
}

/// The admin HTTP port: `/healthz`, `/readyz`, `/metrics`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub listen: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
        }
    }
}

/// Logging.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter (`info`, `guichet_mail=debug,info`); `RUST_LOG`
    /// wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

impl Validate for NatsConfig {
    fn validate(&self) -> Result<(), Error> {
        if let Some(urls) = &self.url {
            urls.server_addrs()?;
        }
        if self.password.is_some() && self.user.is_none() {
            return Err(Error::config(
                "nats.user",
                "`nats.password` is set but `nats.user` is not",
            ));
        }
        if let Some(p) = &self.password {
            p.resolve("nats.password")?;
        }
        if let Some(t) = &self.token {
            t.resolve("nats.token")?;
        }
        if let Some(c) = &self.creds_file
            && !c.is_file()
        {
            return Err(Error::config(
                "nats.creds_file",
                format!("{} is not a readable file", c.display()),
            ));
        }
        if let Some(tls) = &self.tls {
            for (key, file) in [
                ("nats.tls.ca_file", &tls.ca_file),
                ("nats.tls.cert_file", &tls.cert_file),
                ("nats.tls.key_file", &tls.key_file),
            ] {
                if let Some(f) = file
                    && !f.is_file()
                {
                    return Err(Error::config(key, format!("{} is not a readable file", f.display())));
                }
            }
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                return Err(Error::config("nats.tls.key_file", "cert_file and key_file go together"));
            }
        }
        if self.max_in_flight == 0 {
            return Err(Error::config("nats.max_in_flight", "must be at least 1"));
        }
        if self.publish_timeout.is_zero() {
            return Err(Error::config("nats.publish_timeout", "must be more than 0s"));
        }
        if self.url.is_none() && self.embedded.port == 0 {
            return Err(Error::config("nats.embedded.port", "must be a port number (1-65535)"));
        }
        // The embedded broker has its own generated password; these would
        // be silently ignored.
        if self.url.is_none() {
            for (key, set) in [
                ("nats.user", self.user.is_some()),
                ("nats.password", self.password.is_some()),
                ("nats.token", self.token.is_some()),
                ("nats.creds_file", self.creds_file.is_some()),
                ("nats.tls", self.tls.is_some()),
            ] {
                if set {
                    return Err(Error::config(
                        key,
                        "applies to a server given by `nats.url`; the embedded broker (no `nats.url`) uses the password it generates into `nats.embedded.store_dir`: remove the key or set `nats.url`",
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Validate for TopologyConfig {
    fn validate(&self) -> Result<(), Error> {
        if !(1..=5).contains(&self.replicas) {
            return Err(Error::config(
                "topology.replicas",
                "must be between 1 and 5 (JetStream's limit)",
            ));
        }
        if self.duplicate_window.is_zero() {
            return Err(Error::config("topology.duplicate_window", "must be more than 0s"));
        }
        for (key, age) in [
            ("topology.intake_max_age", self.intake_max_age),
            ("topology.routed_max_age", self.routed_max_age),
            ("topology.deadletter_max_age", self.deadletter_max_age),
        ] {
            if age < self.duplicate_window {
                return Err(Error::config(key, "must be at least `topology.duplicate_window`"));
            }
        }
        if self.ready_timeout.is_zero() {
            return Err(Error::config("topology.ready_timeout", "must be more than 0s"));
        }
        if self.max_message_size < 1024 {
            return Err(Error::config(
                "topology.max_message_size",
                "must be at least 1024 bytes",
            ));
        }
        Ok(())
    }
}

impl Validate for LogConfig {
    fn validate(&self) -> Result<(), Error> {
        tracing_subscriber::EnvFilter::try_new(&self.level)
            .map(|_| ())
            .map_err(|e| Error::config("log.level", format!("not a valid filter: {e}")))
    }
}

/// `["5s", "30s"]` as a `Vec<Duration>`: `#[serde(with = "guichet_core::config::duration_list")]`
/// (backoff schedules).
pub mod duration_list {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        let raw = Vec::<String>::deserialize(d)?;
        raw.iter()
            .map(|s| humantime_serde::re::humantime::parse_duration(s).map_err(serde::de::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Only {
        nats: NatsConfig,
    }

    fn parse(toml: &str) -> Result<NatsConfig, String> {
        let raw = ::config::Config::builder()
            .add_source(::config::File::from_str(toml, ::config::FileFormat::Toml))
            .build()
            .map_err(|e| e.to_string())?;
        let only: Only = raw.try_deserialize().map_err(|e| e.to_string())?;
        only.nats.validate().map_err(|e| e.to_string())?;
        Ok(only.nats)
    }

    #[test]
    fn a_server_list_is_a_comma_list_or_an_array() {
        let want = ["nats://a:4222", "tls://b:4222", "c:4222"].map(String::from);
        let comma = parse("[nats]\nurl = \"nats://a:4222, tls://b:4222,c:4222\"\n").unwrap();
        assert_eq!(*comma.url.unwrap(), want);
        let array = parse("[nats]\nurl = [\"nats://a:4222\", \"tls://b:4222\", \"c:4222\"]\n").unwrap();
        assert_eq!(*array.url.unwrap(), want);
        let one = parse("[nats]\nurl = \"nats://a:4222\"\n").unwrap();
        assert_eq!(*one.url.unwrap(), ["nats://a:4222".to_owned()]);
        assert!(parse("[nats]\nurl = 4222\n").is_err());
    }

    #[test]
    fn a_bad_url_in_a_list_is_named_without_its_credentials() {
        for (toml, bad) in [
            ("url = \"nats://a:4222,nats://b:x\"", "`nats://b:x`"),
            ("url = [\"nats://a:4222\", \"http://b:4222\"]", "`http://b:4222`"),
            ("url = \"nats://a:4222,,nats://c:4222\"", "``"),
            ("url = [\"nats://u:secret@a:99999\"]", "`nats://***@a:99999`"),
            ("url = []", "empty"),
        ] {
            let err = parse(&format!("[nats]\n{toml}\n")).unwrap_err();
            assert!(err.contains("nats.url") && err.contains(bad), "{toml}: {err}");
            assert!(!err.contains("secret"), "{err}");
        }
    }

    #[test]
    fn credentials_without_a_url_are_refused_for_the_embedded_broker() {
        for (toml, key) in [
            ("user = \"u\"\npassword = \"p\"", "nats.user"),
            ("token = \"t\"", "nats.token"),
            ("[nats.tls]\n", "nats.tls"),
        ] {
            let err = parse(&format!("[nats]\n{toml}\n")).unwrap_err();
            assert!(err.contains(key) && err.contains("nats.url"), "{toml}: {err}");
        }
        assert!(parse("[nats]\nurl = \"nats://a:4222\"\ntoken = \"t\"\n").is_ok());
    }

    #[test]
    fn credentials_in_urls_are_not_printed() {
        assert_eq!(redact_url("nats://user:pass@host:4222"), "nats://***@host:4222");
        assert_eq!(redact_url("tls://token@host:4222/x@y"), "tls://***@host:4222/x@y");
        assert_eq!(redact_url("user:p@ss@host"), "***@host");
        assert_eq!(redact_url("nats://host:4222"), "nats://host:4222");
        let urls = NatsUrls::parse("nats://u:secret@a:4222,nats://b:4222");
        assert_eq!(urls.to_string(), "nats://***@a:4222,nats://b:4222");
        let config = NatsConfig {
            url: Some(urls),
            ..NatsConfig::default()
        };
        assert!(!format!("{config:?}").contains("secret"), "{config:?}");
    }
}
