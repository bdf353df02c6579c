//! Demands with an implicit decision (CRPA L231-1 and following: the
//! administration's silence is worth acceptance or rejection after a
//! delay), and the calendar arithmetic of that delay.
//!
//! Month arithmetic: the same day of the month `n` months later, or the
//! last day of that month when it is shorter (31 January + 1 month = 28
//! February, or 29 in a leap year; 30 November + 3 months = 28/29
//! February), at the same wall-clock time in Europe/Paris.

use chrono::{DateTime, Days, Months, TimeZone, Utc};
use chrono_tz::Europe::Paris;

/// A delay of the rules file: "2 months", "1 month", "15 days".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegalDelay {
    Months(u32),
    Days(u32),
}

impl LegalDelay {
    /// Parses "N month(s)" / "N mois" / "N day(s)" / "N jour(s)".
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut words = text.split_whitespace();
        let (Some(n), Some(unit), None) = (words.next(), words.next(), words.next()) else {
            return Err(format!(
                "`{}`: expected a number and a unit, e.g. \"2 months\"",
                text.escape_default()
            ));
        };
        let n: u32 = n
            .parse()
            .ok()
            .filter(|n| (1..=120).contains(n))
            .ok_or_else(|| format!("`{}`: the number must be 1 to 120", text.escape_default()))?;
        match unit.to_ascii_lowercase().as_str() {
            "month" | "months" | "mois" => Ok(Self::Months(n)),
            "day" | "days" | "jour" | "jours" => Ok(Self::Days(n)),
            _ => Err(format!("`{}`: the unit is months or days", text.escape_default())),
        }
    }

    /// `from` plus the delay, in Europe/Paris calendar terms.
    pub fn after(self, from: DateTime<Utc>) -> DateTime<Utc> {
        let local = from.with_timezone(&Paris).naive_local();
        let moved = match self {
            Self::Months(n) => local.checked_add_months(Months::new(n)),
            Self::Days(n) => local.checked_add_days(Days::new(u64::from(n))),
        }
        .unwrap_or(local);
        // A time that does not exist (DST gap) or exists twice: the
        // earliest instant that is not before it.
        Paris
            .from_local_datetime(&moved)
            .earliest()
            .or_else(|| {
                Paris
                    .from_local_datetime(&(moved + chrono::Duration::hours(1)))
                    .earliest()
            })
            .map_or(from, |t| t.with_timezone(&Utc))
    }
}

/// What silence is worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImplicitKind {
    Acceptance,
    Rejection,
}

impl ImplicitKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Acceptance => "acceptance",
            Self::Rejection => "rejection",
        }
    }
}

/// `implicit_decision = { kind = "acceptance", delay = "2 months" }` on a
/// rule or a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImplicitDecision {
    pub kind: ImplicitKind,
    pub delay: LegalDelay,
}

impl std::fmt::Display for LegalDelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Months(1) => write!(f, "1 month"),
            Self::Months(n) => write!(f, "{n} months"),
            Self::Days(1) => write!(f, "1 day"),
            Self::Days(n) => write!(f, "{n} days"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paris(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Paris
            .with_ymd_and_hms(y, m, d, h, 0, 0)
            .single()
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn months_end_on_the_last_day_of_a_shorter_month() {
        let two = LegalDelay::parse("1 month").unwrap();
        assert_eq!(two.after(paris(2026, 1, 31, 10)), paris(2026, 2, 28, 10));
        assert_eq!(two.after(paris(2028, 1, 31, 10)), paris(2028, 2, 29, 10), "leap year");
        assert_eq!(
            LegalDelay::parse("2 months").unwrap().after(paris(2026, 3, 15, 9)),
            paris(2026, 5, 15, 9)
        );
        assert_eq!(
            LegalDelay::parse("3 mois").unwrap().after(paris(2025, 11, 30, 9)),
            paris(2026, 2, 28, 9)
        );
        // Across the change to summer time: same wall-clock time.
        assert_eq!(
            LegalDelay::parse("15 days").unwrap().after(paris(2026, 3, 20, 9)),
            paris(2026, 4, 4, 9)
        );
    }

    #[test]
    fn bad_delays_say_why() {
        for bad in ["", "2", "two months", "0 months", "2 weeks", "2 months later"] {
            assert!(LegalDelay::parse(bad).is_err(), "{bad}");
        }
    }
}
