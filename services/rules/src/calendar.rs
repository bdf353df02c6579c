//! The business calendar: weekends, French public holidays (computed for
//! any year), the two extra days of Alsace-Moselle, the authority's own
//! closures, and the due dates that follow from them.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;

use crate::Deadline;

/// Easter Sunday of a Gregorian year (anonymous Gregorian algorithm,
/// Meeus/Jones/Butcher). `None` only outside chrono's date range.
pub fn easter_sunday(year: i32) -> Option<NaiveDate> {
    let a = year.rem_euclid(19);
    let b = year.div_euclid(100);
    let c = year.rem_euclid(100);
    let d = b / 4;
    let e = b % 4;
    let f = (b + 8) / 25;
    let g = (b - f + 1) / 3;
    let h = (19 * a + b - d - g + 15) % 30;
    let i = c / 4;
    let k = c % 4;
    let l = (32 + 2 * e + 2 * i - h - k) % 7;
    let m = (a + 11 * h + 22 * l) / 451;
    let month = (h + l - 7 * m + 114) / 31;
    let day = (h + l - 7 * m + 114) % 31 + 1;
    NaiveDate::from_ymd_opt(year, u32::try_from(month).ok()?, u32::try_from(day).ok()?)
}

/// The public holidays of a year in France (Code du travail L3133-1), plus
/// Good Friday and 26 December in Alsace-Moselle (L3134-13), sorted.
pub fn public_holidays(year: i32, alsace_moselle: bool) -> Vec<(NaiveDate, &'static str)> {
    let mut days: Vec<(NaiveDate, &'static str)> = Vec::with_capacity(13);
    let mut fixed = |month, day, name| {
        if let Some(d) = NaiveDate::from_ymd_opt(year, month, day) {
            days.push((d, name));
        }
    };
    fixed(1, 1, "New Year's Day (jour de l'an)");
    fixed(5, 1, "Labour Day (fête du travail)");
    fixed(5, 8, "Victory in Europe Day (8 mai 1945)");
    fixed(7, 14, "Bastille Day (fête nationale)");
    fixed(8, 15, "Assumption (Assomption)");
    fixed(11, 1, "All Saints' Day (Toussaint)");
    fixed(11, 11, "Armistice Day (11 novembre)");
    fixed(12, 25, "Christmas Day (Noël)");
    if alsace_moselle {
        fixed(12, 26, "St Stephen's Day (Alsace-Moselle)");
    }
    if let Some(easter) = easter_sunday(year) {
        days.push((easter + Duration::days(1), "Easter Monday (lundi de Pâques)"));
        days.push((easter + Duration::days(39), "Ascension Day (Ascension)"));
        days.push((easter + Duration::days(50), "Whit Monday (lundi de Pentecôte)"));
        if alsace_moselle {
            days.push((easter - Duration::days(2), "Good Friday (Alsace-Moselle)"));
        }
    }
    days.sort();
    days
}

/// When a deadline falls: the instant, and its calendar date in the
/// calendar's time zone (what a letter to the usager states).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Due {
    pub at: DateTime<Utc>,
    pub date: NaiveDate,
}

impl Due {
    /// The date as `YYYY-MM-DD` (`Qualification.due_date`).
    pub fn date_string(&self) -> String {
        self.date.format("%Y-%m-%d").to_string()
    }
}

/// The `[calendar]` section of a rules file.
#[derive(Clone, Debug, PartialEq)]
pub struct Calendar {
    pub time_zone: Tz,
    /// When a business day ends: business-day and calendar-day deadlines
    /// expire at this local time.
    pub business_hours_end: NaiveTime,
    /// Good Friday and 26 December are holidays too (Bas-Rhin, Haut-Rhin, Moselle).
    pub alsace_moselle: bool,
    /// The authority's own closure days (bridges, Christmas Eve, ...).
    pub closures: BTreeSet<NaiveDate>,
}

impl Default for Calendar {
    fn default() -> Self {
        Calendar {
            time_zone: chrono_tz::Europe::Paris,
            business_hours_end: NaiveTime::from_hms_opt(17, 0, 0).unwrap_or(NaiveTime::MIN),
            alsace_moselle: false,
            closures: BTreeSet::new(),
        }
    }
}

/// The last instant a due date is computed from: 9000-01-01.
fn far_future() -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(9000, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map_or(DateTime::<Utc>::UNIX_EPOCH, |t| t.and_utc())
}

impl Calendar {
    /// Why `date` is not a business day, or `None` when it is one.
    pub fn closed_because(&self, date: NaiveDate) -> Option<&'static str> {
        match date.weekday() {
            Weekday::Sat => return Some("Saturday"),
            Weekday::Sun => return Some("Sunday"),
            _ => {}
        }
        if self.closures.contains(&date) {
            return Some("closure");
        }
        public_holidays(date.year(), self.alsace_moselle)
            .into_iter()
            .find(|(d, _)| *d == date)
            .map(|(_, name)| name)
    }

    pub fn is_business_day(&self, date: NaiveDate) -> bool {
        self.closed_because(date).is_none()
    }

    /// The first business day on or after `date`.
    pub fn next_business_day_from(&self, date: NaiveDate) -> NaiveDate {
        let mut d = date;
        // A year has at most ~130 closed days; the bound only guards
        // against a calendar that closes everything.
        for _ in 0..4000 {
            if self.is_business_day(d) {
                return d;
            }
            d = d.succ_opt().unwrap_or(d);
        }
        d
    }

    /// An instant as local time in the calendar's zone, for operators:
    /// `2026-12-28 17:00 CET`.
    pub fn local_time(&self, at: DateTime<Utc>) -> String {
        at.with_timezone(&self.time_zone)
            .format("%Y-%m-%d %H:%M %Z")
            .to_string()
    }

    /// When a contact received at `received_at` is due, under `deadline`.
    pub fn due(&self, received_at: DateTime<Utc>, deadline: Deadline) -> Due {
        // A `received_at` outside any plausible range (a damaged or hostile
        // contact: chrono's extremes panic in time-zone arithmetic) is
        // taken at the nearest plausible instant.
        let plausible = DateTime::<Utc>::UNIX_EPOCH..=far_future();
        let received_at = received_at.clamp(*plausible.start(), *plausible.end());
        let received_day = received_at.with_timezone(&self.time_zone).date_naive();
        let last_day = match deadline {
            Deadline::Hours(h) => {
                // Saturating: a `received_at` near the end of chrono's
                // range must not panic whoever computes a due date.
                let at = received_at
                    .checked_add_signed(Duration::hours(i64::from(h)))
                    .unwrap_or(DateTime::<Utc>::MAX_UTC);
                return Due {
                    at,
                    date: at.with_timezone(&self.time_zone).date_naive(),
                };
            }
            Deadline::BusinessDays(n) => {
                let mut d = received_day;
                for _ in 0..n {
                    d = self.next_business_day_from(d.succ_opt().unwrap_or(d));
                }
                d
            }
            Deadline::Days(n) => {
                let d = received_day
                    .checked_add_days(chrono::Days::new(u64::from(n)))
                    .unwrap_or(received_day);
                self.next_business_day_from(d)
            }
        };
        Due {
            at: self.end_of_business_day(last_day),
            date: last_day,
        }
    }

    /// When the `due_soon` alert of a deadline `due` goes out, `lead`
    /// before it: business days are counted back on this calendar (2
    /// business days before Monday 17:00 is the end of the Thursday
    /// before, when the Friday is a holiday), days and hours exactly.
    pub fn before(&self, due: DateTime<Utc>, lead: Deadline) -> DateTime<Utc> {
        let back = match lead {
            Deadline::Hours(h) => Duration::hours(i64::from(h)),
            Deadline::Days(n) => Duration::days(i64::from(n)),
            Deadline::BusinessDays(n) => {
                let mut d = due.with_timezone(&self.time_zone).date_naive();
                for _ in 0..n {
                    // The previous business day; bounded as next_business_day_from.
                    for _ in 0..4000 {
                        d = d.pred_opt().unwrap_or(d);
                        if self.is_business_day(d) {
                            break;
                        }
                    }
                }
                return self.end_of_business_day(d).min(due);
            }
        };
        due.checked_sub_signed(back).unwrap_or(due)
    }

    /// The engagement deadline `due` after the request waited for the
    /// usager from `since` to `until`: the time waited is given back in
    /// the unit the deadline is counted in (`deadline`, the rule's or its
    /// service's; `None` when the rules no longer say, then read from
    /// `due` itself: the end of a business day is a day deadline, any
    /// other instant an exact one).
    ///
    /// - business days: `due` moves by the business days in
    ///   (`since`'s day, `until`'s day], the days the request waited
    ///   (the suspension day was worked; the resume day was not, as the
    ///   day of receipt never counts);
    /// - calendar days: by the calendar days between those two days,
    ///   then to the next business day, as [`Calendar::due`] does;
    /// - hours: by the exact time waited.
    pub fn after_suspension(
        &self,
        due: DateTime<Utc>,
        deadline: Option<Deadline>,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Due {
        let until = until.max(since);
        let local = |at: DateTime<Utc>| at.with_timezone(&self.time_zone).date_naive();
        let (due_day, since_day, until_day) = (local(due), local(since), local(until));
        let counted_in_days = match deadline {
            Some(Deadline::Hours(_)) => None,
            Some(Deadline::BusinessDays(_)) => Some(true),
            Some(Deadline::Days(_)) => Some(false),
            None if self.is_business_day(due_day) && self.end_of_business_day(due_day) == due => Some(true),
            None => None,
        };
        let last_day = match counted_in_days {
            None => {
                let at = due.checked_add_signed(until - since).unwrap_or(due);
                return Due { at, date: local(at) };
            }
            Some(true) => {
                let mut waited = 0u32;
                let mut d = since_day;
                while d < until_day {
                    d = d.succ_opt().unwrap_or(until_day);
                    if self.is_business_day(d) {
                        waited = waited.saturating_add(1);
                    }
                }
                let mut last = due_day;
                for _ in 0..waited {
                    last = self.next_business_day_from(last.succ_opt().unwrap_or(last));
                }
                last
            }
            Some(false) => {
                let waited = u64::try_from((until_day - since_day).num_days()).unwrap_or(0);
                let last = due_day.checked_add_days(chrono::Days::new(waited)).unwrap_or(due_day);
                self.next_business_day_from(last)
            }
        };
        if last_day == due_day {
            return Due { at: due, date: due_day };
        }
        Due {
            at: self.end_of_business_day(last_day),
            date: last_day,
        }
    }

    /// `business_hours_end` of `date`, local time, as an instant. In a DST
    /// gap the first valid instant after it; when ambiguous the earlier one.
    fn end_of_business_day(&self, date: NaiveDate) -> DateTime<Utc> {
        let local = date.and_time(self.business_hours_end);
        for shift in 0..4 {
            let Some(candidate) = local.checked_add_signed(Duration::minutes(30 * shift)) else {
                break;
            };
            if let Some(at) = self.time_zone.from_local_datetime(&candidate).earliest() {
                return at.with_timezone(&Utc);
            }
        }
        Utc.from_utc_datetime(&local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn cal() -> Calendar {
        Calendar::default()
    }

    #[test]
    fn easter_is_right_across_centuries() {
        for (year, easter) in [
            (1961, "1961-04-02"),
            (2000, "2000-04-23"),
            (2008, "2008-03-23"),
            (2011, "2011-04-24"),
            (2019, "2019-04-21"),
            (2024, "2024-03-31"),
            (2025, "2025-04-20"),
            (2026, "2026-04-05"),
            (2027, "2027-03-28"),
            (2028, "2028-04-16"),
            (2029, "2029-04-01"),
            (2030, "2030-04-21"),
            (2038, "2038-04-25"),
            (2285, "2285-03-22"),
        ] {
            assert_eq!(easter_sunday(year), Some(d(easter)), "{year}");
        }
    }

    #[test]
    fn movable_holidays_follow_easter() {
        let has = |year, date: &str, am| public_holidays(year, am).iter().any(|(x, _)| *x == d(date));
        for (year, monday, ascension, whit) in [
            (2025, "2025-04-21", "2025-05-29", "2025-06-09"),
            (2026, "2026-04-06", "2026-05-14", "2026-05-25"),
            (2027, "2027-03-29", "2027-05-06", "2027-05-17"),
            (2028, "2028-04-17", "2028-05-25", "2028-06-05"),
        ] {
            assert!(has(year, monday, false), "Easter Monday {year}");
            assert!(has(year, ascension, false), "Ascension {year}");
            assert!(has(year, whit, false), "Whit Monday {year}");
        }
        assert_eq!(public_holidays(2026, false).len(), 11);
        assert_eq!(public_holidays(2026, true).len(), 13);
        assert!(
            has(2026, "2026-04-03", true) && !has(2026, "2026-04-03", false),
            "Good Friday"
        );
        assert!(has(2026, "2026-12-26", true) && !has(2026, "2026-12-26", false));
    }

    #[test]
    fn closed_days_say_why() {
        let mut c = cal();
        c.closures.insert(d("2026-12-24"));
        assert_eq!(
            c.closed_because(d("2026-04-06")),
            Some("Easter Monday (lundi de Pâques)")
        );
        assert_eq!(c.closed_because(d("2026-07-14")), Some("Bastille Day (fête nationale)"));
        assert_eq!(c.closed_because(d("2026-12-24")), Some("closure"));
        assert_eq!(c.closed_because(d("2026-11-28")), Some("Saturday"));
        assert_eq!(c.closed_because(d("2026-11-29")), Some("Sunday"));
        assert_eq!(c.closed_because(d("2026-11-30")), None);
        // 2027-05-08 is a Saturday: still closed, as a Saturday.
        assert_eq!(c.closed_because(d("2027-05-08")), Some("Saturday"));
    }

    #[test]
    fn business_days_skip_weekends_and_the_day_of_receipt() {
        // Monday 2026-11-30 10:00 Paris: day 1 is Tuesday.
        let due = cal().due(utc("2026-11-30T09:00:00Z"), Deadline::BusinessDays(1));
        assert_eq!(due.date, d("2026-12-01"));
        // 17:00 Paris in winter is 16:00 UTC.
        assert_eq!(due.at, utc("2026-12-01T16:00:00Z"));
        // Friday afternoon + 1 business day = Monday.
        let due = cal().due(utc("2026-12-04T15:00:00Z"), Deadline::BusinessDays(1));
        assert_eq!(due.date, d("2026-12-07"));
        // Received on a Saturday: Monday is day 1.
        let due = cal().due(utc("2026-12-05T10:00:00Z"), Deadline::BusinessDays(1));
        assert_eq!(due.date, d("2026-12-07"));
        // 10 business days from Monday 2026-11-30: two full weeks.
        let due = cal().due(utc("2026-11-30T09:00:00Z"), Deadline::BusinessDays(10));
        assert_eq!(due.date, d("2026-12-14"));
    }

    #[test]
    fn the_day_of_receipt_is_taken_in_paris_not_utc() {
        // Friday 23:30 UTC is already Saturday 00:30 in Paris.
        let due = cal().due(utc("2026-12-04T23:30:00Z"), Deadline::BusinessDays(1));
        assert_eq!(due.date, d("2026-12-07"));
        // Monday 00:30 Paris is Sunday 23:30 UTC: day 1 is Tuesday.
        let due = cal().due(utc("2026-12-06T23:30:00Z"), Deadline::BusinessDays(1));
        assert_eq!(due.date, d("2026-12-08"));
    }

    #[test]
    fn easter_based_holidays_are_skipped_in_several_years() {
        // Thursday before Easter 2026 (2026-04-02) + 2 business days:
        // Fri 3, (Easter Monday 6 closed) → Tue 7.
        assert_eq!(
            cal().due(utc("2026-04-02T08:00:00Z"), Deadline::BusinessDays(2)).date,
            d("2026-04-07")
        );
        // In Alsace-Moselle Good Friday is closed too: Tue 7, Wed 8.
        let am = Calendar {
            alsace_moselle: true,
            ..cal()
        };
        assert_eq!(
            am.due(utc("2026-04-02T08:00:00Z"), Deadline::BusinessDays(2)).date,
            d("2026-04-08")
        );
        // 2027: Easter Monday 29 March.
        assert_eq!(
            cal().due(utc("2027-03-26T08:00:00Z"), Deadline::BusinessDays(1)).date,
            d("2027-03-30")
        );
        // 2028: Easter Monday 17 April.
        assert_eq!(
            cal().due(utc("2028-04-14T08:00:00Z"), Deadline::BusinessDays(1)).date,
            d("2028-04-18")
        );
        // Ascension 2026 (Thu 14 May): Wed 13 + 1 → Fri 15.
        assert_eq!(
            cal().due(utc("2026-05-13T08:00:00Z"), Deadline::BusinessDays(1)).date,
            d("2026-05-15")
        );
        // Whit Monday 2026 (25 May): Fri 22 + 1 → Tue 26.
        assert_eq!(
            cal().due(utc("2026-05-22T08:00:00Z"), Deadline::BusinessDays(1)).date,
            d("2026-05-26")
        );
        // May 2026 bridges: Fri 1 May and Fri 8 May are holidays.
        // Thu 30 April + 5 business days: Mon 4, Tue 5, Wed 6, Thu 7, Mon 11.
        assert_eq!(
            cal().due(utc("2026-04-30T08:00:00Z"), Deadline::BusinessDays(5)).date,
            d("2026-05-11")
        );
    }

    #[test]
    fn year_end_with_closures() {
        let mut c = cal();
        c.closures.extend([d("2026-12-24"), d("2026-12-31")]);
        // Wed 2026-12-23 + 1: 24 closed, 25 Christmas, 26-27 weekend → Mon 28.
        assert_eq!(
            c.due(utc("2026-12-23T10:00:00Z"), Deadline::BusinessDays(1)).date,
            d("2026-12-28")
        );
        // Received on the 24th (closed): Mon 28, Tue 29, Wed 30, (31 closed,
        // 1 Jan holiday, 2-3 weekend) Mon 4 January 2027.
        let due = c.due(utc("2026-12-24T09:00:00Z"), Deadline::BusinessDays(4));
        assert_eq!(due.date, d("2027-01-04"));
        assert_eq!(due.at, utc("2027-01-04T16:00:00Z"));
        assert_eq!(due.date_string(), "2027-01-04");
        // Without the closures the 24th is day 1: 24, 28, 29, 30.
        assert_eq!(
            cal().due(utc("2026-12-23T10:00:00Z"), Deadline::BusinessDays(4)).date,
            d("2026-12-30")
        );
        // Alsace-Moselle: 26 December is a holiday, here a Saturday anyway;
        // in 2025 it is a Friday.
        let am = Calendar {
            alsace_moselle: true,
            ..cal()
        };
        assert_eq!(
            am.due(utc("2025-12-24T10:00:00Z"), Deadline::BusinessDays(1)).date,
            d("2025-12-29")
        );
        assert_eq!(
            cal().due(utc("2025-12-24T10:00:00Z"), Deadline::BusinessDays(1)).date,
            d("2025-12-26")
        );
    }

    #[test]
    fn hours_are_exact_whatever_the_calendar() {
        // Saturday evening + 48 hours = Monday evening, to the second.
        let at = utc("2026-12-05T18:30:15Z");
        let due = cal().due(at, Deadline::Hours(48));
        assert_eq!(due.at, utc("2026-12-07T18:30:15Z"));
        assert_eq!(due.date, d("2026-12-07"));
        // Across the autumn DST change: still 48 real hours.
        let due = cal().due(utc("2026-10-24T12:00:00Z"), Deadline::Hours(48));
        assert_eq!(due.at, utc("2026-10-26T12:00:00Z"));
        // The date is the Paris date: 23:30 UTC in winter is the next day.
        let due = cal().due(utc("2026-12-01T21:30:00Z"), Deadline::Hours(1));
        assert_eq!(due.date, d("2026-12-01"));
        let due = cal().due(utc("2026-12-01T21:30:00Z"), Deadline::Hours(2));
        assert_eq!(due.date, d("2026-12-02"));
    }

    #[test]
    fn calendar_days_end_on_a_business_day() {
        // Thu 2026-12-03 + 2 days = Sat 5 → Monday 7.
        assert_eq!(
            cal().due(utc("2026-12-03T10:00:00Z"), Deadline::Days(2)).date,
            d("2026-12-07")
        );
        // Mon 2026-11-30 + 2 days = Wed 2 December.
        let due = cal().due(utc("2026-11-30T10:00:00Z"), Deadline::Days(2));
        assert_eq!(due.date, d("2026-12-02"));
        assert_eq!(due.at, utc("2026-12-02T16:00:00Z"));
        // Landing on Easter Monday 2027 moves to Tuesday.
        assert_eq!(
            cal().due(utc("2027-03-22T10:00:00Z"), Deadline::Days(7)).date,
            d("2027-03-30")
        );
    }

    #[test]
    fn business_hours_end_follows_summer_time() {
        // 17:00 Paris in summer (UTC+2) is 15:00 UTC.
        let due = cal().due(utc("2026-06-01T08:00:00Z"), Deadline::BusinessDays(1));
        assert_eq!(due.at, utc("2026-06-02T15:00:00Z"));
        let late = Calendar {
            business_hours_end: NaiveTime::from_hms_opt(18, 30, 0).unwrap(),
            ..cal()
        };
        assert_eq!(
            late.due(utc("2026-06-01T08:00:00Z"), Deadline::BusinessDays(1)).at,
            utc("2026-06-02T16:30:00Z")
        );
    }

    #[test]
    fn due_dates_near_the_ends_of_time_do_not_panic() {
        let cal = cal();
        for at in [DateTime::<Utc>::MAX_UTC, DateTime::<Utc>::MIN_UTC] {
            for deadline in [Deadline::Hours(48), Deadline::BusinessDays(10), Deadline::Days(60)] {
                let due = cal.due(at, deadline);
                assert!(due.at > DateTime::<Utc>::UNIX_EPOCH && due.at < far_future() + Duration::days(400));
            }
        }
    }

    #[test]
    fn a_suspension_gives_back_the_business_days_waited() {
        let c = cal();
        // Due Wed 31 Dec 2025 17:00 Paris (16:00 UTC); waited from Tue 30
        // Dec to Wed 31 Dec: one business day (31) given back; Thu 1 Jan
        // is a holiday → Fri 2 January 2026.
        let due = c.after_suspension(
            utc("2025-12-31T16:00:00Z"),
            Some(Deadline::BusinessDays(2)),
            utc("2025-12-30T09:00:00Z"),
            utc("2025-12-31T09:00:00Z"),
        );
        assert_eq!((due.date, due.at), (d("2026-01-02"), utc("2026-01-02T16:00:00Z")));
        // Read from the due date itself when the rules no longer say.
        assert_eq!(
            c.after_suspension(
                utc("2025-12-31T16:00:00Z"),
                None,
                utc("2025-12-30T09:00:00Z"),
                utc("2025-12-31T09:00:00Z")
            ),
            due
        );
        // Waited Fri 29 May → Tue 2 June 2026: Mon 1, Tue 2 (the weekend
        // does not count): due Fri 29 May → Tue 2 June.
        assert_eq!(
            c.after_suspension(
                utc("2026-05-29T15:00:00Z"),
                Some(Deadline::BusinessDays(5)),
                utc("2026-05-29T08:00:00Z"),
                utc("2026-06-02T08:00:00Z")
            )
            .date,
            d("2026-06-02")
        );
        // Asked and answered the same day: nothing to give back.
        let same = c.after_suspension(
            utc("2026-06-05T15:00:00Z"),
            Some(Deadline::BusinessDays(5)),
            utc("2026-06-01T08:00:00Z"),
            utc("2026-06-01T15:00:00Z"),
        );
        assert_eq!(same.at, utc("2026-06-05T15:00:00Z"));
    }

    #[test]
    fn a_suspension_in_calendar_days_or_hours() {
        let c = cal();
        // "10 days": due Mon 12 Jan 2026; waited Mon 29 Dec → Fri 2 Jan
        // (4 days): Fri 16 January.
        assert_eq!(
            c.after_suspension(
                utc("2026-01-12T16:00:00Z"),
                Some(Deadline::Days(10)),
                utc("2025-12-29T10:00:00Z"),
                utc("2026-01-02T10:00:00Z")
            )
            .date,
            d("2026-01-16")
        );
        // "3 days": due Tue 28 April 2026; waited Fri 24 → Tue 28 April
        // (4 days): Sat 2 May, not a business day → Mon 4 May.
        assert_eq!(
            c.after_suspension(
                utc("2026-04-28T15:00:00Z"),
                Some(Deadline::Days(3)),
                utc("2026-04-24T10:00:00Z"),
                utc("2026-04-28T10:00:00Z")
            )
            .date,
            d("2026-05-04")
        );
        // Hours: the exact time waited, whatever the calendar.
        let due = c.after_suspension(
            utc("2025-12-31T12:30:00Z"),
            Some(Deadline::Hours(48)),
            utc("2025-12-30T10:00:00Z"),
            utc("2025-12-31T13:15:00Z"),
        );
        assert_eq!(due.at, utc("2026-01-01T15:45:00Z"));
        assert_eq!(due.date, d("2026-01-01"));
    }

    #[test]
    fn due_soon_counts_business_days_back() {
        let c = cal();
        // Due Monday 4 May 2026 17:00 Paris (15:00 UTC); Friday 1 May is a
        // holiday: 2 business days before is Wednesday 29 April, 17:00.
        assert_eq!(
            c.before(utc("2026-05-04T15:00:00Z"), Deadline::BusinessDays(2)),
            utc("2026-04-29T15:00:00Z")
        );
        // Due Friday 2 January 2026 17:00 (16:00 UTC): 1 business day
        // before is Wednesday 31 December (1 January a holiday).
        assert_eq!(
            c.before(utc("2026-01-02T16:00:00Z"), Deadline::BusinessDays(1)),
            utc("2025-12-31T16:00:00Z")
        );
        assert_eq!(
            c.before(utc("2026-01-02T16:00:00Z"), Deadline::Hours(36)),
            utc("2026-01-01T04:00:00Z")
        );
        assert_eq!(
            c.before(utc("2026-01-02T16:00:00Z"), Deadline::Days(3)),
            utc("2025-12-30T16:00:00Z")
        );
    }

    #[test]
    fn a_long_deadline_crosses_a_year() {
        // 30 business days from Mon 2026-11-30, with closures 24 and 31
        // December, counted independently day by day.
        let mut c = cal();
        c.closures.extend([d("2026-12-24"), d("2026-12-31")]);
        let mut expected = d("2026-11-30");
        let mut left = 30;
        while left > 0 {
            expected = expected.succ_opt().unwrap();
            let wd = expected.weekday();
            let closed = matches!(wd, Weekday::Sat | Weekday::Sun)
                || [d("2026-12-24"), d("2026-12-25"), d("2026-12-31"), d("2027-01-01")].contains(&expected);
            if !closed {
                left -= 1;
            }
        }
        assert_eq!(
            c.due(utc("2026-11-30T10:00:00Z"), Deadline::BusinessDays(30)).date,
            expected
        );
        // December: 1-4, 7-11, 14-18, 21-23, 28-30 (20); January: 4-8, 11-15.
        assert_eq!(expected, d("2027-01-15"));
    }
}
