//! The router's one error type.
//!
//! [`RouterError::is_transient`] decides what happens to a contact whose
//! routing failed: transient errors are retried (NAK with backoff) like
//! the others, but only they are expected to heal by themselves; the
//! dead-letter reason says which it was.

use guichet_core::bus::subjects;

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// The bus (publish, stream, consumer) failed.
    #[error(transparent)]
    Core(#[from] guichet_core::Error),

    /// A key-value store operation failed: retry.
    #[error("NATS store {store}: {what}: {reason}")]
    Store {
        store: &'static str,
        what: String,
        reason: String,
    },

    /// A stream or consumer operation failed: retry.
    #[error("JetStream {what}: {reason}")]
    JetStream { what: String, reason: String },

    /// The identity bucket holds something that is not what the router
    /// wrote there: an operator must look at it.
    #[error("identity bucket: {0}")]
    Identity(String),

    /// The requests bucket holds something unreadable.
    #[error("requests bucket: {0}")]
    Requests(String),

    /// A contact that cannot be routed as it is (bad id, ...).
    #[error("contact {contact_id}: {reason}")]
    Contact { contact_id: String, reason: String },

    /// Rules text refused by validation.
    #[error("rules refused: {0}")]
    RulesRejected(String),

    /// An operator command was given something it cannot do.
    #[error("{0}")]
    Invalid(String),

    /// What an operator asked about does not exist.
    #[error("{0}")]
    NotFound(String),

    /// Routing one contact panicked (a bug): that contact is retried and
    /// dead-lettered after its deliveries; the router goes on.
    #[error("routing panicked: {0}")]
    Panicked(String),
}

impl RouterError {
    /// Whether the same operation may succeed later without any change.
    pub fn is_transient(&self) -> bool {
        match self {
            RouterError::Core(e) => e.is_transient(),
            RouterError::Store { .. } | RouterError::JetStream { .. } => true,
            _ => false,
        }
    }

    pub(crate) fn identity_store(what: impl Into<String>, e: impl std::fmt::Display) -> Self {
        RouterError::Store {
            store: subjects::IDENTITY_BUCKET,
            what: what.into(),
            reason: e.to_string(),
        }
    }

    pub(crate) fn requests_store(what: impl Into<String>, e: impl std::fmt::Display) -> Self {
        RouterError::Store {
            store: subjects::REQUESTS_BUCKET,
            what: what.into(),
            reason: e.to_string(),
        }
    }

    pub(crate) fn jetstream(what: impl Into<String>, e: impl std::fmt::Display) -> Self {
        RouterError::JetStream {
            what: what.into(),
            reason: e.to_string(),
        }
    }
}
