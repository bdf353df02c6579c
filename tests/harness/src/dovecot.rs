//! A real Dovecot (Debian's `dovecot-imapd` 2.3) for one test.
//!
//! Each instance runs as root on free loopback ports with its own
//! configuration, `base_dir`, `state_dir`, maildir and log in a temporary
//! directory, users in a `passwd-file`, and (with [`Dovecot::start_tls`]) a
//! self-signed certificate generated with `openssl` for this test only. The
//! facts that make it run as root in a container: `default_internal_user =
//! dovecot`, `default_login_user = dovenull`, `first_valid_uid = 1`, no
//! chroot for `imap-login` and `anvil`, a `static` userdb with
//! `uid=dovecot gid=dovecot`, and the maildir owned by `dovecot`.
//!
//! The server runs in its own process group: [`Dovecot::kill`] and drop
//! kill the whole group (master, login, auth and imap processes).
//! Messages are put in with IMAP APPEND, as a mail server's delivery would.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use async_imap::Session;
use futures::TryStreamExt;
use guichet_core::nats_server::free_port;
use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};
use tokio::{net::TcpStream, process::Child};

/// The user every [`Dovecot`] has unless told otherwise.
pub const IMAP_USER: &str = "guichet";
/// Its password.
pub const IMAP_PASSWORD: &str = "mot-de-passe-imap";

/// A logged-in IMAP session on plain TCP, for tests.
pub type ImapSession = Session<TcpStream>;

/// One message as a test reads it back from the server.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub uid: u32,
    pub flags: Vec<String>,
    pub raw: Vec<u8>,
}

/// A running Dovecot with its own directory.
pub struct Dovecot {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    tls_port: Option<u16>,
    users: Vec<(String, String)>,
}

impl Dovecot {
    /// Plain IMAP (`ssl = no`), one user [`IMAP_USER`].
    pub async fn start() -> Self {
        Self::start_with(false, &[(IMAP_USER, IMAP_PASSWORD)]).await
    }

    /// IMAP with STARTTLS on [`Self::port`] and implicit TLS on
    /// [`Self::tls_port`], certificate in [`Self::ca_file`].
    pub async fn start_tls() -> Self {
        Self::start_with(true, &[(IMAP_USER, IMAP_PASSWORD)]).await
    }

    pub async fn start_with(tls: bool, users: &[(&str, &str)]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("guichet-dovecot-")
            .tempdir()
            .expect("temporary directory");
        // The imap processes run as `dovecot` and must reach the maildir.
        set_mode(dir.path(), 0o755);
        for sub in ["run", "state"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("dovecot directories");
        }
        let mail = dir.path().join("mail");
        std::fs::create_dir_all(&mail).expect("maildir root");
        chown_dovecot(&mail);
        let users: Vec<(String, String)> = users.iter().map(|(u, p)| ((*u).to_owned(), (*p).to_owned())).collect();
        let passwd: String = users.iter().map(|(u, p)| format!("{u}:{{PLAIN}}{p}::::::\n")).collect();
        std::fs::write(dir.path().join("passwd"), passwd).expect("passwd-file");
        set_mode(&dir.path().join("passwd"), 0o644);
        let tls_port = if tls {
            generate_certificate(dir.path());
            Some(free_port().expect("free port"))
        } else {
            None
        };
        let port = free_port().expect("free port");
        let mut dovecot = Self {
            child: None,
            dir,
            port,
            tls_port,
            users,
        };
        dovecot.write_config();
        dovecot.spawn().await;
        dovecot
    }

    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The plain (and STARTTLS, with TLS on) port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `[[mail.mailboxes]]` section of a guichet config, as an operator
    /// writes it, that reads this server's INBOX as [`IMAP_USER`] (password
    /// in `password_file`) and moves what it ingested to `Traites`.
    pub fn mailbox_toml(&self, password_file: &Path) -> String {
        format!(
            r#"
[[mail.mailboxes]]
name = "contact"
source = "contact@"
host = "127.0.0.1"
port = {port}
tls = "plain"
allow_plaintext = true
user = "{IMAP_USER}"
password = {{ file = "{secret}" }}
move_to = "Traites"
"#,
            port = self.port,
            secret = password_file.display(),
        )
    }

    /// The implicit-TLS port. Panics if started without TLS.
    pub fn tls_port(&self) -> u16 {
        self.tls_port
            .expect("Dovecot started without TLS (use Dovecot::start_tls)")
    }

    /// The test CA's certificate (PEM), to trust as `ca_file`.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The user's maildir (INBOX at its root, folders as `.Name`).
    pub fn maildir(&self, user: &str) -> PathBuf {
        self.dir.path().join("mail").join(user)
    }

    /// Dovecot's log so far, for assertion messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }

    /// The password of `user`.
    pub fn password(&self, user: &str) -> &str {
        self.users
            .iter()
            .find(|(u, _)| u == user)
            .map(|(_, p)| p.as_str())
            .unwrap_or_else(|| panic!("no Dovecot user {user}"))
    }

    fn write_config(&self) {
        let d = self.dir.path().display();
        let ssl = match self.tls_port {
            Some(tls_port) => format!(
                "ssl = yes\nssl_cert = <{d}/cert.pem\nssl_key = <{d}/key.pem\n\
                 service imap-login {{\n  chroot =\n  inet_listener imap {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n\
                 \x20 inet_listener imaps {{\n    address = 127.0.0.1\n    port = {tls_port}\n    ssl = yes\n  }}\n}}\n",
                port = self.port
            ),
            None => format!(
                "ssl = no\nservice imap-login {{\n  chroot =\n  inet_listener imap {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n\
                 \x20 inet_listener imaps {{\n    port = 0\n  }}\n}}\n",
                port = self.port
            ),
        };
        let config = format!(
            "# Written by guichet-harness for one test.\n\
             protocols = imap\n\
             listen = 127.0.0.1\n\
             base_dir = {d}/run\n\
             state_dir = {d}/state\n\
             instance_name = guichet-test-{port}\n\
             log_path = {d}/dovecot.log\n\
             info_log_path = {d}/dovecot.log\n\
             debug_log_path = {d}/dovecot.log\n\
             default_internal_user = dovecot\n\
             default_login_user = dovenull\n\
             first_valid_uid = 1\n\
             disable_plaintext_auth = no\n\
             auth_mechanisms = plain login\n\
             mail_location = maildir:{d}/mail/%u\n\
             imap_idle_notify_interval = 2 mins\n\
             mail_max_userip_connections = 100\n\
             passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN {d}/passwd\n}}\n\
             userdb {{\n  driver = static\n  args = uid=dovecot gid=dovecot home={d}/mail/%u\n}}\n\
             service anvil {{\n  chroot =\n}}\n\
             {ssl}",
            port = self.port
        );
        std::fs::write(self.dir.path().join("dovecot.conf"), config).expect("dovecot.conf");
    }

    async fn spawn(&mut self) {
        let mut command = tokio::process::Command::new("dovecot");
        command
            .arg("-F")
            .arg("-c")
            .arg(self.dir.path().join("dovecot.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(self.dir.path().join("dovecot.stderr"))
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            )
            .process_group(0)
            .kill_on_drop(true);
        let child = command
            .spawn()
            .expect("dovecot starts (is dovecot-imapd installed? run scripts/bootstrap)");
        self.child = Some(child);
        self.wait_ready().await;
    }

    /// Ready means a user can log in (the auth process answers).
    async fn wait_ready(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let user = self.users[0].0.clone();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "dovecot exited at start ({status}): {} {}",
                    std::fs::read_to_string(self.dir.path().join("dovecot.stderr")).unwrap_or_default(),
                    self.log()
                );
            }
            if let Ok(Ok(mut session)) = tokio::time::timeout(Duration::from_secs(3), self.try_session(&user)).await {
                let _ = session.logout().await;
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "dovecot not ready on port {} after 20 s: {}",
                self.port,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn pgid(&self) -> Option<Pid> {
        self.child
            .as_ref()
            .and_then(Child::id)
            .and_then(|p| i32::try_from(p).ok())
            .map(Pid::from_raw)
    }

    /// Stops Dovecot (SIGTERM to the master, then the group is killed);
    /// the maildir and ports are kept for [`Self::start_again`].
    pub async fn stop(&mut self) {
        let Some(pgid) = self.pgid() else { return };
        let _ = nix::sys::signal::kill(pgid, Signal::SIGTERM);
        if let Some(child) = self.child.as_mut() {
            let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
        }
        let _ = killpg(pgid, Signal::SIGKILL);
        if let Some(mut child) = self.child.take() {
            let _ = child.wait().await;
        }
        // The imap processes may outlive the master by a moment.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    /// Kills every Dovecot process at once, as a crash would.
    pub async fn kill(&mut self) {
        if let Some(pgid) = self.pgid() {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.wait().await;
        }
    }

    /// Starts Dovecot again on the same ports and maildir (after [`Self::stop`]).
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "Dovecot is still running");
        self.spawn().await;
    }

    /// Stops and starts again on the same ports and maildir.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.spawn().await;
    }

    /// Makes the server forget the UIDs of `folder` (as a migration or a
    /// rebuilt index does): every message is renumbered from 1 under a new
    /// UIDVALIDITY. Restarts the server.
    pub async fn reset_uidvalidity(&mut self, user: &str, folder: &str) {
        let before = self.uid_validity(user, folder).await;
        self.stop().await;
        // Dovecot derives a new UIDVALIDITY from the clock (seconds).
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let dir = if folder.eq_ignore_ascii_case("INBOX") {
            self.maildir(user)
        } else {
            self.maildir(user).join(format!(".{folder}"))
        };
        for entry in std::fs::read_dir(&dir).expect("maildir folder").flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("dovecot-uidlist") || name.starts_with("dovecot.index") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        // Index files of the whole mailbox list may cache the old value.
        for entry in std::fs::read_dir(self.maildir(user)).expect("maildir").flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("dovecot.list.index") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        self.spawn().await;
        let after = self.uid_validity(user, folder).await;
        assert_ne!(before, after, "UIDVALIDITY did not change");
    }

    async fn try_session(&self, user: &str) -> Result<ImapSession, String> {
        let stream = TcpStream::connect((self.host(), self.port))
            .await
            .map_err(|e| e.to_string())?;
        let mut client = async_imap::Client::new(stream);
        client
            .read_response()
            .await
            .map_err(|e| e.to_string())?
            .ok_or("no greeting")?;
        client
            .login(user, self.password(user))
            .await
            .map_err(|(e, _)| e.to_string())
    }

    /// A logged-in session (plain TCP) for `user`.
    pub async fn session(&self, user: &str) -> ImapSession {
        let mut last = String::new();
        for _ in 0..50 {
            match self.try_session(user).await {
                Ok(s) => return s,
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("cannot log in to Dovecot as {user}: {last}\n{}", self.log());
    }

    /// Appends one message to `folder` (created if missing).
    pub async fn append(&self, user: &str, folder: &str, raw: &[u8]) {
        self.append_all(user, folder, &[raw]).await;
    }

    /// Appends messages in order over one connection.
    pub async fn append_all(&self, user: &str, folder: &str, raws: &[&[u8]]) {
        let mut session = self.session(user).await;
        ensure_folder(&mut session, folder).await;
        for raw in raws {
            session.append(folder, None, None, raw).await.expect("IMAP APPEND");
        }
        let _ = session.logout().await;
    }

    /// The messages of `folder`, by UID, with their flags (empty if the
    /// folder does not exist). Reads with `BODY.PEEK[]`: changes nothing.
    pub async fn messages(&self, user: &str, folder: &str) -> Vec<StoredMessage> {
        let mut session = self.session(user).await;
        if session.examine(folder).await.is_err() {
            return Vec::new();
        }
        let fetched: Vec<_> = match session.uid_fetch("1:*", "(UID FLAGS BODY.PEEK[])").await {
            Ok(stream) => stream.try_collect().await.expect("FETCH"),
            Err(_) => Vec::new(),
        };
        let mut out: Vec<StoredMessage> = fetched
            .iter()
            .filter_map(|f| {
                Some(StoredMessage {
                    uid: f.uid?,
                    flags: f.flags().map(|fl| format!("{fl:?}")).collect(),
                    raw: f.body()?.to_vec(),
                })
            })
            .collect();
        out.sort_by_key(|m| m.uid);
        let _ = session.logout().await;
        out
    }

    /// How many messages `folder` holds (0 if it does not exist).
    pub async fn count(&self, user: &str, folder: &str) -> usize {
        let mut session = self.session(user).await;
        let n = match session.examine(folder).await {
            Ok(mailbox) => mailbox.exists as usize,
            Err(_) => 0,
        };
        let _ = session.logout().await;
        n
    }

    /// The folder's UIDVALIDITY.
    pub async fn uid_validity(&self, user: &str, folder: &str) -> u32 {
        let mut session = self.session(user).await;
        ensure_folder(&mut session, folder).await;
        let mailbox = session.examine(folder).await.expect("EXAMINE");
        let _ = session.logout().await;
        mailbox.uid_validity.expect("UIDVALIDITY")
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid() {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

async fn ensure_folder(session: &mut ImapSession, folder: &str) {
    if !folder.eq_ignore_ascii_case("INBOX") && session.examine(folder).await.is_err() {
        session.create(folder).await.expect("IMAP CREATE");
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn chown_dovecot(path: &Path) {
    let user = nix::unistd::User::from_name("dovecot")
        .ok()
        .flatten()
        .expect("a `dovecot` system user (install dovecot-imapd: scripts/bootstrap)");
    std::os::unix::fs::chown(path, Some(user.uid.as_raw()), Some(user.gid.as_raw())).expect("chown maildir");
}

/// A private CA (`ca.pem`) and a server certificate it signed
/// (`cert.pem`, `key.pem`) for `localhost` / 127.0.0.1, for this test only.
/// (A lone self-signed certificate is a CA certificate, which rustls
/// rightly refuses as a server's own.)
fn generate_certificate(dir: &Path) {
    let openssl = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl runs (scripts/bootstrap installs it)");
        assert!(status.success(), "openssl {args:?} failed");
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl(
        &[
            &["req", "-x509"],
            &ec[..],
            &[
                "-days",
                "2",
                "-subj",
                "/CN=guichet test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"],
            &ec[..],
            &["-subj", "/CN=localhost", "-keyout", "key.pem", "-out", "server.csr"],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .expect("certificate extensions");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "cert.pem",
    ]);
}
