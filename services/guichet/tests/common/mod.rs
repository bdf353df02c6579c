//! What the binary's command tests share: running `guichet` itself.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// Runs `guichet --config CONFIG ARGS…`: (success, stdout, stderr).
pub fn guichet(config: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_guichet"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("guichet runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A `guichet.toml` in a fresh temporary directory pointing at `nats`
/// with the test privacy key: the directory (keep it alive) and the path.
#[allow(dead_code)] // not every command test needs a bus
pub fn config_for(nats: &guichet_harness::Nats) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = config_in(nats, dir.path());
    (dir, config)
}

/// A `guichet.toml` in `dir` for the test's nats-server (and the test
/// pseudonym key).
#[allow(dead_code)]
pub fn config_in(nats: &guichet_harness::Nats, dir: &Path) -> PathBuf {
    let config = dir.join("guichet.toml");
    std::fs::write(
        &config,
        format!("[nats]\nurl = \"{}\"\n{}", nats.url(), guichet_harness::privacy_toml()),
    )
    .expect("guichet.toml written");
    config
}
