//! What is done on the server once messages are published: marked
//! handled (MOVE to `move_to`, or flagged \Seen) a batch at a time, or
//! moved to the error folder; then the checkpoint moves past them.

use futures::TryStreamExt;

use super::{Run, Server};
use crate::{
    config::After,
    error::MailError,
    imap::{ImapSession, with_command_timeout},
    state::{self, Checkpoint},
};

impl Run<'_> {
    /// Marks the batch handled on the server (one MOVE or STORE for all),
    /// then moves the checkpoint past it.
    pub(super) async fn flush(
        &mut self,
        session: &mut ImapSession,
        server: &Server,
        checkpoint: &mut Checkpoint,
        first_start: bool,
        batch: &mut Vec<u32>,
    ) -> Result<(), MailError> {
        let Some(&last) = batch.iter().max() else { return Ok(()) };
        let set = batch.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        self.mark_handled(session, server, &set).await?;
        batch.clear();
        self.advance(checkpoint, last, first_start).await
    }

    pub(super) async fn mark_handled(
        &self,
        session: &mut ImapSession,
        server: &Server,
        set: &str,
    ) -> Result<(), MailError> {
        let cfg = self.cfg();
        match cfg.after {
            After::Move => self.move_to(session, server, set, &cfg.move_to).await,
            After::FlagSeen => {
                with_command_timeout(cfg.name.as_str(), "STORE", cfg.command_timeout, async {
                    session
                        .uid_store(set, "+FLAGS.SILENT (\\Seen)")
                        .await?
                        .try_collect::<Vec<_>>()
                        .await
                })
                .await?;
                Ok(())
            }
        }
    }

    /// MOVE where offered, else COPY + \Deleted + (UID) EXPUNGE.
    pub(super) async fn move_to(
        &self,
        session: &mut ImapSession,
        server: &Server,
        set: &str,
        folder: &str,
    ) -> Result<(), MailError> {
        let name = self.name();
        let limit = self.cfg().command_timeout;
        if server.has_move {
            return with_command_timeout(name, "MOVE", limit, session.uid_mv(set, folder)).await;
        }
        with_command_timeout(name, "COPY", limit, session.uid_copy(set, folder)).await?;
        with_command_timeout(name, "STORE", limit, async {
            session
                .uid_store(set, "+FLAGS.SILENT (\\Deleted)")
                .await?
                .try_collect::<Vec<_>>()
                .await
        })
        .await?;
        if server.uidplus {
            with_command_timeout(name, "EXPUNGE", limit, async {
                session.uid_expunge(set).await?.try_collect::<Vec<_>>().await
            })
            .await?;
        } else {
            with_command_timeout(name, "EXPUNGE", limit, async {
                session.expunge().await?.try_collect::<Vec<_>>().await
            })
            .await?;
        }
        Ok(())
    }

    pub(super) async fn advance(
        &self,
        checkpoint: &mut Checkpoint,
        uid: u32,
        first_start: bool,
    ) -> Result<(), MailError> {
        if first_start {
            // The first-start pass saves once at its end.
            checkpoint.last_uid = checkpoint.last_uid.max(uid);
            return Ok(());
        }
        checkpoint.last_uid = checkpoint.last_uid.max(uid);
        if checkpoint
            .recover_until
            .is_some_and(|until| checkpoint.last_uid >= until)
        {
            checkpoint.recover_until = None;
        }
        state::save(&self.watcher.bus.stores().checkpoints, self.name(), checkpoint)
            .await
            .map_err(|e| MailError::bus(self.name(), e))
    }
}
