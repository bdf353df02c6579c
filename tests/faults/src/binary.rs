//! Where the `guichet` binary under test comes from.
//!
//! Cargo hands `CARGO_BIN_EXE_guichet` only to the guichet crate's own
//! tests, so this crate finds the binary itself: `$GUICHET_BIN` when set
//! (`scripts/faults` sets it to the release build), else it builds
//! `guichet` with cargo in the profile this code was built with and uses
//! `target/<profile>/guichet`. Building every time (a no-op when up to
//! date) is what guarantees the binary is not older than the source.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

/// The binary to run, built at most once per process.
pub fn guichet() -> Result<PathBuf, String> {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BINARY.get_or_init(locate).clone()
}

fn locate() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("GUICHET_BIN") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("GUICHET_BIN={} is not a file", path.display()))
        };
    }
    let profile_dir = profile_dir()?;
    let release = profile_dir.file_name().is_some_and(|name| name == "release");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.args(["build", "--quiet", "-p", "guichet", "--bin", "guichet"]);
    if release {
        command.arg("--release");
    }
    // The target directory this code runs from, wherever it is.
    if let Some(target) = profile_dir.parent() {
        command.env("CARGO_TARGET_DIR", target);
    }
    let status = command
        .current_dir(guichet_harness::repo_root())
        .status()
        .map_err(|e| format!("cannot run cargo to build guichet: {e}"))?;
    if !status.success() {
        return Err(format!("`cargo build -p guichet` failed ({status})"));
    }
    let binary = profile_dir.join("guichet");
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(format!("cargo built guichet but {} is missing", binary.display()))
    }
}

/// `target/<profile>`: the folder of the running executable, or its
/// parent when it is a test in `target/<profile>/deps`.
fn profile_dir() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current executable: {e}"))?;
    let dir = exe.parent().map(Path::to_path_buf).ok_or("executable without folder")?;
    Ok(if dir.file_name().is_some_and(|name| name == "deps") {
        dir.parent().map(Path::to_path_buf).unwrap_or(dir)
    } else {
        dir
    })
}
