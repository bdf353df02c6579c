//! Deadlines as ops write them: `"10 business days"`, `"48 hours"`,
//! `"2 days"`, `"3 weeks"`.

use std::fmt;

/// A deadline, counted from the moment a contact was received.
///
/// - business days: the end (business hours end) of the Nth business day
///   after the day of receipt; the day of receipt never counts;
/// - days and weeks: calendar days; when the last day is not a business
///   day the deadline moves to the end of the next business day (as a
///   legal deadline expiring on a Sunday or holiday does);
/// - hours: exact, to the second, whatever the calendar.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Deadline {
    BusinessDays(u32),
    Days(u32),
    Hours(u32),
}

/// The accepted forms, for error messages.
pub const DEADLINE_FORMS: &str =
    "a number and a unit, e.g. \"10 business days\", \"48 hours\", \"2 days\" or \"3 weeks\"";

/// The largest count accepted for each unit: well beyond any
/// administrative deadline, and keeps the calendar walk bounded.
const MAX_DAYS: u32 = 3660;
const MAX_HOURS: u32 = 24 * 366;

impl Deadline {
    /// Parses `"<N> business day(s)" | "<N> day(s)" | "<N> week(s)" | "<N> hour(s)"`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut words = text.split_whitespace();
        let count = words.next().ok_or_else(|| "empty deadline".to_owned())?;
        let n: u32 = count.parse().map_err(|_| format!("`{count}` is not a whole number"))?;
        if n == 0 {
            return Err("a deadline must be at least 1".to_owned());
        }
        let unit: Vec<String> = words.map(str::to_ascii_lowercase).collect();
        let unit: Vec<&str> = unit.iter().map(String::as_str).collect();
        let deadline = match unit.as_slice() {
            ["business", "day" | "days"] => Deadline::BusinessDays(n),
            ["day" | "days"] => Deadline::Days(n),
            ["week" | "weeks"] => Deadline::Days(n.saturating_mul(7)),
            ["hour" | "hours"] => Deadline::Hours(n),
            [] => return Err(format!("`{text}` has no unit")),
            _ => return Err(format!("unknown unit `{}`", unit.join(" "))),
        };
        match deadline {
            Deadline::BusinessDays(d) | Deadline::Days(d) if d > MAX_DAYS => {
                Err(format!("{d} days is more than the limit of {MAX_DAYS}"))
            }
            Deadline::Hours(h) if h > MAX_HOURS => Err(format!("{h} hours is more than the limit of {MAX_HOURS}")),
            ok => Ok(ok),
        }
    }
}

impl fmt::Display for Deadline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (n, unit) = match *self {
            Deadline::BusinessDays(n) => (n, "business day"),
            Deadline::Days(n) => (n, "day"),
            Deadline::Hours(n) => (n, "hour"),
        };
        write!(f, "{n} {unit}{}", if n == 1 { "" } else { "s" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_forms_parse() {
        assert_eq!(Deadline::parse("10 business days"), Ok(Deadline::BusinessDays(10)));
        assert_eq!(Deadline::parse("1 business day"), Ok(Deadline::BusinessDays(1)));
        assert_eq!(Deadline::parse("48 hours"), Ok(Deadline::Hours(48)));
        assert_eq!(Deadline::parse(" 2  Days "), Ok(Deadline::Days(2)));
        assert_eq!(Deadline::parse("3 weeks"), Ok(Deadline::Days(21)));
        assert_eq!(Deadline::parse("1 hour"), Ok(Deadline::Hours(1)));
    }

    #[test]
    fn bad_deadlines_say_why() {
        for (text, why) in [
            ("", "empty"),
            ("ten days", "whole number"),
            ("-1 days", "whole number"),
            ("0 days", "at least 1"),
            ("10", "no unit"),
            ("10 fortnights", "unknown unit `fortnights`"),
            ("10 business", "unknown unit `business`"),
            ("5000 days", "limit"),
            ("99999 hours", "limit"),
        ] {
            let err = Deadline::parse(text).unwrap_err();
            assert!(err.contains(why), "{text:?}: {err}");
        }
    }

    #[test]
    fn display_round_trips() {
        for d in [Deadline::BusinessDays(10), Deadline::Days(1), Deadline::Hours(48)] {
            assert_eq!(Deadline::parse(&d.to_string()), Ok(d));
        }
    }
}
