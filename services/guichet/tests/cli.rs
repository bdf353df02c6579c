//! The `guichet` binary as an operator meets it: bad configurations,
//! unreachable brokers, the embedded nats-server, and clean shutdown.

// Test helpers may unwrap: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use guichet_core::nats_server::free_port;
use guichet_harness::{Nats, nats_server_binary};

fn guichet(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_guichet"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("guichet runs")
}

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("guichet.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A configuration `guichet run` accepts: `text` and the test key.
fn run_config(dir: &Path, text: &str) -> std::path::PathBuf {
    write_config(dir, &format!("{text}{}", guichet_harness::privacy_toml()))
}

/// The one error line on stderr.
fn error_line(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "expected a failure");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert!(!stderr.contains("stack backtrace"), "backtrace: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "one error line expected, got: {stderr}");
    lines[0].to_owned()
}

#[test]
fn a_missing_config_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = guichet(&dir.path().join("nope.toml"), &["check-config"]);
    let line = error_line(&out);
    assert!(line.contains("nope.toml") && line.contains("no such file"), "{line}");
}

#[test]
fn malformed_values_and_unknown_keys_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[nats]\nmax_in_flight = \"lots\"\n", "max_in_flight"),
        ("[nats]\nurll = \"nats://127.0.0.1:4222\"\n", "urll"),
        ("[nats]\nurl = \"http://127.0.0.1:4222\"\n", "nats.url"),
        ("[topology]\nreplicas = 7\n", "topology.replicas"),
        ("[topology]\nduplicate_window = \"soon\"\n", "duplicate_window"),
        ("[admin]\nlisten = \"not an address\"\n", "listen"),
        (
            "[nats]\nuser = \"g\"\npassword = { file = \"/nonexistent/secret\" }\n",
            "nats.password",
        ),
        ("[log]\nlevel = \"[[[\"\n", "log.level"),
        ("[nats\nurl = 1\n", "guichet.toml"),
    ];
    for (text, key) in cases {
        let path = write_config(dir.path(), text);
        let line = error_line(&guichet(&path, &["check-config"]));
        assert!(line.contains(key), "`{key}` not named for {text:?}: {line}");
    }
}

#[test]
fn a_valid_config_checks_and_the_example_configs_are_valid() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "[nats]\nurl = \"nats://127.0.0.1:4222\"\n");
    let out = guichet(&path, &["check-config"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for example in ["deploy/dev.toml", "deploy/guichet.example.toml"] {
        let out = Command::new(env!("CARGO_BIN_EXE_guichet"))
            .current_dir(&root)
            .args(["--config", example, "check-config"])
            .env("GUICHET_NATS_PASSWORD", "example")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{example}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn server_lists_check_from_the_file_or_the_environment_and_a_bad_url_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let check = |text: &str, env: Option<&str>| {
        let path = write_config(dir.path(), text);
        let mut command = Command::new(env!("CARGO_BIN_EXE_guichet"));
        command
            .arg("--config")
            .arg(&path)
            .arg("check-config")
            .env_remove("RUST_LOG")
            .env_remove("GUICHET__NATS__URL");
        if let Some(list) = env {
            command.env("GUICHET__NATS__URL", list);
        }
        command.output().unwrap()
    };
    for (text, env) in [
        ("[nats]\nurl = \"nats://127.0.0.1:4222, nats://127.0.0.1:4223\"\n", None),
        (
            "[nats]\nurl = [\"nats://127.0.0.1:4222\", \"tls://127.0.0.1:4223\"]\n",
            None,
        ),
        ("", Some("nats://127.0.0.1:4222,nats://127.0.0.1:4223")),
    ] {
        let out = check(text, env);
        assert!(
            out.status.success(),
            "{text} {env:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The port guichet run used to choke on, in the file or the environment.
    for (text, env) in [
        (
            "[nats]\nurl = \"nats://127.0.0.1:4222,nats://u:secret@127.0.0.1:42220000\"\n",
            None,
        ),
        (
            "[nats]\nurl = \"nats://127.0.0.1:4222\"\n",
            Some("nats://127.0.0.1:4222,nats://u:secret@127.0.0.1:42220000"),
        ),
    ] {
        let line = error_line(&check(text, env));
        assert!(
            line.contains("nats.url") && line.contains("`nats://***@127.0.0.1:42220000`"),
            "{line}"
        );
        assert!(!line.contains("secret"), "{line}");
    }
}

/// Issue 11: no key, or a short one, is refused before anything starts.
#[test]
fn a_missing_or_short_pseudonym_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let admin = guichet_harness::loopback::free_addr();
    let base = format!("[nats]\nurl = \"nats://127.0.0.1:1\"\n[admin]\nlisten = \"{admin}\"\n");
    let path = write_config(dir.path(), &base);
    let line = error_line(&guichet(&path, &["run", "--services", "router"]));
    assert!(
        line.contains("privacy.pseudonym_key") && line.contains("required"),
        "{line}"
    );
    let path = write_config(dir.path(), &format!("{base}[privacy]\npseudonym_key = \"short\"\n"));
    let line = error_line(&guichet(&path, &["run", "--services", "router"]));
    assert!(line.contains("privacy.pseudonym_key") && line.contains("32"), "{line}");
}

#[test]
fn unknown_services_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "");
    let line = error_line(&guichet(&path, &["run", "--services", "web,fax"]));
    assert!(line.contains("`fax`"), "{line}");
}

#[test]
fn an_unreachable_nats_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let port = guichet_harness::loopback::free_addr();
    let admin = guichet_harness::loopback::free_addr();
    let path = run_config(
        dir.path(),
        &format!("[nats]\nurl = \"nats://{port}\"\nconnect_timeout = \"1s\"\n[admin]\nlisten = \"{admin}\"\n"),
    );
    let line = error_line(&guichet(&path, &["run", "--services", "router"]));
    assert!(
        line.contains("cannot connect to NATS") && line.contains(&port.to_string()),
        "{line}"
    );
}

#[test]
fn a_missing_nats_server_binary_says_how_to_install_it() {
    let dir = tempfile::tempdir().unwrap();
    let admin = guichet_harness::loopback::free_addr();
    let path = run_config(
        dir.path(),
        &format!(
            "[nats.embedded]\nbinary = \"/nonexistent/nats-server\"\nstore_dir = \"{}\"\n[admin]\nlisten = \"{admin}\"\n",
            dir.path().join("nats").display()
        ),
    );
    let line = error_line(&guichet(&path, &["run", "--services", "router"]));
    assert!(line.contains("scripts/bootstrap"), "{line}");
}

#[tokio::test]
async fn a_server_without_jetstream_is_one_clear_error() {
    let nats = Nats::start_without_jetstream().await;
    let dir = tempfile::tempdir().unwrap();
    let admin = guichet_harness::loopback::free_addr();
    let path = run_config(
        dir.path(),
        &format!("[nats]\nurl = \"{}\"\n[admin]\nlisten = \"{admin}\"\n", nats.url()),
    );
    let out = tokio::task::spawn_blocking(move || guichet(&path, &["run", "--services", "router"]))
        .await
        .unwrap();
    let line = error_line(&out);
    assert!(line.contains("JetStream is not enabled"), "{line}");
}

/// Starts `guichet run --services router` and waits for `/readyz` 200.
async fn run_until_ready(config: &Path, admin: std::net::SocketAddr) -> std::process::Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_guichet"))
        .arg("--config")
        .arg(config)
        .args(["run", "--services", "router"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(format!("http://{admin}/readyz")).send().await
            && r.status() == 200
        {
            return child;
        }
        assert!(Instant::now() < deadline, "readyz never answered 200");
        assert!(
            child.try_wait().unwrap().is_none(),
            "guichet run exited before it was ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// SIGTERM, then the exit status within 30 s.
async fn terminate(mut child: std::process::Child) -> std::process::ExitStatus {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "guichet did not stop after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `guichet run` with no NATS URL starts its own nats-server, is ready,
/// and on SIGTERM stops both processes and exits 0. That broker is
/// private: loopback only, a password generated at the first start into
/// its store (mode 0600), reused at the next start and by the operators'
/// commands; a client without it is refused.
#[tokio::test]
async fn embedded_mode_starts_a_private_nats_serves_readyz_and_stops_cleanly_on_sigterm() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let nats_port = free_port().unwrap();
    let admin = guichet_harness::loopback::free_addr();
    let store = dir.path().join("nats");
    let path = run_config(
        dir.path(),
        &format!(
            "[nats.embedded]\nbinary = \"{}\"\nstore_dir = \"{}\"\nport = {nats_port}\n[admin]\nlisten = \"{admin}\"\n",
            nats_server_binary().display(),
            store.display()
        ),
    );
    let child = run_until_ready(&path, admin).await;
    let client = reqwest::Client::new();
    let health = client.get(format!("http://{admin}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let metrics = client.get(format!("http://{admin}/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);

    // The password file: created, for its owner only; the server's
    // generated configuration (which holds it too) as well.
    let password_file = store.join("guichet-nats.password");
    for file in [&password_file, &store.join("nats-server.conf")] {
        let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}: mode {mode:o}", file.display());
    }
    let password = std::fs::read_to_string(&password_file).unwrap().trim().to_owned();
    assert_eq!(password.len(), 64, "32 random bytes, hex");
    let server_config = std::fs::read_to_string(store.join("nats-server.conf")).unwrap();
    assert!(server_config.contains("sync_interval: always"), "{server_config}");

    // Without the password: refused.
    let url = format!("nats://127.0.0.1:{nats_port}");
    let refused = match async_nats::connect(&url).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("an unauthenticated client was accepted"),
    };
    assert!(refused.to_lowercase().contains("authorization"), "{refused}");
    // Loopback only: 127.0.0.2 is this host too, but not the address bound.
    assert!(
        std::net::TcpStream::connect(("127.0.0.2", nats_port)).is_err(),
        "the embedded broker listens beyond 127.0.0.1"
    );
    // With it: JetStream and guichet's topology are there.
    let nc = async_nats::ConnectOptions::with_user_and_password("guichet".into(), password.clone())
        .connect(&url)
        .await
        .unwrap();
    async_nats::jetstream::new(nc.clone())
        .get_stream("INTAKE")
        .await
        .unwrap();
    // An operator's command finds the password by itself.
    let rules = guichet_harness::repo_root().join("deploy/rules.example.toml");
    let out = guichet(&path, &["rules", "push", rules.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "rules push on the embedded broker: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let status = terminate(child).await;
    assert!(status.success(), "exit status {status}");
    // Both processes are gone. The broker closed our connection (a port
    // check on 127.0.0.1 could meet another test's server that took the
    // port since); the admin address is this test's own, so nothing else
    // can answer there.
    let mut closed = false;
    for _ in 0..100 {
        if nc.connection_state() != async_nats::connection::State::Connected {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(closed, "nats-server still running");
    assert!(std::net::TcpStream::connect(admin).is_err(), "admin port still open");

    // A second start keeps the password (and the data it protects).
    let child = run_until_ready(&path, admin).await;
    assert_eq!(
        std::fs::read_to_string(&password_file).unwrap().trim(),
        password,
        "the password was regenerated"
    );
    let nc = async_nats::ConnectOptions::with_user_and_password("guichet".into(), password)
        .connect(&url)
        .await
        .unwrap();
    let js = async_nats::jetstream::new(nc);
    let rules_bucket = js.get_key_value("guichet_config").await.unwrap();
    assert!(
        rules_bucket.status().await.unwrap().values() > 0,
        "the rules pushed before the restart are gone"
    );
    assert!(terminate(child).await.success());

    // A password file other accounts can read is refused, naming the fix.
    std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let line = error_line(&guichet(&path, &["rules", "push", rules.to_str().unwrap()]));
    assert!(line.contains("chmod 600"), "{line}");
}
