//! The aggregates a projection batch adds to, kept in memory until the
//! batch's transaction commits and written then as multi-row upserts: the
//! daily counts and delay histograms per combination of dimensions, and
//! the roll-ups the overview reads (per single dimension, per day and per
//! month). One statement per table and few hundred rows instead of a
//! dozen statements per message; nothing in a batch reads them back.
//! The maps are ordered as the tables' primary keys, so each statement
//! inserts its rows in key order: neighbouring B-tree pages instead of a
//! random page per row.

use std::collections::BTreeMap;

use sqlx::AnyConnection;

use crate::{
    ConsoleError,
    apply::{Delta, Dims},
    indicators::period::{day_number, day_of},
};
use chrono::Datelike;

/// The single dimensions the roll-ups are kept by; `""` is everything.
pub const DIMENSIONS: [&str; 5] = ["", "service", "channel", "typology", "site"];

impl Delta {
    fn add(&mut self, o: &Delta) {
        self.received += o.received;
        self.manual += o.manual;
        self.closed += o.closed;
        self.answered += o.answered;
        self.recontacts += o.recontacts;
        self.transfers_in += o.transfers_in;
        self.transfers_out += o.transfers_out;
        self.reopenings += o.reopenings;
        self.within_engagement += o.within_engagement;
        self.with_engagement += o.with_engagement;
        self.within_legal += o.within_legal;
        self.with_legal += o.with_legal;
    }

    fn values(&self) -> [i64; 12] {
        [
            self.received,
            self.manual,
            self.closed,
            self.answered,
            self.recontacts,
            self.transfers_in,
            self.transfers_out,
            self.reopenings,
            self.within_engagement,
            self.with_engagement,
            self.within_legal,
            self.with_legal,
        ]
    }
}

const COUNTS: [&str; 12] = [
    "received",
    "manual",
    "closed",
    "answered",
    "recontacts",
    "transfers_in",
    "transfers_out",
    "reopenings",
    "within_engagement",
    "with_engagement",
    "within_legal",
    "with_legal",
];

impl Dims {
    /// The member of `dimension` (`""`: everything).
    fn member(&self, dimension: &str) -> &str {
        match dimension {
            "service" => &self.service,
            "channel" => &self.channel,
            "typology" => &self.typology,
            "site" => &self.site,
            _ => "",
        }
    }
}

/// The day number of the first day of the month holding day `day`.
pub fn month_of(day: i64) -> i64 {
    let date = day_of(day);
    day_number(date.with_day(1).unwrap_or(date))
}

/// What a batch added, merged by key.
#[derive(Debug, Default)]
pub struct Aggregates {
    daily: BTreeMap<(i64, Dims), Delta>,
    /// (day, dims, metric, value) → requests.
    delays: BTreeMap<(i64, Dims, String, i64), i64>,
}

/// A value bound to a statement.
enum Cell<'a> {
    Int(i64),
    Text(&'a str),
}

impl Aggregates {
    /// Adds `delta` to the counts of `day` × `dims`.
    pub fn add_daily(&mut self, day: i64, dims: &Dims, delta: Delta) {
        self.daily.entry((day, dims.clone())).or_default().add(&delta);
    }

    /// One more request reached `metric` after `value` on `day`.
    pub fn add_delay(&mut self, day: i64, dims: &Dims, metric: String, value: i64) {
        *self.delays.entry((day, dims.clone(), metric, value)).or_default() += 1;
    }

    /// Writes everything added and empties the aggregates.
    pub async fn flush(&mut self, conn: &mut AnyConnection) -> Result<(), ConsoleError> {
        let daily = std::mem::take(&mut self.daily);
        let delays = std::mem::take(&mut self.delays);

        let mut totals: BTreeMap<(&str, &str, i64), Delta> = BTreeMap::new();
        let mut rows = Vec::with_capacity(daily.len());
        for ((day, dims), delta) in &daily {
            for dimension in DIMENSIONS {
                totals
                    .entry((dimension, dims.member(dimension), *day))
                    .or_default()
                    .add(delta);
            }
            let mut row = vec![
                Cell::Int(*day),
                Cell::Text(&dims.service),
                Cell::Text(&dims.channel),
                Cell::Text(&dims.typology),
                Cell::Text(&dims.site),
            ];
            row.extend(delta.values().map(Cell::Int));
            rows.push(row);
        }
        let mut columns = vec!["day", "service", "channel", "typology", "site"];
        columns.extend(COUNTS);
        upsert(conn, "daily", &columns, 5, rows, "updating the daily counts").await?;
        let rows = totals
            .iter()
            .map(|((dimension, member, day), delta)| {
                let mut row = vec![Cell::Text(dimension), Cell::Text(member), Cell::Int(*day)];
                row.extend(delta.values().map(Cell::Int));
                row
            })
            .collect();
        let mut columns = vec!["dimension", "member", "day"];
        columns.extend(COUNTS);
        upsert(conn, "totals_by", &columns, 3, rows, "updating the daily totals").await?;

        let mut by_day: BTreeMap<(&str, &str, i64, &str, i64), i64> = BTreeMap::new();
        let mut by_month: BTreeMap<(&str, &str, i64, &str, i64), i64> = BTreeMap::new();
        let mut rows = Vec::with_capacity(delays.len());
        for ((day, dims, metric, value), n) in &delays {
            let month = month_of(*day);
            for dimension in DIMENSIONS {
                let member = dims.member(dimension);
                *by_day.entry((dimension, member, *day, metric, *value)).or_default() += n;
                *by_month.entry((dimension, member, month, metric, *value)).or_default() += n;
            }
            rows.push(vec![
                Cell::Int(*day),
                Cell::Text(&dims.service),
                Cell::Text(&dims.channel),
                Cell::Text(&dims.typology),
                Cell::Text(&dims.site),
                Cell::Text(metric),
                Cell::Int(*value),
                Cell::Int(*n),
            ]);
        }
        let columns = ["day", "service", "channel", "typology", "site", "metric", "value", "n"];
        upsert(conn, "daily_delays", &columns, 7, rows, "updating the delay histograms").await?;
        for (table, period, map) in [("delays_by_day", "day", by_day), ("delays_by_month", "month", by_month)] {
            let rows = map
                .iter()
                .map(|((dimension, member, p, metric, value), n)| {
                    vec![
                        Cell::Text(dimension),
                        Cell::Text(member),
                        Cell::Int(*p),
                        Cell::Text(metric),
                        Cell::Int(*value),
                        Cell::Int(*n),
                    ]
                })
                .collect();
            let columns = ["dimension", "member", period, "metric", "value", "n"];
            upsert(conn, table, &columns, 5, rows, "updating the delay roll-ups").await?;
        }
        Ok(())
    }
}

/// `VALUES (…), (…)`: `rows` tuples of `width` placeholders, bound in
/// order. PostgreSQL numbers them (`$1`); SQLite gets anonymous `?`: it
/// keeps `$N` and `?N` in a list of names that sqlx searches once per
/// value bound, a quadratic cost (a second for 20,000 values, most of a
/// year's seeding time).
pub fn values(sqlite: bool, rows: usize, width: usize) -> String {
    let mut sql = String::from("VALUES ");
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..width {
            if c > 0 {
                sql.push_str(", ");
            }
            if sqlite {
                sql.push('?');
            } else {
                sql.push('$');
                sql.push_str(&(r * width + c + 1).to_string());
            }
        }
        sql.push(')');
    }
    sql
}

/// `INSERT … VALUES (…), (…) ON CONFLICT (the first `key` columns) DO
/// UPDATE` adding the other columns to the stored ones. Rows have unique
/// keys (merged in the maps above): PostgreSQL refuses a statement that
/// updates a row twice.
async fn upsert(
    conn: &mut AnyConnection,
    table: &str,
    columns: &[&str],
    key: usize,
    rows: Vec<Vec<Cell<'_>>>,
    what: &'static str,
) -> Result<(), ConsoleError> {
    let width = columns.len();
    let (keys, counts) = columns.split_at(key.min(width));
    let update: Vec<String> = counts
        .iter()
        .map(|c| format!("{c} = {table}.{c} + excluded.{c}"))
        .collect();
    let tail = format!(" ON CONFLICT ({}) DO UPDATE SET {}", keys.join(", "), update.join(", "));
    // Well under SQLite's 32,766 and PostgreSQL's 65,535 bound values.
    let per_statement = (20_000 / width).max(1);
    let sqlite = conn.backend_name() == "SQLite";
    for chunk in rows.chunks(per_statement) {
        let mut sql = format!("INSERT INTO {table} ({}) ", columns.join(", "));
        sql.push_str(&values(sqlite, chunk.len(), width));
        sql.push_str(&tail);
        let mut q = sqlx::query(&sql);
        for row in chunk {
            for cell in row {
                q = match cell {
                    Cell::Int(i) => q.bind(*i),
                    Cell::Text(s) => q.bind(*s),
                };
            }
        }
        q.execute(&mut *conn).await.map_err(|e| ConsoleError::db(what, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::values;

    #[test]
    fn placeholders_are_numbered_for_postgres_and_anonymous_for_sqlite() {
        assert_eq!(values(false, 2, 3), "VALUES ($1, $2, $3), ($4, $5, $6)");
        assert_eq!(values(true, 2, 3), "VALUES (?, ?, ?), (?, ?, ?)");
        assert_eq!(values(true, 1, 1), "VALUES (?)");
    }
}
