//! How a delay is measured: whole hours, and business days counted with
//! the rules' calendar (weekends, French public holidays). See
//! docs/console.md.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use guichet_rules::Calendar;

/// The local (calendar time zone) date of an instant.
pub fn local_day(calendar: &Calendar, at: DateTime<Utc>) -> NaiveDate {
    at.with_timezone(&calendar.time_zone).date_naive()
}

/// Whole hours from `start` to `end` (rounded down; 0 if `end` is before).
pub fn hours(start: DateTime<Utc>, end: DateTime<Utc>) -> i64 {
    (end - start).num_hours().max(0)
}

/// Business days from `start` to `end`: the business days after the day of
/// `start` up to and including the day of `end` (local dates). Same day:
/// 0; received Friday, answered Monday: 1.
pub fn business_days(calendar: &Calendar, start: DateTime<Utc>, end: DateTime<Utc>) -> i64 {
    let (first, last) = (local_day(calendar, start), local_day(calendar, end));
    if last <= first {
        return 0;
    }
    // Bounded: a delay over ten years is counted as ten years.
    let span = (last - first).num_days().min(3700);
    (1..=span)
        .filter(|d| calendar.is_business_day(first + Duration::days(*d)))
        .count() as i64
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        chrono_tz::Europe::Paris
            .with_ymd_and_hms(y, m, d, h, 0, 0)
            .single()
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn business_days_skip_weekends_and_holidays() {
        let c = Calendar::default();
        // Friday 1 May 2026 is a holiday; Thursday 30 April → Monday 4 May: 1.
        assert_eq!(business_days(&c, at(2026, 4, 30, 10), at(2026, 5, 4, 9)), 1);
        assert_eq!(business_days(&c, at(2026, 4, 30, 10), at(2026, 4, 30, 23)), 0);
        assert_eq!(
            business_days(&c, at(2026, 5, 4, 10), at(2026, 5, 8, 10)),
            3,
            "8 May is a holiday"
        );
        assert_eq!(hours(at(2026, 5, 4, 10), at(2026, 5, 5, 9)), 23);
        assert_eq!(hours(at(2026, 5, 5, 10), at(2026, 5, 4, 9)), 0);
    }
}
