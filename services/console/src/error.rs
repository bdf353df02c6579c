//! The one error type of the console, saying whether to retry.

use guichet_core::Error as CoreError;

/// What went wrong in the console's store, projection or queries.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The database did not answer or refused a statement: retry later.
    #[error("console database unavailable (retry later): {0}")]
    Database(String),
    /// NATS did not answer: retry later.
    #[error("NATS unavailable (retry later): {0}")]
    Bus(String),
    /// Another console process moved the projection meanwhile: the batch
    /// was rolled back and the projection restarts from the stored position.
    #[error("another console process projected {stream} meanwhile (retry: the projection restarts from the database)")]
    Moved { stream: String },
    /// A caller's mistake (bad filter, unknown revision): not retried.
    #[error("{0}")]
    Invalid(String),
    /// Asked for something that does not exist: not retried.
    #[error("{0}")]
    NotFound(String),
    /// A bad `[console]` section: fix the configuration.
    #[error("configuration: {0}")]
    Config(String),
}

impl ConsoleError {
    /// Whether the same call may succeed later unchanged.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Database(_) | Self::Bus(_) | Self::Moved { .. })
    }

    pub(crate) fn db(what: &str, e: impl std::fmt::Display) -> Self {
        Self::Database(format!("{what}: {e}"))
    }

    pub(crate) fn bus(what: &str, e: impl std::fmt::Display) -> Self {
        Self::Bus(format!("{what}: {e}"))
    }
}

impl From<guichet_router::RouterError> for ConsoleError {
    fn from(e: guichet_router::RouterError) -> Self {
        use guichet_router::RouterError as R;
        match e {
            R::Invalid(m) => Self::Invalid(m),
            R::NotFound(m) => Self::NotFound(m),
            other => Self::Bus(other.to_string()),
        }
    }
}

impl From<CoreError> for ConsoleError {
    fn from(e: CoreError) -> Self {
        Self::Bus(e.to_string())
    }
}
