//! The one error type of the core crate.
//!
//! Every variant says what failed and what an operator can do about it;
//! [`Error::is_transient`] tells callers whether to retry (503, UNAVAILABLE,
//! NAK) or to give up (4xx, INVALID_ARGUMENT, TERM).

use std::path::PathBuf;

/// Result with the core [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file could not be read or parsed.
    #[error("configuration file {path}: {reason}")]
    ConfigFile { path: PathBuf, reason: String },

    /// A configuration key has a value guichet cannot use.
    #[error("configuration key `{key}`: {reason}")]
    Config { key: String, reason: String },

    /// No NATS server answered within the connect deadline.
    #[error(
        "cannot connect to NATS at {url}: {reason} (is nats-server running and reachable? check `nats.url`, credentials and TLS settings)"
    )]
    Connect { url: String, reason: String },

    /// The server answers but JetStream is off.
    #[error(
        "JetStream is not enabled on the NATS server at {url}: start nats-server with `-js` (or a `jetstream {{}}` block in its config)"
    )]
    NoJetStream { url: String },

    /// A stream or bucket exists with settings guichet cannot reconcile.
    #[error("JetStream {kind} `{name}` exists with an incompatible configuration: {detail}; fix: {fix}")]
    Incompatible {
        kind: &'static str,
        name: String,
        detail: String,
        fix: String,
    },

    /// Creating or updating part of the topology failed.
    #[error("JetStream topology: {what}: {reason}")]
    Topology { what: String, reason: String },

    /// The broker did not acknowledge in time, or is away: retry later.
    #[error("NATS unavailable: {0}")]
    Unavailable(String),

    /// The broker refused the message itself: retrying will not help.
    #[error("NATS refused the message: {0}")]
    Rejected(String),

    /// The embedded or test `nats-server` could not be started.
    #[error("nats-server: {0}")]
    NatsServer(String),

    /// A key-value or object-store operation failed.
    #[error("NATS store {store}: {reason}")]
    Store { store: String, reason: String },

    /// A payload from the bus could not be decoded.
    #[error("undecodable message on {subject}: {reason}")]
    Decode { subject: String, reason: String },

    /// An identifier could not be normalized.
    #[error("{field}: {reason}")]
    Identity { field: &'static str, reason: String },

    /// Binding or serving a listener failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Whether the same operation may succeed later without any change.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Connect { .. } | Error::Unavailable(_) | Error::Store { .. } | Error::Io { .. }
        )
    }

    /// Shorthand for a configuration error on `key`.
    pub fn config(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Config {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// What is wrong with an identifier, without the field's name (the
    /// caller names the field its own way: `usager.email`, a form field).
    pub fn identity_reason(&self) -> String {
        match self {
            Error::Identity { reason, .. } => reason.clone(),
            other => other.to_string(),
        }
    }

    pub(crate) fn store(store: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Error::Store {
            store: store.into(),
            reason: reason.to_string(),
        }
    }
}

/// Client input quoted in an error message: control characters dropped and
/// at most `max` characters (then an ellipsis), so that an answer names
/// what was wrong without echoing a whole hostile value or breaking a log
/// line.
pub fn printable(s: &str, max: usize) -> String {
    let cleaned: String = s.chars().filter(|c| !c.is_control()).take(max).collect();
    if s.chars().count() > max {
        format!("{cleaned}…")
    } else {
        cleaned
    }
}
