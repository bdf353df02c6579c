//! The SQL database of the read model: SQLite (a file, the default) or
//! PostgreSQL, through `sqlx::Any` with one set of portable statements
//! and migrations (services/console/migrations).

use std::{path::Path, str::FromStr, time::Duration};

use sqlx::{
    AnyPool, ConnectOptions, Row,
    any::{AnyConnectOptions, AnyPoolOptions},
};

use crate::ConsoleError;

/// The tables a rebuild empties (every one but the migrations').
pub const TABLES: [&str; 11] = [
    "positions",
    "requests",
    "contacts",
    "transitions",
    "daily",
    "daily_delays",
    "totals_by",
    "delays_by_day",
    "delays_by_month",
    "dead_letters",
    "identity_conflicts",
];

/// A pool on the read model.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    sqlite: bool,
}

impl Store {
    /// Opens `url` (`sqlite://…` or `postgres://…`), creating the SQLite
    /// file and its directory if needed, and brings the schema up to date.
    pub async fn open(url: &str) -> Result<Self, ConsoleError> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        if sqlite
            && let Some(dir) = url
                .strip_prefix("sqlite://")
                .and_then(|p| p.split('?').next())
                .and_then(|p| Path::new(p).parent())
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| ConsoleError::Config(format!("creating {} for console.sqlite: {e}", dir.display())))?;
        }
        // A statement slower than a second is logged at debug only: sqlx
        // writes the whole SQL, and a projection batch's multi-row upsert
        // is a hundred kilobytes of placeholders.
        let options = AnyConnectOptions::from_str(url)
            .map_err(|e| ConsoleError::Config(format!("console.database_url: {e}")))?
            .log_slow_statements(log::LevelFilter::Debug, Duration::from_secs(1));
        // SQLite in WAL mode: readers (the pages) do not wait for the
        // projection, its only writer; a few connections are enough.
        let pool = AnyPoolOptions::new()
            .max_connections(if sqlite { 4 } else { 8 })
            .connect_with(options)
            .await
            .map_err(|e| ConsoleError::db("connecting to the console database", e))?;
        if sqlite {
            // Persistent in the file: every connection, and later opens, use it.
            sqlx::query("PRAGMA journal_mode=WAL")
                .execute(&pool)
                .await
                .map_err(|e| ConsoleError::db("enabling WAL", e))?;
        }
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|e| ConsoleError::db("migrating the console database", e))?;
        Ok(Self { pool, sqlite })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn is_sqlite(&self) -> bool {
        self.sqlite
    }

    /// The last sequence of `stream` projected (0: none).
    pub async fn position(&self, stream: &str) -> Result<u64, ConsoleError> {
        let row = sqlx::query("SELECT seq FROM positions WHERE stream = $1")
            .bind(stream)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| ConsoleError::db("reading the projection position", e))?;
        Ok(match row {
            Some(row) => {
                u64::try_from(row.try_get::<i64, _>(0).map_err(|e| ConsoleError::db("position", e))?).unwrap_or(0)
            }
            None => 0,
        })
    }

    /// Empties every table: the next projection starts from each stream's
    /// first message (`guichet indicators rebuild`).
    pub async fn clear(&self) -> Result<(), ConsoleError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| ConsoleError::db("starting the rebuild", e))?;
        for table in TABLES {
            sqlx::query(&format!("DELETE FROM {table}"))
                .execute(&mut *tx)
                .await
                .map_err(|e| ConsoleError::db(&format!("emptying {table}"), e))?;
        }
        tx.commit()
            .await
            .map_err(|e| ConsoleError::db("committing the rebuild", e))
    }

    /// Every row of `table`, each as its cells in text, sorted: to compare
    /// two projections (tests, rebuild checks).
    pub async fn dump(&self, table: &str) -> Result<Vec<String>, ConsoleError> {
        if !TABLES.contains(&table) {
            return Err(ConsoleError::Invalid(format!("no table `{table}` in the read model")));
        }
        let rows = sqlx::query(&format!("SELECT * FROM {table}"))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| ConsoleError::db(&format!("reading {table}"), e))?;
        let mut out: Vec<String> = rows
            .iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| {
                        row.try_get::<Option<i64>, _>(i)
                            .map(|v| v.map(|v| v.to_string()).unwrap_or_else(|| "NULL".into()))
                            .or_else(|_| {
                                row.try_get::<Option<String>, _>(i)
                                    .map(|v| v.unwrap_or_else(|| "NULL".into()))
                            })
                            .unwrap_or_else(|_| "?".into())
                    })
                    .collect::<Vec<_>>()
                    .join("|")
            })
            .collect();
        out.sort();
        Ok(out)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}
