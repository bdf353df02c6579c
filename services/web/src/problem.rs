//! Error answers as `application/problem+json` (RFC 9457).
//!
//! Each kind of failure has a stable `type` URI that platforms may match
//! on; `detail` says what to fix, never how guichet works inside.

use std::time::Duration;

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

/// The prefix of every problem `type`.
pub const PROBLEM_BASE: &str = "https://guichet.example/problems/";

/// One failure, ready to be answered.
#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    /// The last segment of the `type` URI (`invalid-signature`).
    pub kind: &'static str,
    pub title: &'static str,
    pub detail: String,
    /// The mapping target at fault, for 422.
    pub field: Option<String>,
    pub retry_after: Option<Duration>,
}

impl Problem {
    fn new(status: StatusCode, kind: &'static str, title: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            title,
            detail: detail.into(),
            field: None,
            retry_after: None,
        }
    }

    pub fn malformed(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed-body", "Malformed body", detail)
    }

    pub fn too_deep(limit: usize) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "too-deeply-nested",
            "JSON nested too deeply",
            format!("the JSON body nests objects or arrays deeper than {limit} levels"),
        )
    }

    pub fn too_many_fields(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-many-fields",
            "Too many fields",
            format!("the submission has more than {limit} fields"),
        )
    }

    pub fn too_large(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            "Submission too large",
            detail,
        )
    }

    pub fn unsupported_media_type(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            detail,
        )
    }

    pub fn missing_signature() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "missing-signature",
            "Signature required",
            "send `X-Guichet-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<body>\">` \
             computed with the form's secret",
        )
    }

    pub fn invalid_signature(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid-signature",
            "Invalid signature",
            detail,
        )
    }

    pub fn expired_signature(window: Duration) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "expired-signature",
            "Signature timestamp outside the window",
            format!(
                "the signature's timestamp `t` is more than {}s from the server's clock: sign each \
                 attempt with the current time (and check the platform's clock)",
                window.as_secs()
            ),
        )
    }

    pub fn unknown_form(form: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "unknown-form",
            "Unknown form",
            format!("no form `{}` is configured on this guichet", printable(form)),
        )
    }

    pub fn missing_field(target: &str, locator: &str) -> Self {
        Self {
            field: Some(target.to_owned()),
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "missing-field",
                "Required field missing",
                format!("`{target}` is required (expected at `{locator}`) and is missing or empty"),
            )
        }
    }

    pub fn invalid_field(target: &str, reason: impl std::fmt::Display) -> Self {
        Self {
            field: Some(target.to_owned()),
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-field",
                "Invalid field",
                format!("`{target}`: {reason}"),
            )
        }
    }

    pub fn invalid_idempotency_key() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid-idempotency-key",
            "Invalid Idempotency-Key",
            "`Idempotency-Key` must be 1-200 visible ASCII characters",
        )
    }

    pub fn rate_limited(retry_after: Duration) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many submissions",
                "this form's submission rate limit is exceeded: retry after the delay in `Retry-After`",
            )
        }
    }

    pub fn request_timeout() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "request-timeout",
            "Body not received in time",
            "the request body took too long to arrive",
        )
    }

    pub fn unavailable() -> Self {
        Self {
            retry_after: Some(guichet_core::bus::RETRY_AFTER),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Temporarily unavailable",
                "the submission was not stored: retry later with the same request (same Idempotency-Key)",
            )
        }
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal-error",
            "Internal error",
            "the submission could not be stored; the operators have the details in the logs",
        )
    }

    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            "submissions go to POST /v1/forms/{form}/submissions",
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
            "submissions are sent with POST",
        )
    }

    /// The full `type` URI.
    pub fn type_uri(&self) -> String {
        format!("{PROBLEM_BASE}{}", self.kind)
    }
}

/// A path segment from the outside, safe to echo back.
/// Client input quoted in an answer (see [`guichet_core::error::printable`]).
fn printable(s: &str) -> String {
    guichet_core::error::printable(s, 64)
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = json!({
            "type": self.type_uri(),
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if let Some(field) = &self.field {
            body["field"] = json!(field);
        }
        let mut response = (self.status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(after) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(after.as_secs().max(1)));
        }
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            headers.insert(header::ALLOW, HeaderValue::from_static("POST"));
        }
        response
    }
}
