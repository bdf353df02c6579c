//! Days, weeks and months: how the series is cut, and the day numbers the
//! tables store (days since 1970-01-01, so a period is an integer range).

use chrono::{Datelike, Duration, NaiveDate};
use serde::{Deserialize, Serialize};

/// How the series is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    Day,
    /// ISO weeks, Monday first.
    Week,
    Month,
}

impl std::str::FromStr for Granularity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "day" => Ok(Self::Day),
            "week" => Ok(Self::Week),
            "month" => Ok(Self::Month),
            other => Err(format!("granularity `{other}`: expected day, week or month")),
        }
    }
}

impl Granularity {
    /// The first day of the period holding `day`.
    pub fn start_of(self, day: NaiveDate) -> NaiveDate {
        match self {
            Self::Day => day,
            Self::Week => day - Duration::days(i64::from(day.weekday().num_days_from_monday())),
            Self::Month => day.with_day(1).unwrap_or(day),
        }
    }
}

/// 1970-01-01.
fn epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or(NaiveDate::MIN)
}

/// The stored number of a day.
pub fn day_number(day: NaiveDate) -> i64 {
    (day - epoch()).num_days()
}

/// The day of a stored number (saturating at chrono's limits).
pub fn day_of(number: i64) -> NaiveDate {
    Duration::try_days(number)
        .and_then(|d| epoch().checked_add_signed(d))
        .unwrap_or(if number < 0 { NaiveDate::MIN } else { NaiveDate::MAX })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_start_on_monday_and_the_first() {
        let d = NaiveDate::from_ymd_opt(2026, 3, 5).unwrap_or(NaiveDate::MIN); // a Thursday
        assert_eq!(
            Granularity::Week.start_of(d),
            NaiveDate::from_ymd_opt(2026, 3, 2).unwrap_or(NaiveDate::MIN)
        );
        assert_eq!(
            Granularity::Month.start_of(d),
            NaiveDate::from_ymd_opt(2026, 3, 1).unwrap_or(NaiveDate::MIN)
        );
        assert_eq!(day_of(day_number(d)), d);
        assert_eq!(day_number(epoch()), 0);
    }
}
