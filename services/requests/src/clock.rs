//! The clocks of a request: the engagement deadline (the service's
//! promise, computed by the rules in business days or hours) stops while
//! the request waits for the usager and gets the time waited back on
//! RESUME; the legal deadline of a demand with an implicit decision
//! restarts from RESUME (CRPA L114-5), in calendar months or days
//! ([`LegalDelay`], defined with the rules that set it).

use chrono::{DateTime, Datelike, Utc};
use chrono_tz::Europe::Paris;
pub use guichet_rules::LegalDelay;

/// The calendar date of an instant in Europe/Paris, "YYYY-MM-DD".
pub fn paris_date(at: DateTime<Utc>) -> String {
    let d = at.with_timezone(&Paris).date_naive();
    format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day())
}

pub fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub fn parse(at: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(at).ok().map(|t| t.with_timezone(&Utc))
}
