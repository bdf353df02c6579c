//! The web service's error: what stops it from starting or serving.
//! Errors about one submission are [`crate::problem::Problem`]s instead.

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The `[web]` section is not usable (the message names the key).
    #[error(transparent)]
    Config(guichet_core::Error),

    /// The bus could not tell the stream's limits at start (retry).
    #[error("reading the INTAKE stream's limits: {0}")]
    Bus(guichet_core::Error),

    /// The HTTP server stopped on an I/O error (the supervisor restarts it).
    #[error("serving HTTP on {addr}: {source}")]
    Serve {
        addr: String,
        #[source]
        source: std::io::Error,
    },

    /// The listener's address could not be read.
    #[error("the web listener is unusable: {0}")]
    Listener(std::io::Error),
}

impl WebError {
    /// Whether starting again may succeed without a configuration change.
    pub fn is_transient(&self) -> bool {
        !matches!(self, WebError::Config(_))
    }

    pub(crate) fn serve(addr: Option<SocketAddr>, source: std::io::Error) -> Self {
        WebError::Serve {
            addr: addr.map_or_else(|| "?".to_owned(), |a| a.to_string()),
            source,
        }
    }
}
