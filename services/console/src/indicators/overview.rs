//! The overview's queries: sums over the daily aggregates and delay
//! histograms (a handful of grouped scans however many requests there
//! are), and the current backlog from the request rows.

use std::collections::BTreeMap;

use chrono::Utc;
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

pub async fn overview(store: &Store, filter: &Filter) -> Result<Overview, ConsoleError> {
    let pool = store.pool();
    let (from, to) = (day_number(filter.from), day_number(filter.to));

    // Per day over the period.
    let mut binds = vec![Bind::Int(from), Bind::Int(to)];
    let dims = dims_clause(filter, 3, &mut binds);
    let sql = format!("SELECT day, {SUMS} FROM daily WHERE day BETWEEN $1 AND $2{dims} GROUP BY day ORDER BY day");
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
    let dims = dims_clause(filter, 2, &mut binds);
    let sql = format!("SELECT {SUMS} FROM daily WHERE day < $1{dims}");
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
        channels: mix(store, filter, "channel").await?,
        typologies: mix(store, filter, "typology").await?,
        services: mix(store, filter, "service").await?,
    })
}

/// New requests of the period by `column`, most first.
async fn mix(store: &Store, filter: &Filter, column: &'static str) -> Result<Vec<MixRow>, ConsoleError> {
    let mut binds = vec![Bind::Int(day_number(filter.from)), Bind::Int(day_number(filter.to))];
    let dims = dims_clause(filter, 3, &mut binds);
    let sql = format!(
        "SELECT {column}, CAST(SUM(received) AS BIGINT) FROM daily WHERE day BETWEEN $1 AND $2{dims} GROUP BY {column}"
    );
    let rows = bind_all(sqlx::query(&sql), &binds)
        .fetch_all(store.pool())
        .await
        .map_err(db("reading a mix"))?;
    let mut out = Vec::new();
    for row in &rows {
        let key: String = row.try_get(0).map_err(db("decoding a mix"))?;
        let count: Option<i64> = row.try_get(1).map_err(db("decoding a mix"))?;
        let count = count.unwrap_or(0);
        if count > 0 {
            out.push(MixRow {
                key,
                count,
                share: None,
            });
        }
    }
    let all: i64 = out.iter().map(|m| m.count).sum();
    for m in &mut out {
        m.share = (all > 0).then(|| m.count as f64 / all as f64);
    }
    out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
    Ok(out)
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
    let mut binds = vec![Bind::Int(day_number(filter.from)), Bind::Int(day_number(filter.to))];
    let dims = dims_clause(filter, 3, &mut binds);
    // The smallest roll-up that has the filter's dimensions.
    let others = filter.channel.is_some() || filter.typology.is_some() || filter.site.is_some();
    let table = match (filter.service.is_some(), others) {
        (false, false) => "delays_all",
        (true, false) => "delays_service",
        _ => "daily_delays",
    };
    let sql = format!(
        "SELECT metric, value, CAST(SUM(n) AS BIGINT) FROM {table} WHERE day BETWEEN $1 AND $2{dims} \
         GROUP BY metric, value ORDER BY metric, value"
    );
    let rows = bind_all(sqlx::query(&sql), &binds)
        .fetch_all(store.pool())
        .await
        .map_err(db("reading the delays"))?;
    let mut histograms: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
    for row in &rows {
        let metric: String = row.try_get(0).map_err(db("decoding a delay"))?;
        let value: i64 = row.try_get(1).map_err(db("decoding a delay"))?;
        let n: Option<i64> = row.try_get(2).map_err(db("decoding a delay"))?;
        histograms.entry(metric).or_default().push((value, n.unwrap_or(0)));
    }
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
/// nor waiting for the usager, past either deadline.
pub(crate) const OVERDUE: &str = "status IN ('open', 'taken') AND \
    ((engagement_due_at IS NOT NULL AND engagement_due_at < $1) OR (legal_due_at IS NOT NULL AND legal_due_at < $1))";

async fn backlog_now(store: &Store, filter: &Filter) -> Result<Backlog, ConsoleError> {
    let mut binds = Vec::new();
    let dims = dims_clause(filter, 1, &mut binds);
    let sql = format!("SELECT status, COUNT(*) FROM requests WHERE status <> 'closed'{dims} GROUP BY status");
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
    use super::quantile;

    #[test]
    fn quantiles_are_nearest_rank() {
        // Values 1, 2, 2, 3, 10 (five requests).
        let h = [(1, 1), (2, 2), (3, 1), (10, 1)];
        assert_eq!(quantile(&h, 0.5), Some(2));
        assert_eq!(quantile(&h, 0.9), Some(10));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
