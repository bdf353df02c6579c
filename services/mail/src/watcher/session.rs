//! One IMAP session: log in, SELECT, reconcile the checkpoint with
//! UIDVALIDITY, then search for new messages and wait for more (IDLE, or
//! NOOP polls where the server has no IDLE) until `stop` or an error.

use std::time::Duration;

use async_imap::types::UnsolicitedResponse;
use tokio_util::sync::CancellationToken;

use super::{Run, Server};
use crate::{
    config::After,
    error::MailError,
    imap::{self, ImapSession, with_command_timeout},
    state::{self, Checkpoint},
};

impl Run<'_> {
    pub(super) async fn session(&mut self, stop: &CancellationToken) -> Result<(), MailError> {
        let cfg = self.cfg().clone();
        let limit = cfg.command_timeout;
        let name = cfg.name.clone();
        let mut session = imap::connect(&cfg, self.tls.as_ref(), &self.password).await?;
        metrics::gauge!("guichet_mail_connected", &self.labels()).set(1.0);
        let caps = with_command_timeout(&name, "CAPABILITY", limit, session.capabilities()).await?;
        let server = Server {
            idle: caps.has_str("IDLE"),
            has_move: caps.has_str("MOVE"),
            uidplus: caps.has_str("UIDPLUS"),
        };
        // Folders are created if missing; "already exists" is the usual answer.
        if cfg.after == After::Move {
            let _ = with_command_timeout(&name, "CREATE", limit, session.create(&cfg.move_to)).await;
        }
        let _ = with_command_timeout(&name, "CREATE", limit, session.create(&cfg.error_folder)).await;
        let selected = with_command_timeout(&name, "SELECT", limit, session.select(&cfg.folder)).await?;
        let uidvalidity = selected
            .uid_validity
            .ok_or_else(|| MailError::imap(&name, "SELECT", "the server gave no UIDVALIDITY"))?;
        let uid_next = match selected.uid_next {
            Some(uid_next) => uid_next,
            // UIDNEXT is optional in RFC 3501's SELECT answer. Taking it as
            // "the end of UID space" made a first `flag_seen` start skip
            // every later message: the highest UID in the folder + 1 is
            // what it stands for.
            None => {
                let all = with_command_timeout(&name, "SEARCH", limit, session.uid_search("ALL")).await?;
                all.into_iter().max().map_or(1, |highest| highest.saturating_add(1))
            }
        };
        let stores = self.watcher.bus.stores().clone();
        let loaded = state::load(&stores.checkpoints, &name)
            .await
            .map_err(|e| MailError::bus(&name, e))?;
        let mut checkpoint = match loaded {
            Some(c) if c.uidvalidity == uidvalidity => c,
            Some(old) => {
                tracing::warn!(
                    mailbox = %name, old = old.uidvalidity, new = uidvalidity,
                    "UIDVALIDITY changed: recognising already-ingested messages by Message-ID"
                );
                let c = Checkpoint {
                    uidvalidity,
                    last_uid: 0,
                    recover_until: Some(uid_next.saturating_sub(1)),
                };
                state::save(&stores.checkpoints, &name, &c)
                    .await
                    .map_err(|e| MailError::bus(&name, e))?;
                c
            }
            None => {
                let mut c = Checkpoint {
                    uidvalidity,
                    last_uid: 0,
                    recover_until: None,
                };
                if cfg.after == After::FlagSeen {
                    // First start on a mailbox that is kept: only what is
                    // still unread is new, not its whole history.
                    let unseen = with_command_timeout(&name, "SEARCH", limit, session.uid_search("UNSEEN")).await?;
                    let mut unseen: Vec<u32> = unseen.into_iter().collect();
                    unseen.sort_unstable();
                    let mut batch = Vec::new();
                    for uid in unseen {
                        if stop.is_cancelled() {
                            break;
                        }
                        self.step(&mut session, &server, uid, &mut c, true, &mut batch).await?;
                    }
                    self.flush(&mut session, &server, &mut c, true, &mut batch).await?;
                    c.last_uid = c.last_uid.max(uid_next.saturating_sub(1));
                }
                state::save(&stores.checkpoints, &name, &c)
                    .await
                    .map_err(|e| MailError::bus(&name, e))?;
                c
            }
        };
        tracing::info!(mailbox = %name, uidvalidity, last_uid = checkpoint.last_uid, idle = server.idle, "mailbox selected");

        loop {
            // What the server reported before this search is covered by it.
            while session.unsolicited_responses.try_recv().is_ok() {}
            let query = format!("UNDELETED UID {}:*", checkpoint.last_uid.saturating_add(1));
            let found = with_command_timeout(&name, "SEARCH", limit, session.uid_search(&query)).await?;
            let mut uids: Vec<u32> = found.into_iter().filter(|&u| u > checkpoint.last_uid).collect();
            uids.sort_unstable();
            let found_some = !uids.is_empty();
            let mut batch = Vec::new();
            for uid in uids {
                if stop.is_cancelled() {
                    break;
                }
                self.step(&mut session, &server, uid, &mut checkpoint, false, &mut batch)
                    .await?;
            }
            self.flush(&mut session, &server, &mut checkpoint, false, &mut batch)
                .await?;
            if found_some && !stop.is_cancelled() {
                // More may have arrived during the pass: look again before waiting.
                continue;
            }
            if stop.is_cancelled() {
                let _ = tokio::time::timeout(Duration::from_secs(2), session.logout()).await;
                return Ok(());
            }
            session = if server.idle {
                self.idle(session, stop).await?
            } else {
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = tokio::time::sleep(cfg.poll_interval) => {}
                }
                with_command_timeout(&name, "NOOP", limit, session.noop()).await?;
                session
            };
        }
    }

    /// IDLE until the server reports a change, `idle_refresh` passes, or `stop`.
    async fn idle(&self, session: ImapSession, stop: &CancellationToken) -> Result<ImapSession, MailError> {
        let cfg = self.cfg();
        let name = self.name();
        let unsolicited = session.unsolicited_responses.clone();
        let mut handle = session.idle();
        with_command_timeout(name, "IDLE", cfg.command_timeout, handle.init()).await?;
        // A message that arrived between the last search and IDLE is
        // announced before the server's "+ idling": do not wait for it.
        let mut pending = false;
        while let Ok(response) = unsolicited.try_recv() {
            pending |= matches!(
                response,
                UnsolicitedResponse::Exists(_) | UnsolicitedResponse::Recent(_)
            );
        }
        if !pending {
            // Dovecot's "* OK Still here" keepalives reset async-imap's own
            // timeout, so the refresh is bounded here instead.
            let (wait, _interrupt) = handle.wait_with_timeout(cfg.idle_refresh + Duration::from_secs(60));
            tokio::pin!(wait);
            if let Some(hook) = &self.watcher.hooks.idling {
                hook(name.to_owned());
            }
            tokio::select! {
                () = stop.cancelled() => {}
                () = tokio::time::sleep(cfg.idle_refresh) => {}
                outcome = &mut wait => {
                    outcome.map_err(|e| MailError::imap(name, "IDLE", e))?;
                }
            }
        }
        with_command_timeout(name, "DONE", cfg.command_timeout, handle.done()).await
    }
}
