//! A real SMTP server for one test: Postfix's `smtp-sink` (installed by
//! `scripts/bootstrap` with the `postfix` package; the daemon itself is
//! not used).
//!
//! It listens on a loopback address of its own, answers like a mail server and
//! writes each message it accepts to a file of its own temporary
//! directory (`-d`), which [`SmtpSink::messages`] reads back. It can be
//! stopped and started again on the same port ("SMTP down"), or started
//! answering 4xx or 5xx to chosen commands (`-r`, `-f`).

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, SystemTime},
};

use tokio::{net::TcpStream, process::Child};

/// One message as the sink received it.
#[derive(Debug, Clone)]
pub struct SinkMessage {
    pub file: PathBuf,
    /// The envelope recipient(s) (`X-Rcpt-Args`), without brackets.
    pub rcpt: Vec<String>,
    /// The whole file: smtp-sink's own `X-…` lines, then the message.
    pub raw: String,
}

impl SinkMessage {
    /// The first value of header `name` (case-insensitive, unfolded).
    pub fn header(&self, name: &str) -> Option<String> {
        let mut lines = self.raw.lines().take_while(|l| !l.is_empty()).peekable();
        let prefix = format!("{}:", name.to_ascii_lowercase());
        while let Some(line) = lines.next() {
            if line.to_ascii_lowercase().starts_with(&prefix) {
                let mut value = line[prefix.len()..].trim().to_owned();
                while let Some(next) = lines.peek() {
                    if next.starts_with([' ', '\t']) {
                        value.push(' ');
                        value.push_str(next.trim());
                        lines.next();
                    } else {
                        break;
                    }
                }
                return Some(value);
            }
        }
        None
    }
}

/// A running `smtp-sink` with its own directory.
pub struct SmtpSink {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// An address of its own ([`crate::loopback`]): its port, once
    /// stopped, is not another test's meanwhile.
    host: Ipv4Addr,
    port: u16,
    extra: Vec<String>,
}

/// Where `smtp-sink` is.
pub fn binary() -> PathBuf {
    ["/usr/sbin/smtp-sink", "/usr/lib/postfix/sbin/smtp-sink"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("smtp-sink"))
}

impl SmtpSink {
    /// Accepts every message.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// With extra options, e.g. `["-r", "RCPT"]` (4xx) or `["-f", "RCPT"]` (5xx).
    pub async fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        std::fs::create_dir_all(dir.path().join("mail")).expect("mail directory");
        // smtp-sink drops root privileges to postfix before writing.
        if let Ok(Some(user)) = nix::unistd::User::from_name("postfix") {
            for path in [dir.path().to_path_buf(), dir.path().join("mail")] {
                let _ = nix::unistd::chown(&path, Some(user.uid), Some(user.gid));
            }
        }
        let mut sink = Self {
            child: None,
            dir,
            host: Ipv4Addr::LOCALHOST,
            port: 0,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        for _ in 0..5 {
            sink.host = crate::loopback::own_ip();
            sink.port = crate::loopback::free_port_on(sink.host);
            if sink.spawn().await {
                return sink;
            }
        }
        panic!("smtp-sink did not start (is postfix installed? scripts/bootstrap)");
    }

    pub fn host(&self) -> String {
        self.host.to_string()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    fn mail_dir(&self) -> PathBuf {
        self.dir.path().join("mail")
    }

    async fn spawn(&mut self) -> bool {
        let mut cmd = tokio::process::Command::new(binary());
        cmd.arg("-u")
            .arg("postfix")
            .arg("-d")
            .arg(format!("{}/%Y%m%d%H%M%S.", self.mail_dir().display()))
            .args(&self.extra)
            .arg(format!("{}:{}", self.host, self.port))
            .arg("256")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let Ok(mut child) = cmd.spawn() else {
            return false;
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::time::Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            if TcpStream::connect((self.host, self.port)).await.is_ok() {
                self.child = Some(child);
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = child.kill().await;
        false
    }

    /// Stops the server: connections are refused until [`Self::start_again`].
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts it again on the same port, for up to 15 s while the port is taken.
    pub async fn start_again(&mut self) {
        self.stop().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while !self.spawn().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "smtp-sink restarts on port {}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Every message received so far and completely written (a file
    /// untouched for 200 ms), oldest first.
    pub fn messages(&self) -> Vec<SinkMessage> {
        read_messages(&self.mail_dir())
    }
}

fn read_messages(dir: &Path) -> Vec<SinkMessage> {
    let mut out: Vec<(SystemTime, SinkMessage)> = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        if modified.elapsed().unwrap_or_default() < Duration::from_millis(200) {
            continue;
        }
        let Ok(raw) = std::fs::read_to_string(&path) else {
            continue;
        };
        let rcpt = raw
            .lines()
            .take_while(|l| !l.is_empty())
            .filter_map(|l| l.strip_prefix("X-Rcpt-Args:"))
            .map(|v| {
                v.trim()
                    .trim_start_matches('<')
                    .split('>')
                    .next()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect();
        out.push((modified, SinkMessage { file: path, rcpt, raw }));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.file.cmp(&b.1.file)));
    out.into_iter().map(|(_, m)| m).collect()
}
