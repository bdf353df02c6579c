//! What the binary's command tests share: running `guichet` itself.

use std::{path::Path, process::Command};

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
