//! A throwaway PostgreSQL database on the machine's server (127.0.0.1:5432,
//! user `postgres`, trust authentication): created with a unique name for
//! one test and dropped when the handle is dropped, even when the test
//! fails (the drop runs during the panic's unwinding).

use std::{
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

/// The server tests use; `GUICHET_TEST_POSTGRES` overrides the host:port.
fn server() -> (String, String) {
    let hostport = std::env::var("GUICHET_TEST_POSTGRES").unwrap_or_else(|_| "127.0.0.1:5432".into());
    let (host, port) = hostport.split_once(':').unwrap_or((hostport.as_str(), "5432"));
    (host.to_owned(), port.to_owned())
}

fn psql(sql: &str) -> Result<(), String> {
    let (host, port) = server();
    let out = Command::new("psql")
        .args([
            "-h",
            &host,
            "-p",
            &port,
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-qc",
            sql,
        ])
        .output()
        .map_err(|e| format!("running psql: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// One test's database.
pub struct Postgres {
    name: String,
}

impl Postgres {
    /// Creates `guichet_test_<pid>_<n>_<label>`.
    pub fn create(label: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let label: String = label
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(20)
            .collect();
        let name = format!(
            "guichet_test_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst),
            label.to_ascii_lowercase()
        );
        if let Err(e) = psql(&format!("CREATE DATABASE {name}")) {
            panic!("creating the test database {name} on PostgreSQL (is it running on 127.0.0.1:5432?): {e}");
        }
        Self { name }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The URL of the database.
    pub fn url(&self) -> String {
        let (host, port) = server();
        format!("postgres://postgres@{host}:{port}/{}", self.name)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Err(e) = psql(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)) {
            eprintln!("dropping the test database {}: {e}", self.name);
        }
    }
}
