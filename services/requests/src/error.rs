//! The one error type of the requests service. Each variant maps to one
//! gRPC status ([`RequestsError::status`]): the caller learns whether to
//! retry.

use guichet_core::proto::v1::RequestStatus;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum RequestsError {
    /// Configuration or broker error from the core.
    #[error(transparent)]
    Core(#[from] guichet_core::Error),
    /// The gRPC server could not serve.
    #[error("requests gRPC service on {addr}: {reason}")]
    Serve { addr: String, reason: String },
    /// A field of the call is wrong; retrying unchanged fails again.
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// No request has this reference.
    #[error("no request has reference `{0}`")]
    NotFound(String),
    /// The transition is not allowed from the current status.
    #[error("{transition} is not allowed while the request is {status}; allowed now: {allowed}")]
    NotAllowed {
        transition: &'static str,
        status: &'static str,
        allowed: String,
    },
    /// Someone else changed the request since the caller read it.
    #[error(
        "the request is at version {current}, not {expected}: it changed since you read it; read it again and decide again"
    )]
    StaleVersion { expected: u64, current: u64 },
    /// A stored record cannot be read.
    #[error("request record `{key}` cannot be read: {reason}")]
    Corrupt { key: String, reason: String },
}

impl RequestsError {
    pub fn status_name(status: RequestStatus) -> &'static str {
        guichet_core::request::status_token(status)
    }

    /// The gRPC status of this error.
    pub fn status(&self) -> tonic::Status {
        use tonic::Status;
        match self {
            RequestsError::Invalid { field, reason } => guichet_desk::status::Violations::single(field, reason),
            RequestsError::NotFound(_) => Status::not_found(self.to_string()),
            RequestsError::NotAllowed { .. } => Status::failed_precondition(self.to_string()),
            RequestsError::StaleVersion { .. } => Status::aborted(self.to_string()),
            RequestsError::Core(e) => guichet_desk::status::bus_status(e, "updating the request"),
            RequestsError::Corrupt { .. } => {
                tracing::error!(error = %self, "unreadable request record");
                Status::internal("the request record cannot be read; the details are in the server's logs")
            }
            RequestsError::Serve { .. } => Status::internal(self.to_string()),
        }
    }
}
