//! notify's one error type.

/// What can go wrong while queueing or sending a notification.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The bus (publish, stream, consumer): transient, retry.
    #[error(transparent)]
    Core(#[from] guichet_core::Error),

    /// A stream, consumer or key-value operation failed: retry.
    #[error("JetStream {what}: {reason}")]
    JetStream { what: String, reason: String },

    /// A template failed to compile or render: the notification is
    /// dead-lettered with this reason, the others go on.
    #[error("template: {0}")]
    Template(String),

    /// The notification cannot be made as the request stands (a service
    /// without contact details, ...): dead-lettered, never retried.
    #[error("notification: {0}")]
    Unusable(String),

    /// What an operator asked about does not exist (a templates revision).
    #[error("{0}")]
    NotFound(String),

    /// The SMTP configuration is unusable (secret unreadable, bad host).
    #[error("SMTP configuration: {0}")]
    Smtp(String),
}

impl NotifyError {
    pub fn jetstream(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Self::JetStream {
            what: what.into(),
            reason: reason.to_string(),
        }
    }

    /// Whether trying again later can help.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Core(e) => e.is_transient(),
            Self::JetStream { .. } => true,
            Self::Template(_) | Self::Unusable(_) | Self::NotFound(_) | Self::Smtp(_) => false,
        }
    }
}
