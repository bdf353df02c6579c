//! The overview's queries: sums over the daily aggregates and delay
//! histograms (a handful of grouped scans however many requests there
//! are), and the current backlog from the request rows.

use std::collections::BTreeMap;

use chrono::{Datelike, Months, NaiveDate, Utc};
use sqlx::{Any, Row, any::AnyArguments, query::Query};

use super::{
    Backlog, Delay, Filter, MixRow, Overview, Point, Share, Volumes,
    period::day_number,
    table::{Table, ToTables, decimal, int, opt, percent},
};
use crate::{ConsoleError, store::Store};

/// The milestones measured, in the order shown.
pub const MILESTONES: [&str; 4] = ["acknowledgment", "take", "first_answer", "closure"];

/// A value bound to a statement.
#[derive(Debug, Clone)]
pub(crate) enum Bind {
    Int(i64),
    Text(String),
}

/// `AND service = $n …` for the filter's dimensions, numbered after `first`.
pub(crate) fn dims_clause(filter: &Filter, first: usize, binds: &mut Vec<Bind>) -> String {
    let mut sql = String::new();
    let mut n = first;
    for (column, value) in [
        ("service", &filter.service),
        ("channel", &filter.channel),
        ("typology", &filter.typology),
        ("site", &filter.site),
    ] {
        if let Some(v) = value {
            sql.push_str(&format!(" AND {column} = ${n}"));
            binds.push(Bind::Text(v.clone()));
            n += 1;
        }
    }
    sql
}

pub(crate) fn bind_all<'q>(
    mut q: Query<'q, Any, AnyArguments<'q>>,
    binds: &'q [Bind],
) -> Query<'q, Any, AnyArguments<'q>> {
    for b in binds {
        q = match b {
            Bind::Int(i) => q.bind(*i),
            Bind::Text(s) => q.bind(s.as_str()),
        };
    }
    q
}

fn db(what: &'static str) -> impl Fn(sqlx::Error) -> ConsoleError {
    move |e| ConsoleError::db(what, e)
}

/// The counts of the daily table, in SELECT order.
const SUMS: &str = "CAST(SUM(received) AS BIGINT), CAST(SUM(closed) AS BIGINT), CAST(SUM(answered) AS BIGINT), \
    CAST(SUM(recontacts) AS BIGINT), CAST(SUM(transfers_in) AS BIGINT), CAST(SUM(transfers_out) AS BIGINT), \
    CAST(SUM(reopenings) AS BIGINT), CAST(SUM(manual) AS BIGINT), CAST(SUM(within_engagement) AS BIGINT), \
    CAST(SUM(with_engagement) AS BIGINT), CAST(SUM(within_legal) AS BIGINT), CAST(SUM(with_legal) AS BIGINT)";

/// One day's (or the past's) sums.
#[derive(Debug, Default, Clone, Copy)]
struct Sums {
    v: [i64; 12],
}

impl Sums {
    fn read(row: &sqlx::any::AnyRow, offset: usize) -> Result<Self, ConsoleError> {
        let mut v = [0i64; 12];
        for (i, slot) in v.iter_mut().enumerate() {
            *slot = row
                .try_get::<Option<i64>, _>(offset + i)
                .map_err(db("decoding the daily counts"))?
                .unwrap_or(0);
        }
        Ok(Self { v })
    }

    fn add(&mut self, other: &Sums) {
        for (a, b) in self.v.iter_mut().zip(other.v.iter()) {
            *a += b;
        }
    }

    /// Requests entering minus leaving the backlog.
    fn net(&self) -> i64 {
        let [received, closed, _, _, t_in, t_out, reopened, ..] = self.v;
        received + reopened + t_in - closed - t_out
    }
}

/// The one dimension a filter names: `("", "")` for none, `None` for
/// several (read from the tables per combination).
fn single_dimension(filter: &Filter) -> Option<(&'static str, String)> {
    let named: Vec<(&'static str, &String)> = [
        ("service", &filter.service),
        ("channel", &filter.channel),
        ("typology", &filter.typology),
        ("site", &filter.site),
    ]
    .into_iter()
    .filter_map(|(d, v)| v.as_ref().map(|v| (d, v)))
    .collect();
    match named.as_slice() {
        [] => Some(("", String::new())),
        [(dimension, member)] => Some((dimension, (*member).clone())),
        _ => None,
    }
}

/// Where the daily counts of `filter` are, and the condition selecting
/// them (binds numbered after `binds`): the per-dimension totals (one row
/// a day) for none or one dimension, the combinations otherwise.
fn counts_source(filter: &Filter, binds: &mut Vec<Bind>) -> (&'static str, String) {
    match single_dimension(filter) {
        Some((dimension, member)) => {
            let n = binds.len();
            binds.push(Bind::Text(dimension.to_owned()));
            binds.push(Bind::Text(member));
            (
                "totals_by",
                format!(" AND dimension = ${} AND member = ${}", n + 1, n + 2),
            )
        }
        None => {
            let first = binds.len() + 1;
            ("daily", dims_clause(filter, first, binds))
        }
    }
}

/// An inclusive range of day numbers.
type Days = (i64, i64);

/// Cuts `from..=to` into the whole months it covers (the day numbers of
/// the first and last one's first days) and the days around them.
fn whole_months(from: NaiveDate, to: NaiveDate) -> (Option<Days>, Vec<Days>) {
    let first = if from.day() == 1 {
        Some(from)
    } else {
        from.with_day(1).and_then(|d| d.checked_add_months(Months::new(1)))
    };
    // The last day of the last whole month.
    let end = if to.succ_opt().is_none_or(|d| d.day() == 1) {
        Some(to)
    } else {
        to.with_day(1).and_then(|d| d.pred_opt())
    };
    match (first, end) {
        (Some(first), Some(end)) if first < end => {
            let mut days = Vec::new();
            if from < first {
                days.push((day_number(from), day_number(first) - 1));
            }
            if end < to {
                days.push((day_number(end) + 1, day_number(to)));
            }
            let last = end.with_day(1).unwrap_or(end);
            (Some((day_number(first), day_number(last))), days)
        }
        _ => (None, vec![(day_number(from), day_number(to))]),
    }
}

pub async fn overview(store: &Store, filter: &Filter) -> Result<Overview, ConsoleError> {
    let pool = store.pool();
    let (from, to) = (day_number(filter.from), day_number(filter.to));

    // Per day over the period.
    let mut binds = vec![Bind::Int(from), Bind::Int(to)];
    let (table, dims) = counts_source(filter, &mut binds);
    let sql = format!("SELECT day, {SUMS} FROM {table} WHERE day BETWEEN $1 AND $2{dims} GROUP BY day ORDER BY day");
    let rows = bind_all(sqlx::query(&sql), &binds)
        .fetch_all(pool)
        .await
        .map_err(db("reading the daily counts"))?;
    let mut days = BTreeMap::new();
    for row in &rows {
        let day: i64 = row.try_get(0).map_err(db("decoding a day"))?;
        days.insert(day, Sums::read(row, 1)?);
    }

    // The backlog before the period: everything that entered minus left.
    let mut binds = vec![Bind::Int(from)];
    let (table, dims) = counts_source(filter, &mut binds);
    let sql = format!("SELECT {SUMS} FROM {table} WHERE day < $1{dims}");
    let row = bind_all(sqlx::query(&sql), &binds)
        .fetch_one(pool)
        .await
        .map_err(db("reading the backlog before the period"))?;
    let mut backlog = Sums::read(&row, 0)?.net();

    let mut total = Sums::default();
    let mut series: Vec<Point> = Vec::new();
    for sums in days.values() {
        total.add(sums);
    }
    // Every period of the range appears, empty ones too.
    let mut day = filter.from;
    while day <= filter.to {
        let start = filter.granularity.start_of(day);
        let sums = days.get(&day_number(day)).copied().unwrap_or_default();
        backlog += sums.net();
        match series.last_mut() {
            Some(p) if p.start == start => {
                p.received += sums.v[0];
                p.closed += sums.v[1];
                p.backlog = backlog;
            }
            _ => series.push(Point {
                start,
                received: sums.v[0],
                closed: sums.v[1],
                backlog,
            }),
        }
        let Some(next) = day.succ_opt() else { break };
        day = next;
    }
    let v = total.v;
    let volumes = Volumes {
        received: v[0],
        closed: v[1],
        answered: v[2],
        recontacts: v[3],
        transfers_in: v[4],
        transfers_out: v[5],
        reopenings: v[6],
        manual: v[7],
    };

    let [channels, typologies, services] = mixes(store, filter).await?;
    Ok(Overview {
        filter: filter.clone(),
        within_engagement: Share { count: v[8], of: v[9] },
        within_legal: Share {
            count: v[10],
            of: v[11],
        },
        manual: Share { count: v[7], of: v[0] },
        recontacts_per_request: (v[0] > 0).then(|| v[3] as f64 / v[0] as f64),
        volumes,
        series,
        backlog: backlog_now(store, filter).await?,
        delays: delays(store, filter).await?,
        channels,
        typologies,
        services,
    })
}

/// New requests of the period by channel, typology and service, most
/// first: one grouped scan, split here.
async fn mixes(store: &Store, filter: &Filter) -> Result<[Vec<MixRow>; 3], ConsoleError> {
    if single_dimension(filter).is_some_and(|(d, _)| d.is_empty()) {
        return mixes_unfiltered(store, filter).await;
    }
    let mut binds = vec![Bind::Int(day_number(filter.from)), Bind::Int(day_number(filter.to))];
    let dims = dims_clause(filter, 3, &mut binds);
    let sql = format!(
        "SELECT channel, typology, service, CAST(SUM(received) AS BIGINT) FROM daily \
         WHERE day BETWEEN $1 AND $2{dims} GROUP BY channel, typology, service"
    );
    let rows = bind_all(sqlx::query(&sql), &binds)
        .fetch_all(store.pool())
        .await
        .map_err(db("reading the mixes"))?;
    let mut counts: [BTreeMap<String, i64>; 3] = Default::default();
    for row in &rows {
        let n: Option<i64> = row.try_get(3).map_err(db("decoding a mix"))?;
        for (i, by) in counts.iter_mut().enumerate() {
            let key: String = row.try_get(i).map_err(db("decoding a mix"))?;
            *by.entry(key).or_default() += n.unwrap_or(0);
        }
    }
    Ok(ranked(counts))
}

/// Without a filter, the mixes are the per-dimension totals.
async fn mixes_unfiltered(store: &Store, filter: &Filter) -> Result<[Vec<MixRow>; 3], ConsoleError> {
    let rows = sqlx::query(
        "SELECT dimension, member, CAST(SUM(received) AS BIGINT) FROM totals_by \
         WHERE dimension IN ('channel', 'typology', 'service') AND day BETWEEN $1 AND $2 GROUP BY dimension, member",
    )
    .bind(day_number(filter.from))
    .bind(day_number(filter.to))
    .fetch_all(store.pool())
    .await
    .map_err(db("reading the mixes"))?;
    let mut counts: [BTreeMap<String, i64>; 3] = Default::default();
    for row in &rows {
        let dimension: String = row.try_get(0).map_err(db("decoding a mix"))?;
        let member: String = row.try_get(1).map_err(db("decoding a mix"))?;
        let n: Option<i64> = row.try_get(2).map_err(db("decoding a mix"))?;
        let i = match dimension.as_str() {
            "channel" => 0,
            "typology" => 1,
            _ => 2,
        };
        *counts[i].entry(member).or_default() += n.unwrap_or(0);
    }
    Ok(ranked(counts))
}

/// Each mix most first, with its shares.
fn ranked(counts: [BTreeMap<String, i64>; 3]) -> [Vec<MixRow>; 3] {
    counts.map(|by| {
        let all: i64 = by.values().sum();
        let mut out: Vec<MixRow> = by
            .into_iter()
            .filter(|(_, count)| *count > 0)
            .map(|(key, count)| MixRow {
                key,
                count,
                share: (all > 0).then(|| count as f64 / all as f64),
            })
            .collect();
        out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
        out
    })
}

/// The nearest-rank quantile `q` of a histogram sorted by value.
pub fn quantile(histogram: &[(i64, i64)], q: f64) -> Option<i64> {
    let total: i64 = histogram.iter().map(|(_, n)| n).sum();
    if total <= 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as i64).clamp(1, total);
    let mut seen = 0;
    for (value, n) in histogram {
        seen += n;
        if seen >= rank {
            return Some(*value);
        }
    }
    histogram.last().map(|(v, _)| *v)
}

async fn delays(store: &Store, filter: &Filter) -> Result<Vec<Delay>, ConsoleError> {
    let mut histograms: BTreeMap<String, BTreeMap<i64, i64>> = BTreeMap::new();
    let mut read = |rows: Vec<sqlx::any::AnyRow>| -> Result<(), ConsoleError> {
        for row in &rows {
            let metric: String = row.try_get(0).map_err(db("decoding a delay"))?;
            let value: i64 = row.try_get(1).map_err(db("decoding a delay"))?;
            let n: Option<i64> = row.try_get(2).map_err(db("decoding a delay"))?;
            *histograms.entry(metric).or_default().entry(value).or_default() += n.unwrap_or(0);
        }
        Ok(())
    };
    match single_dimension(filter) {
        // The roll-up of the one dimension: whole months, then the days around.
        Some((dimension, member)) => {
            let (months, days) = whole_months(filter.from, filter.to);
            let ranges = months
                .map(|m| ("delays_by_month", "month", m))
                .into_iter()
                .chain(days.into_iter().map(|d| ("delays_by_day", "day", d)));
            for (table, period, (first, last)) in ranges {
                let sql = format!(
                    "SELECT metric, value, CAST(SUM(n) AS BIGINT) FROM {table} \
                     WHERE dimension = $1 AND member = $2 AND {period} BETWEEN $3 AND $4 GROUP BY metric, value"
                );
                let rows = sqlx::query(&sql)
                    .bind(dimension)
                    .bind(member.as_str())
                    .bind(first)
                    .bind(last)
                    .fetch_all(store.pool())
                    .await
                    .map_err(db("reading the delays"))?;
                read(rows)?;
            }
        }
        None => {
            let mut binds = vec![Bind::Int(day_number(filter.from)), Bind::Int(day_number(filter.to))];
            let dims = dims_clause(filter, 3, &mut binds);
            let sql = format!(
                "SELECT metric, value, CAST(SUM(n) AS BIGINT) FROM daily_delays WHERE day BETWEEN $1 AND $2{dims} \
                 GROUP BY metric, value"
            );
            let rows = bind_all(sqlx::query(&sql), &binds)
                .fetch_all(store.pool())
                .await
                .map_err(db("reading the delays"))?;
            read(rows)?;
        }
    }
    let histograms: BTreeMap<String, Vec<(i64, i64)>> = histograms
        .into_iter()
        .map(|(metric, h)| (metric, h.into_iter().collect()))
        .collect();
    let empty = Vec::new();
    Ok(MILESTONES
        .iter()
        .map(|m| {
            let h = histograms.get(&format!("{m}_h")).unwrap_or(&empty);
            let bd = histograms.get(&format!("{m}_bd")).unwrap_or(&empty);
            Delay {
                milestone: (*m).to_owned(),
                count: h.iter().map(|(_, n)| n).sum(),
                median_hours: quantile(h, 0.5),
                p90_hours: quantile(h, 0.9),
                median_business_days: quantile(bd, 0.5),
                p90_business_days: quantile(bd, 0.9),
            }
        })
        .collect())
}

/// The condition of an overdue request at `$1` (now): not answered, closed
/// nor waiting for the usager, past either deadline (`overdue_at` is the
/// earlier one: a range of the `requests_overdue` index).
pub(crate) const OVERDUE: &str = "status IN ('open', 'taken') AND overdue_at < $1";

async fn backlog_now(store: &Store, filter: &Filter) -> Result<Backlog, ConsoleError> {
    let mut binds = Vec::new();
    let dims = dims_clause(filter, 1, &mut binds);
    // `IN`, not `<> 'closed'`: a range of the status index instead of a
    // scan of every request ever received (most are closed).
    let sql = format!(
        "SELECT status, COUNT(*) FROM requests WHERE status IN ('open', 'taken', 'answered', 'waiting_usager'){dims} \
         GROUP BY status"
    );
    let rows = bind_all(sqlx::query(&sql), &binds)
        .fetch_all(store.pool())
        .await
        .map_err(db("reading the backlog"))?;
    let mut backlog = Backlog::default();
    for row in &rows {
        let status: String = row.try_get(0).map_err(db("decoding the backlog"))?;
        let n: i64 = row.try_get(1).map_err(db("decoding the backlog"))?;
        if status == "waiting_usager" {
            backlog.waiting_usager += n;
        } else {
            backlog.open += n;
        }
    }
    let mut binds = vec![Bind::Int(Utc::now().timestamp())];
    let dims = dims_clause(filter, 2, &mut binds);
    let sql = format!("SELECT COUNT(*) FROM requests WHERE {OVERDUE}{dims}");
    backlog.overdue = bind_all(sqlx::query(&sql), &binds)
        .fetch_one(store.pool())
        .await
        .and_then(|row| row.try_get(0))
        .map_err(db("counting overdue requests"))?;
    Ok(backlog)
}

impl ToTables for Overview {
    fn tables(&self) -> Vec<Table> {
        let v = &self.volumes;
        let mut volumes = Table::new("Volumes", &["indicator", "value"]);
        for (name, value) in [
            ("received", int(v.received)),
            ("closed", int(v.closed)),
            ("answered", int(v.answered)),
            ("re-contacts", int(v.recontacts)),
            ("re-contacts per request", decimal(self.recontacts_per_request)),
            ("transfers in", int(v.transfers_in)),
            ("transfers out", int(v.transfers_out)),
            ("reopenings", int(v.reopenings)),
            ("qualified by hand", int(v.manual)),
            ("qualified by hand (%)", percent(self.manual.ratio())),
            (
                "answered within engagement (%)",
                percent(self.within_engagement.ratio()),
            ),
            ("answered within legal deadline (%)", percent(self.within_legal.ratio())),
            ("backlog: open", int(self.backlog.open)),
            ("backlog: waiting for the usager", int(self.backlog.waiting_usager)),
            ("backlog: overdue", int(self.backlog.overdue)),
        ] {
            volumes.push(vec![name.to_owned(), value]);
        }
        let mut series = Table::new("Series", &["period", "received", "closed", "backlog"]);
        for p in &self.series {
            series.push(vec![
                p.start.to_string(),
                int(p.received),
                int(p.closed),
                int(p.backlog),
            ]);
        }
        let mut delays = Table::new(
            "Delays from receipt",
            &[
                "milestone",
                "requests",
                "median (h)",
                "p90 (h)",
                "median (business days)",
                "p90 (business days)",
            ],
        );
        for d in &self.delays {
            delays.push(vec![
                d.milestone.clone(),
                int(d.count),
                opt(d.median_hours),
                opt(d.p90_hours),
                opt(d.median_business_days),
                opt(d.p90_business_days),
            ]);
        }
        let mix = |caption: &str, column: &str, rows: &[MixRow]| {
            let mut t = Table::new(caption, &[column, "received", "share (%)"]);
            for m in rows {
                t.push(vec![m.key.clone(), int(m.count), percent(m.share)]);
            }
            t
        };
        vec![
            volumes,
            series,
            delays,
            mix("Channel mix", "channel", &self.channels),
            mix("Typology mix", "typology", &self.typologies),
            mix("Services", "service", &self.services),
        ]
    }
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::{day_number, quantile, whole_months};

    #[test]
    fn periods_split_into_whole_months_and_days_around() {
        let d = |m, day| NaiveDate::from_ymd_opt(2026, m, day).unwrap_or(NaiveDate::MIN);
        let n = |m, day| day_number(d(m, day));
        // 30 March - 28 June: April and May, then the days around.
        assert_eq!(
            whole_months(d(3, 30), d(6, 28)),
            (
                Some((n(4, 1), n(5, 1))),
                vec![(n(3, 30), n(3, 31)), (n(6, 1), n(6, 28))]
            )
        );
        // Exactly the year: twelve months, no day.
        assert_eq!(whole_months(d(1, 1), d(12, 31)), (Some((n(1, 1), n(12, 1))), vec![]));
        // Inside one month: days only; one whole month: that month.
        assert_eq!(whole_months(d(4, 6), d(4, 12)), (None, vec![(n(4, 6), n(4, 12))]));
        assert_eq!(whole_months(d(2, 1), d(2, 28)), (Some((n(2, 1), n(2, 1))), vec![]));
        // Across two partial months.
        assert_eq!(whole_months(d(4, 15), d(5, 14)), (None, vec![(n(4, 15), n(5, 14))]));
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        // Values 1, 2, 2, 3, 10 (five requests).
        let h = [(1, 1), (2, 2), (3, 1), (10, 1)];
        assert_eq!(quantile(&h, 0.5), Some(2));
        assert_eq!(quantile(&h, 0.9), Some(10));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
