//! One message, ingested exactly once: its size, then its body, fetched;
//! normalized; the raw original and attachments stored; its contact
//! published; the replay guard written. A message that keeps failing goes
//! to the error folder.

use async_imap::types::Fetch;
use chrono::Utc;
use futures::TryStreamExt;
use guichet_core::{
    bus::IntakeReceipt,
    identity, ids,
    proto::{
        self,
        v1::{AttachmentRef, Channel, Contact, EmailDetails, IdentityClaims, Source, contact::Details},
    },
    telemetry::pseudonym,
};

use super::{Attempts, BATCH, Run, Server};
use crate::{
    config::MailboxConfig,
    error::MailError,
    imap::{ImapSession, with_command_timeout},
    normalize::{self, Normalized},
    state::{self, Checkpoint},
};

impl Run<'_> {
    /// One message: ingested and added to the batch to mark handled, or
    /// (moved to the error folder, vanished) done at once, after the batch.
    pub(super) async fn step(
        &mut self,
        session: &mut ImapSession,
        server: &Server,
        uid: u32,
        checkpoint: &mut Checkpoint,
        first_start: bool,
        batch: &mut Vec<u32>,
    ) -> Result<(), MailError> {
        match self.ingest(session, server, uid, checkpoint).await? {
            Step::MarkWithBatch => {
                batch.push(uid);
                if batch.len() >= BATCH {
                    self.flush(session, server, checkpoint, first_start, batch).await?;
                }
                Ok(())
            }
            Step::Done => {
                // The checkpoint only ever covers handled messages: the
                // batch first, then this one.
                self.flush(session, server, checkpoint, first_start, batch).await?;
                self.advance(checkpoint, uid, first_start).await
            }
        }
    }

    /// Ingests one message, exactly once: publishes its contact (after its
    /// raw original and attachments are stored) and records it in the guard.
    async fn ingest(
        &mut self,
        session: &mut ImapSession,
        server: &Server,
        uid: u32,
        checkpoint: &mut Checkpoint,
    ) -> Result<Step, MailError> {
        let cfg = self.cfg().clone();
        let name = cfg.name.as_str();
        let limit = cfg.command_timeout;
        let bus = self.watcher.bus.clone();
        let stores = bus.stores().clone();
        let uidvalidity = checkpoint.uidvalidity;

        // The size first: an oversized message is fetched only up to the
        // limit, so that one huge message costs neither memory nor the
        // time to download it all.
        let sized: Vec<Fetch> = with_command_timeout(name, "FETCH", limit, async {
            session
                .uid_fetch(uid.to_string(), "(UID RFC822.SIZE)")
                .await?
                .try_collect()
                .await
        })
        .await?;
        let declared_size = sized.iter().find(|f| f.uid == Some(uid)).and_then(|f| f.size);
        drop(sized);
        let cap = self.limits.max_message_size;
        let items = match declared_size {
            Some(size) if usize::try_from(size).ok().is_none_or(|size| size > cap) => {
                format!("(UID INTERNALDATE BODY.PEEK[]<0.{cap}>)")
            }
            _ => "(UID INTERNALDATE BODY.PEEK[])".to_owned(),
        };
        let fetched: Vec<Fetch> = with_command_timeout(name, "FETCH", limit, async {
            session.uid_fetch(uid.to_string(), &items).await?.try_collect().await
        })
        .await?;
        let Some(message) = fetched.iter().find(|f| f.uid == Some(uid)) else {
            // Taken out of the folder by someone else meanwhile.
            tracing::info!(mailbox = %name, uid, "message vanished before it was fetched");
            return Ok(Step::Done);
        };
        let raw = message.body().unwrap_or_default().to_vec();
        let arrived = message.internal_date();
        drop(fetched);

        let limits = self.limits;
        let raw_for_parse = raw.clone();
        let normalized = tokio::task::spawn_blocking(move || {
            normalize::normalize_fetched(&raw_for_parse, declared_size.map(u64::from), &limits)
        })
        .await
        .unwrap_or_else(|_| {
            let mut n = Normalized::default();
            n.flags.push(normalize::Flag {
                kind: proto::v1::FlagKind::ParseError,
                reason: "the parser failed on this message; the raw message is kept".into(),
            });
            n
        });
        let normalized = checked_sender(normalized);
        let identity = state::identity(&normalized.message_id, &raw);

        if checkpoint.recover_until.is_some_and(|until| uid <= until)
            && let Some(receipt) = state::ingested(&stores.replay_guard, name, &identity)
                .await
                .map_err(|e| MailError::bus(name, e))?
        {
            tracing::info!(mailbox = %name, uid, contact = %receipt.contact_id, "already ingested before the UIDVALIDITY change; marking handled");
            metrics::counter!("guichet_mail_messages_total", "mailbox" => name.to_owned(), "outcome" => "duplicate")
                .increment(1);
            return Ok(Step::MarkWithBatch);
        }

        let key = format!("mail:{name}:{uidvalidity}:{uid}");
        let receipt = match self.publish(&key, uidvalidity, uid, &raw, &normalized).await {
            Ok(receipt) => receipt,
            Err(e) => {
                if let Some(hook) = &self.watcher.hooks.publish_failed {
                    hook(name.to_owned(), uid);
                }
                let attempts = self.attempts.entry((uidvalidity, uid)).or_insert_with(Attempts::new);
                attempts.count += 1;
                if !attempts.poison(e.is_transient(), bus.is_connected()) {
                    return Err(MailError::bus(name, e));
                }
                tracing::error!(
                    mailbox = %name, uid, error = %e, folder = %cfg.error_folder,
                    "message cannot be ingested; moved to the error folder"
                );
                metrics::counter!("guichet_mail_messages_total", "mailbox" => name.to_owned(), "outcome" => "error_folder")
                    .increment(1);
                self.move_to(session, server, &uid.to_string(), &cfg.error_folder)
                    .await?;
                self.attempts.remove(&(uidvalidity, uid));
                return Ok(Step::Done);
            }
        };
        self.attempts.remove(&(uidvalidity, uid));
        if let Some(hook) = &self.watcher.hooks.after_puback {
            hook(name.to_owned(), uid).await;
        }
        state::mark_ingested(&stores.replay_guard, name, &identity, &receipt)
            .await
            .map_err(|e| MailError::bus(name, e))?;

        let outcome = if receipt.duplicate { "duplicate" } else { "ingested" };
        metrics::counter!("guichet_mail_messages_total", "mailbox" => name.to_owned(), "outcome" => outcome)
            .increment(1);
        for flag in &normalized.flags {
            metrics::counter!("guichet_mail_flagged_total", "mailbox" => name.to_owned(), "flag" => flag.kind.as_str_name())
                .increment(1);
        }
        if let Some(arrived) = arrived {
            let lag = (Utc::now() - arrived.with_timezone(&Utc)).num_milliseconds().max(0) as f64 / 1000.0;
            metrics::histogram!("guichet_mail_lag_seconds", "mailbox" => name.to_owned()).record(lag);
        }
        tracing::info!(
            mailbox = %name, uid, contact = %receipt.contact_id, reference = %receipt.reference,
            sender = %pseudonym(&normalized.from_address), flags = normalized.flags.len(), duplicate = receipt.duplicate,
            "e-mail ingested"
        );
        Ok(Step::MarkWithBatch)
    }

    /// Stores the raw message and attachments, then publishes the contact.
    async fn publish(
        &self,
        key: &str,
        uidvalidity: u32,
        uid: u32,
        raw: &[u8],
        n: &Normalized,
    ) -> Result<IntakeReceipt, guichet_core::Error> {
        let bus = &self.watcher.bus;
        let raw_ref = bus.put_attachment(raw, "message.eml", "message/rfc822").await?;
        let mut attachments: Vec<AttachmentRef> = Vec::with_capacity(n.attachments.len());
        for a in &n.attachments {
            attachments.push(bus.put_attachment(&a.data, &a.file_name, &a.media_type).await?);
        }
        let contact = MailContact {
            cfg: self.cfg(),
            instance: &self.watcher.instance,
            key,
            uidvalidity,
            uid,
            raw: raw_ref,
            attachments,
            normalized: n,
        }
        .build();
        bus.publish_contact(&contact).await
    }
}

/// What is left to do on the server for one message after its ingest.
enum Step {
    /// Published: mark it handled (MOVE / STORE) with its batch.
    MarkWithBatch,
    /// Nothing more to do on the server for it (vanished, or moved to the
    /// error folder).
    Done,
}

/// Keeps the sender address only if it is a mailbox by the rule every
/// adapter and the router share ([`identity::normalize_email`]): an
/// address that is not one (two `@`, an empty label...) must not become
/// the usager's identity. It is flagged, and the contact goes on without
/// an e-mail claim (the raw message keeps the header as received).
fn checked_sender(mut n: Normalized) -> Normalized {
    if !n.from_address.is_empty()
        && let Err(e) = identity::normalize_email(&n.from_address)
    {
        n.flags.push(normalize::Flag {
            kind: proto::v1::FlagKind::MalformedHeader,
            reason: format!(
                "sender address (From) not usable: {}; not used to identify the usager",
                e.identity_reason()
            ),
        });
        n.from_address.clear();
    }
    n
}

/// What the contact of one ingested message is made of.
struct MailContact<'a> {
    cfg: &'a MailboxConfig,
    /// This process's adapter instance.
    instance: &'a str,
    /// The idempotency key (`mail:<mailbox>:<uidvalidity>:<uid>`).
    key: &'a str,
    uidvalidity: u32,
    uid: u32,
    /// The raw original in the object store.
    raw: AttachmentRef,
    attachments: Vec<AttachmentRef>,
    normalized: &'a Normalized,
}

impl MailContact<'_> {
    fn build(self) -> Contact {
        let Self {
            cfg,
            instance,
            key,
            uidvalidity,
            uid,
            raw,
            attachments,
            normalized: n,
        } = self;
        let now = Utc::now();
        Contact {
            id: ids::contact_id(),
            received_at: Some(proto::timestamp(now)),
            channel: Channel::Email as i32,
            source: Some(Source {
                name: cfg.source_name().to_owned(),
                agent_id: String::new(),
                adapter_instance: instance.to_owned(),
            }),
            claims: Some(IdentityClaims {
                name: n.from_name.clone(),
                email: n.from_address.clone(),
                ..IdentityClaims::default()
            }),
            subject: n.subject.clone(),
            body: n.body.clone(),
            language: n.language.clone(),
            reference: ids::reference(now),
            idempotency_key: key.to_owned(),
            details: Some(Details::Email(EmailDetails {
                message_id: n.message_id.clone(),
                in_reply_to: n.in_reply_to.clone(),
                references: n.references.clone(),
                to: n.to.clone(),
                cc: n.cc.clone(),
                auto_submitted: n.auto_submitted.clone(),
                quoted_text: n.quoted_text.clone(),
                raw_message: Some(raw),
                uid_validity: uidvalidity,
                uid,
                sent_at: n.sent_at.map(proto::timestamp),
            })),
            attachments,
            flags: n
                .flags
                .iter()
                .map(|f| proto::v1::Flag {
                    kind: f.kind as i32,
                    reason: f.reason.clone(),
                })
                .collect(),
        }
    }
}
