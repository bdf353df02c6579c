//! Why `guichet` could not start or run, said for an operator.

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Core(#[from] guichet_core::Error),

    #[error("cannot listen on {addr} (`{key}`): {source}; is another process using it?")]
    Bind {
        key: &'static str,
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },

    #[error("unknown service `{0}` (expected one of: mail, web, desk, router, requests, notify, console)")]
    UnknownService(String),

    #[error("service {service}: {reason}")]
    Service { service: &'static str, reason: String },
}
