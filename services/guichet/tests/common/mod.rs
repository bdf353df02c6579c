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

/// A `guichet.toml` in `dir` for the test's nats-server (and the test
/// pseudonym key).
#[allow(dead_code)]
pub fn config_for(nats: &guichet_harness::Nats, dir: &Path) -> PathBuf {
    let config = dir.join("guichet.toml");
    std::fs::write(
        &config,
        format!("[nats]\nurl = \"{}\"\n{}", nats.url(), guichet_harness::privacy_toml()),
    )
    .expect("the test configuration written");
    config
}
