//! Why the desk service could not start or stopped serving.

/// The one error type of the desk crate.
#[derive(Debug, thiserror::Error)]
pub enum DeskError {
    /// A configuration value (or a file it names, such as a TLS
    /// certificate) is unusable: fix the configuration; retrying will not
    /// help.
    #[error(transparent)]
    Config(#[from] guichet_core::Error),

    /// The gRPC server failed while serving (the supervisor restarts it).
    #[error("gRPC server on {addr}: {reason}")]
    Serve { addr: String, reason: String },
}

impl DeskError {
    /// Whether a restart may fix it (serving errors), or the configuration
    /// must change.
    pub fn is_transient(&self) -> bool {
        matches!(self, DeskError::Serve { .. })
    }
}
