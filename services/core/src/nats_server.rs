//! A `nats-server` child process: guichet's embedded mode for a small
//! town (no NATS to run separately) and the test harness's real broker.
//!
//! The server always listens on loopback, with JetStream storing under the
//! directory given. [`NatsServer::stop`] asks it to stop (SIGTERM, so it
//! flushes its stores) and kills it only if it does not.
//!
//! Started as guichet's embedded broker, it also requires a password (any
//! local account can otherwise connect to a loopback port and read every
//! contact) and writes every message to disk before acknowledging it
//! (`sync_interval: always`). The password is generated into the store
//! directory at the first start ([`ensure_password`]), readable by its
//! owner only, and read back by every command that uses that broker
//! ([`read_password`]).

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use tokio::process::{Child, Command};

use crate::{Error, secret::Secret};

/// The embedded broker's one user.
pub const EMBEDDED_USER: &str = "guichet";

/// The embedded broker's password file, in its store directory.
const PASSWORD_FILE: &str = "guichet-nats.password";

/// How to start the server.
#[derive(Debug, Clone)]
pub struct NatsServerOptions {
    /// The executable (`nats-server`, looked up on PATH, or a path).
    pub binary: PathBuf,
    /// The loopback address it listens on: 127.0.0.1 for guichet's
    /// embedded broker; tests give each server an address of its own.
    pub host: Ipv4Addr,
    pub port: u16,
    /// JetStream storage directory; created if missing.
    pub store_dir: PathBuf,
    /// Where the server writes its log (also read back to explain a
    /// failure to start). Defaults to `<store_dir>/nats-server.log`.
    pub log_file: Option<PathBuf>,
    /// Start without JetStream (to test how guichet reports it).
    pub jetstream: bool,
    /// Extra arguments, e.g. `--config file` to test a deploy/ config.
    pub extra_args: Vec<String>,
    /// Extra environment variables (configs may read `$VARS`).
    pub env: Vec<(String, String)>,
    /// Require [`EMBEDDED_USER`] with this password (see [`ensure_password`]).
    pub password: Option<Secret>,
    /// `sync_interval: always`: fsync every write before acknowledging it.
    pub sync_always: bool,
}

impl NatsServerOptions {
    pub fn new(binary: impl Into<PathBuf>, port: u16, store_dir: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
            host: Ipv4Addr::LOCALHOST,
            port,
            store_dir: store_dir.into(),
            log_file: None,
            jetstream: true,
            extra_args: Vec::new(),
            env: Vec::new(),
            password: None,
            sync_always: false,
        }
    }

    /// The options of guichet's embedded broker: a password (the one of
    /// [`ensure_password`]) and an fsync per write.
    pub fn embedded(binary: impl Into<PathBuf>, port: u16, store_dir: impl Into<PathBuf>, password: String) -> Self {
        Self {
            password: Some(Secret::Inline(password)),
            sync_always: true,
            ..Self::new(binary, port, store_dir)
        }
    }

    /// The settings that have no command-line flag (authorization,
    /// `sync_interval`) need a configuration file; `None` when neither is asked.
    fn config_file_text(&self) -> Result<Option<String>, Error> {
        if self.password.is_none() && !self.sync_always {
            return Ok(None);
        }
        let mut text = format!(
            "# Written by guichet at each start of its embedded broker; edits are lost.\nlisten: {}\n",
            quote(&format!("{}:{}", self.host, self.port))
        );
        if self.jetstream {
            text.push_str(&format!(
                "jetstream {{\n  store_dir: {}\n{}}}\n",
                quote(&self.store_dir.display().to_string()),
                if self.sync_always {
                    "  sync_interval: always\n"
                } else {
                    ""
                }
            ));
        }
        if let Some(password) = &self.password {
            let password = password.resolve("nats embedded password")?;
            text.push_str(&format!(
                "authorization {{\n  user: {}\n  password: {}\n}}\n",
                quote(EMBEDDED_USER),
                quote(&password)
            ));
        }
        Ok(Some(text))
    }
}

/// A string for a nats-server configuration file.
fn quote(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The password file of the embedded broker storing under `store_dir`.
pub fn password_file(store_dir: &Path) -> PathBuf {
    store_dir.join(PASSWORD_FILE)
}

/// The embedded broker's password: read from its file, or generated
/// there (32 random bytes, hex, mode 0600) at the first start.
pub fn ensure_password(store_dir: &Path) -> Result<String, Error> {
    let path = password_file(store_dir);
    if !path.exists() {
        std::fs::create_dir_all(store_dir)
            .map_err(|e| Error::NatsServer(format!("cannot create store directory {}: {e}", store_dir.display())))?;
        create_password_file(&path)?;
    }
    read_password(store_dir)
}

/// Writes a new password file, atomically: a complete file appears under
/// its name or nothing does (a concurrent first start keeps the other's).
fn create_password_file(path: &Path) -> Result<(), Error> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let io = |what: &str, e: std::io::Error| Error::NatsServer(format!("{what} {}: {e}", path.display()));
    let password = hex::encode(rand::random::<[u8; 32]>());
    let temporary = path.with_extension(format!("tmp-{}-{:08x}", std::process::id(), rand::random::<u32>()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(|e| io("cannot create", e))?;
    let written = file
        .write_all(format!("{password}\n").as_bytes())
        .and_then(|()| file.sync_all());
    let linked = written.and_then(|()| std::fs::hard_link(&temporary, path));
    let _ = std::fs::remove_file(&temporary);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io("cannot write", e)),
    }
}

/// Reads the embedded broker's password, refusing a file other accounts
/// can read (the password opens every contact).
pub fn read_password(store_dir: &Path) -> Result<String, Error> {
    use std::os::unix::fs::PermissionsExt;
    let path = password_file(store_dir);
    let metadata = std::fs::metadata(&path).map_err(|e| {
        Error::NatsServer(format!(
            "cannot read the embedded broker's password file {}: {e} (it is created by the first `guichet run` with this `nats.embedded.store_dir`)",
            path.display()
        ))
    })?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::NatsServer(format!(
            "the embedded broker's password file {} is readable by other accounts (mode {mode:o}): run `chmod 600 {}`",
            path.display(),
            path.display()
        )));
    }
    Secret::File { file: path }.resolve("nats.embedded.store_dir password file")
}

/// A running `nats-server` child. Killed if dropped without [`Self::stop`].
#[derive(Debug)]
pub struct NatsServer {
    child: Child,
    host: Ipv4Addr,
    port: u16,
    log_file: PathBuf,
}

impl NatsServer {
    /// Starts the server and waits until it accepts connections.
    pub async fn start(options: &NatsServerOptions) -> Result<Self, Error> {
        std::fs::create_dir_all(&options.store_dir).map_err(|e| {
            Error::NatsServer(format!(
                "cannot create store directory {}: {e}",
                options.store_dir.display()
            ))
        })?;
        let log_file = options
            .log_file
            .clone()
            .unwrap_or_else(|| options.store_dir.join("nats-server.log"));
        let mut cmd = Command::new(&options.binary);
        cmd.arg("-l").arg(&log_file);
        match options.config_file_text()? {
            Some(text) => {
                // It holds the password: written for its owner only.
                let path = options.store_dir.join("nats-server.conf");
                write_private(&path, &text)?;
                cmd.arg("-c").arg(path);
            }
            None => {
                cmd.arg("-a")
                    .arg(options.host.to_string())
                    .arg("-p")
                    .arg(options.port.to_string());
                if options.jetstream {
                    cmd.arg("-js").arg("-sd").arg(&options.store_dir);
                }
            }
        }
        // Errors in the config file are printed before logging starts.
        let stderr_file = log_file.with_extension("stderr");
        let stderr = std::fs::File::create(&stderr_file)
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null());
        cmd.args(&options.extra_args)
            .envs(options.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::NatsServer(format!(
                    "`{}` not found: run scripts/bootstrap (it installs nats-server 2.15 under .tools/bin) and put it on PATH, set `nats.embedded.binary`, or set `nats.url` to an existing server",
                    options.binary.display()
                ))
            } else {
                Error::NatsServer(format!("cannot start `{}`: {e}", options.binary.display()))
            }
        })?;
        let mut server = Self {
            child,
            host: options.host,
            port: options.port,
            log_file,
        };
        server.wait_ready(Duration::from_secs(15)).await?;
        Ok(server)
    }

    async fn wait_ready(&mut self, within: Duration) -> Result<(), Error> {
        let addr = SocketAddr::from((self.host, self.port));
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(Error::NatsServer(format!(
                    "exited at start ({status}): {}",
                    last_lines(&self.log_file, 5)
                )));
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Error::NatsServer(format!(
                    "not accepting connections on {addr} after {within:?}: {}",
                    last_lines(&self.log_file, 5)
                )));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// `nats://<host>:<port>`.
    pub fn url(&self) -> String {
        format!("nats://{}:{}", self.host, self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// Stops the server gracefully (SIGTERM), killing it after `grace`.
    pub async fn stop(mut self, grace: Duration) {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
            if tokio::time::timeout(grace, self.child.wait()).await.is_ok() {
                return;
            }
        }
        let _ = self.child.kill().await;
    }

    /// Kills the server at once (SIGKILL), as a crash or power cut would.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Writes `text` to `path` with mode 0600 (also when the file existed).
fn write_private(path: &Path, text: &str) -> Result<(), Error> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt, os::unix::fs::PermissionsExt};
    let io = |e: std::io::Error| Error::NatsServer(format!("cannot write {}: {e}", path.display()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)
}

fn last_lines(path: &Path, n: usize) -> String {
    let mut text = std::fs::read_to_string(path.with_extension("stderr")).unwrap_or_default();
    text.push_str(&std::fs::read_to_string(path).unwrap_or_default());
    let lines: Vec<&str> = text.lines().rev().take(n).collect();
    if lines.is_empty() {
        format!("no log in {}", path.display())
    } else {
        lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
    }
}

/// A port on loopback that was free a moment ago.
pub fn free_port() -> Result<u16, Error> {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::Io {
            what: "finding a free loopback port".into(),
            source: e,
        })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// First starts racing each other end with one password, 0600, that
    /// every later read returns; a file others can read is refused.
    #[test]
    fn the_password_is_created_once_for_its_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("nats");
        let passwords: Vec<String> = std::thread::scope(|scope| {
            let racers: Vec<_> = (0..8).map(|_| scope.spawn(|| ensure_password(&store))).collect();
            racers.into_iter().map(|r| r.join().unwrap().unwrap()).collect()
        });
        assert!(passwords.iter().all(|p| p == &passwords[0]), "{passwords:?}");
        assert_eq!(passwords[0].len(), 64);
        let file = password_file(&store);
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(read_password(&store).unwrap(), passwords[0]);
        assert_eq!(
            std::fs::read_dir(&store).unwrap().count(),
            1,
            "temporary files left behind"
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = ensure_password(&store).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }

    #[test]
    fn the_server_configuration_quotes_what_it_writes() {
        let options = NatsServerOptions::embedded("nats-server", 4222, "/tmp/a \"b\"", "p\\w".into());
        let text = options.config_file_text().unwrap().unwrap();
        assert!(text.contains(r#"store_dir: "/tmp/a \"b\"""#), "{text}");
        assert!(text.contains(r#"password: "p\\w""#), "{text}");
        assert!(text.contains("sync_interval: always") && text.contains("listen: \"127.0.0.1:4222\""));
        assert!(!format!("{options:?}").contains("p\\\\w"), "the password in Debug");
    }
}
