//! A Dovecot's processes: started in a process group of their own, ready
//! once a user can log in, stopped, killed (the whole group, as a crash
//! would) and started again on the same ports and maildir.

use std::{process::Stdio, time::Duration};

use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};
use tokio::process::Child;

use super::Dovecot;

impl Dovecot {
    /// Starts the server and waits until it is ready; panics if it cannot.
    pub(super) async fn spawn(&mut self) {
        if let Err(e) = self.try_spawn().await {
            panic!("{e}");
        }
    }

    /// Starts the server and waits until it is ready; `Err` (with its
    /// log) if it exited at start, as it does when a port is taken.
    pub(super) async fn try_spawn(&mut self) -> Result<(), String> {
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
        self.wait_ready().await
    }

    /// Ready means a user can log in (the auth process answers).
    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let user = self.users[0].0.clone();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!(
                    "dovecot exited at start ({status}): {} {}",
                    std::fs::read_to_string(self.dir.path().join("dovecot.stderr")).unwrap_or_default(),
                    self.log()
                ));
            }
            if let Ok(Ok(mut session)) = tokio::time::timeout(Duration::from_secs(3), self.try_session(&user)).await {
                let _ = session.logout().await;
                return Ok(());
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

    pub(super) fn pgid(&self) -> Option<Pid> {
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
}

/// The whole group goes with the test, whatever the test did.
impl Drop for Dovecot {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid() {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}
