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
//!
//! Here: starting one and what a test reads of it; [`config`] writes its
//! configuration, users and certificates, [`process`] runs, stops, kills
//! and restarts it, [`imap`] logs in and appends, counts and reads
//! messages as a test does.

mod config;
mod imap;
mod process;

use std::path::{Path, PathBuf};

use guichet_core::nats_server::free_port;
use tokio::process::Child;

pub use imap::{ImapSession, StoredMessage};

use config::{chown_dovecot, generate_certificate, set_mode};

/// The user every [`Dovecot`] has unless told otherwise.
pub const IMAP_USER: &str = "guichet";
/// Its password.
pub const IMAP_PASSWORD: &str = "mot-de-passe-imap";

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
        if tls {
            generate_certificate(dir.path());
        }
        let mut dovecot = Self {
            child: None,
            dir,
            port: 0,
            tls_port: None,
            users,
        };
        // A port found free can be taken (by another test's connection)
        // before the server binds it: then it starts again on other ports.
        let mut attempts = 0;
        loop {
            attempts += 1;
            dovecot.port = free_port().expect("free port");
            dovecot.tls_port = tls.then(|| free_port().expect("free port"));
            dovecot.write_config();
            match dovecot.try_spawn().await {
                Ok(()) => return dovecot,
                Err(e) if attempts < 5 && crate::port_taken(&e.to_lowercase()) => {}
                Err(e) => panic!("{e}"),
            }
        }
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
}
