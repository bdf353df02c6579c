//! The mail service's one error type.

/// What can stop one run of a mailbox's watcher. Every variant is
/// retried by the watcher (reconnect with backoff) except configuration
/// errors, which are caught at start.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// A configuration value cannot be used (caught by `validate` at start).
    #[error(transparent)]
    Config(guichet_core::Error),

    /// The bus refused or could not take a write: retried later, nothing
    /// is marked handled on the IMAP server meanwhile.
    #[error("mailbox {mailbox}: NATS: {source}")]
    Bus {
        mailbox: String,
        #[source]
        source: guichet_core::Error,
    },

    /// The IMAP server could not be reached, refused a command, or broke
    /// the connection: reconnect with backoff.
    #[error("mailbox {mailbox}: IMAP {what}: {reason}")]
    Imap {
        mailbox: String,
        what: &'static str,
        reason: String,
    },

    /// The TLS set-up failed (CA file, handshake, certificate).
    #[error("mailbox {mailbox}: TLS: {reason} (check `tls`, `ca_file` and the server's certificate)")]
    Tls { mailbox: String, reason: String },
}

impl MailError {
    pub(crate) fn imap(mailbox: &str, what: &'static str, reason: impl std::fmt::Display) -> Self {
        MailError::Imap {
            mailbox: mailbox.to_owned(),
            what,
            reason: reason.to_string(),
        }
    }

    pub(crate) fn bus(mailbox: &str, source: guichet_core::Error) -> Self {
        MailError::Bus {
            mailbox: mailbox.to_owned(),
            source,
        }
    }

    /// Whether retrying later may succeed without a configuration change.
    pub fn is_transient(&self) -> bool {
        !matches!(self, MailError::Config(_))
    }
}
