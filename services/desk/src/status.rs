//! gRPC status codes that mean what they say.
//!
//! - the caller's mistakes are INVALID_ARGUMENT, with a google.rpc.BadRequest
//!   detail naming each field at fault (never UNKNOWN or INTERNAL);
//! - a broker outage is UNAVAILABLE (retry with the same id);
//! - the caller's deadline is honoured: work that cannot finish in time is
//!   DEADLINE_EXCEEDED before the deadline, not silently late.

use std::time::Duration;

use tonic::{Code, Status, metadata::MetadataMap};
use tonic_types::{ErrorDetails, StatusExt};

/// The field violations found in one request.
#[derive(Debug, Default)]
pub struct Violations(Vec<(String, String)>);

impl Violations {
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push((field.into(), description.into()));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// INVALID_ARGUMENT with every violation, if any.
    pub fn into_result(self) -> Result<(), Status> {
        if self.0.is_empty() {
            return Ok(());
        }
        let message = self
            .0
            .iter()
            .map(|(f, d)| format!("{f}: {d}"))
            .collect::<Vec<_>>()
            .join("; ");
        let details = ErrorDetails::with_bad_request(
            self.0
                .into_iter()
                .map(|(field, description)| tonic_types::FieldViolation::new(field, description))
                .collect::<Vec<_>>(),
        );
        Err(Status::with_error_details(
            Code::InvalidArgument,
            format!("invalid request: {message}"),
            details,
        ))
    }

    /// INVALID_ARGUMENT for one field.
    pub fn single(field: &str, description: &str) -> Status {
        let mut v = Self::default();
        v.add(field, description);
        match v.into_result() {
            Err(status) => status,
            Ok(()) => Status::invalid_argument(format!("{field}: {description}")),
        }
    }
}

/// A caller-supplied string made safe to quote in an error: control
/// characters dropped, length capped.
pub use guichet_core::error::printable;

/// The status for a bus error. Details stay in the logs (no internals in
/// answers); the caller learns whether to retry.
pub fn bus_status(e: &guichet_core::Error, what: &str) -> Status {
    if e.is_transient() {
        tracing::warn!(error = %e, "{what}: the message broker is unavailable");
        return Status::unavailable(format!(
            "{what}: the message broker is unavailable right now; retry with backoff (a retry with the same \
             client_request_id never records twice)"
        ));
    }
    match e {
        guichet_core::Error::Identity { field, reason } => Violations::single(&format!("usager.{field}"), reason),
        guichet_core::Error::Rejected(_) => {
            tracing::error!(error = %e, "{what}: the message broker refused the message");
            Status::failed_precondition(format!(
                "{what}: the message broker refused the message; the operator must check the JetStream topology"
            ))
        }
        _ => {
            tracing::error!(error = %e, "{what}: failed");
            Status::internal(format!("{what}: failed on the server; the details are in its logs"))
        }
    }
}

/// The longest caller's deadline taken as given: every call is bounded by
/// the server's own ceiling anyway, and a deadline near `u64::MAX` seconds
/// would overflow `Instant` arithmetic.
const MAX_DEADLINE: Duration = Duration::from_secs(3600);

/// The caller's deadline (`grpc-timeout`), if it sent a valid one: at
/// most 8 digits and a unit (the gRPC spec's `TimeoutValue`), capped at
/// [`MAX_DEADLINE`].
pub fn deadline(metadata: &MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    if !(2..=9).contains(&value.len()) {
        return None;
    }
    let (number, unit) = value.split_at(value.len() - 1);
    if !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = number.parse().ok()?;
    let wanted = match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    };
    Some(wanted.min(MAX_DEADLINE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        let mut m = MetadataMap::new();
        assert_eq!(deadline(&m), None);
        for (v, d) in [
            ("1500m", Duration::from_millis(1500)),
            ("2S", Duration::from_secs(2)),
            ("1M", Duration::from_secs(60)),
            ("7u", Duration::from_micros(7)),
        ] {
            m.insert("grpc-timeout", v.parse().unwrap());
            assert_eq!(deadline(&m), Some(d), "{v}");
        }
        m.insert("grpc-timeout", "12x".parse().unwrap());
        assert_eq!(deadline(&m), None);
        // Beyond the spec's 8 digits (it used to overflow `Instant` + it).
        m.insert("grpc-timeout", "18446744073709551615S".parse().unwrap());
        assert_eq!(deadline(&m), None);
        m.insert("grpc-timeout", "+5S".parse().unwrap());
        assert_eq!(deadline(&m), None);
        m.insert("grpc-timeout", "99999999H".parse().unwrap());
        assert_eq!(deadline(&m), Some(MAX_DEADLINE));
    }

    #[test]
    fn violations_carry_bad_request_details() {
        let mut v = Violations::default();
        v.add("subject", "required");
        v.add("usager.phone", "not a phone number");
        let status = v.into_result().unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("subject: required"), "{}", status.message());
        let details = status.get_error_details();
        let fields: Vec<_> = details
            .bad_request()
            .unwrap()
            .field_violations
            .iter()
            .map(|f| f.field.clone())
            .collect();
        assert_eq!(fields, ["subject", "usager.phone"]);
    }

    #[test]
    fn printable_drops_controls_and_caps() {
        assert_eq!(printable("a\nb", 10), "ab");
        assert_eq!(printable("abcdef", 3), "abc…");
    }
}
