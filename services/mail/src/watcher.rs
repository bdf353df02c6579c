//! One mailbox, watched for as long as the service runs.
//!
//! ```text
//! take the lease ─► connect, log in, SELECT ─► check UIDVALIDITY against the checkpoint
//!        ▲                                   ─► for each new UID: FETCH BODY.PEEK[] ─► normalize
//!        │                                        ─► raw + attachments to the object store
//!        │                                        ─► publish_contact (PubAck) ─► guard ─► MOVE / \Seen ─► checkpoint
//!        │                                   ─► IDLE (re-issued every idle_refresh) or poll
//!        └── lease lost / error: drop the connection, back off, start again
//! ```
//!
//! Nothing is marked handled on the server before JetStream's PubAck, so a
//! crash anywhere leaves the message in the folder; the next run publishes
//! it again with the same `Nats-Msg-Id` and the bus returns the first
//! receipt instead of storing a second contact.

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_imap::types::{Fetch, UnsolicitedResponse};
use chrono::Utc;
use futures::TryStreamExt;
use guichet_core::{
    Bus,
    backoff::Backoff,
    bus::IntakeReceipt,
    identity, ids,
    proto::{
        self,
        v1::{AttachmentRef, Channel, Contact, EmailDetails, IdentityClaims, Source, contact::Details},
    },
    telemetry::pseudonym,
};
use tokio_rustls::rustls::ClientConfig;
use tokio_util::sync::CancellationToken;

use crate::{
    Hooks,
    config::{After, MailboxConfig},
    error::MailError,
    imap::{self, ImapSession, with_command_timeout},
    lease::{self, Lease},
    normalize::{self, Limits, Normalized},
    state::{self, Checkpoint},
};

/// A message whose publish keeps failing for a reason that may be the
/// broker's is moved to the error folder after at least this many attempts
/// (one failing for a reason of its own, refused by the stream, at once).
const MAX_ATTEMPTS: u32 = 3;
/// A failure that may be the broker's (a timeout, no responders, a store
/// write) makes a message poison only once it has lasted this long with
/// the connection up: a slow or electing JetStream fails every message
/// for a while, and the mailbox, not the error folder, is where they must
/// wait for it.
const TRANSIENT_POISON_AFTER: Duration = Duration::from_secs(300);
/// Ingested messages are marked handled (MOVE / STORE) this many at a time:
/// on a large maildir each expunge costs the server a pass over its index,
/// so one MOVE per message makes a backlog quadratic. A batch is also
/// flushed whenever the folder has nothing more, so a lone message is
/// handled at once.
const BATCH: usize = 100;
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(15);

/// Everything one mailbox's watcher needs.
pub struct Watcher {
    pub config: MailboxConfig,
    pub bus: Bus,
    pub instance: String,
    /// This run's identity in the lease.
    pub holder: lease::Holder,
    /// Where a mailbox standing by is shown (`/readyz`).
    pub health: guichet_core::admin::Health,
    pub hooks: Hooks,
}

struct Run<'a> {
    watcher: &'a Watcher,
    password: String,
    tls: Option<Arc<ClientConfig>>,
    limits: Limits,
    /// Failed attempts per (UIDVALIDITY, UID), for poison messages.
    attempts: HashMap<(u32, u32), Attempts>,
}

/// How a message's publish has failed so far.
struct Attempts {
    count: u32,
    first_failed: tokio::time::Instant,
}

impl Attempts {
    fn new() -> Self {
        Attempts {
            count: 0,
            first_failed: tokio::time::Instant::now(),
        }
    }

    /// Whether the message goes to the error folder after this failure.
    fn poison(&self, transient: bool, connected: bool) -> bool {
        if !transient {
            return true;
        }
        connected && self.count >= MAX_ATTEMPTS && self.first_failed.elapsed() >= TRANSIENT_POISON_AFTER
    }
}

impl Watcher {
    fn name(&self) -> &str {
        &self.config.name
    }

    /// Watches until `cancel`: lease, session, reconnects.
    pub async fn watch(self, cancel: CancellationToken) {
        let name = self.config.name.clone();
        let labels = [("mailbox", name.clone())];
        metrics::gauge!("guichet_mail_connected", &labels).set(0.0);
        metrics::gauge!("guichet_mail_lease_held", &labels).set(0.0);
        let mut run = loop {
            match self.prepare() {
                Ok(run) => break run,
                Err(e) => {
                    // Validated at start; a file that vanished since is retried.
                    tracing::error!(mailbox = %name, error = %e, "mailbox cannot start; retrying in 30 s");
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(30)) => {}
                    }
                }
            }
        };
        let leases = self.bus.stores().leases.clone();
        let mut standby_logged = false;
        while !cancel.is_cancelled() {
            let mut lease = match Lease::try_acquire(&leases, lease::key(&name), &self.holder).await {
                Ok(Some(lease)) => lease,
                outcome => {
                    match outcome {
                        Err(reason) => tracing::warn!(mailbox = %name, %reason, "lease unavailable"),
                        _ if !standby_logged => {
                            tracing::info!(mailbox = %name, "another process watches this mailbox; standing by");
                            self.health.set_note(
                                &format!("mail.{name}"),
                                Some("standing by: another process holds the mailbox's lease".into()),
                            );
                            standby_logged = true;
                        }
                        _ => {}
                    }
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(lease::STANDBY_RETRY) => continue,
                    }
                }
            };
            standby_logged = false;
            self.health.set_note(&format!("mail.{name}"), None);
            tracing::info!(mailbox = %name, instance = %self.instance, "lease taken; watching");
            metrics::gauge!("guichet_mail_lease_held", &labels).set(1.0);
            let stop = cancel.child_token();
            let lost = tokio::select! {
                () = run.sessions(&stop) => None,
                reason = lease.keep() => Some(reason),
            };
            metrics::gauge!("guichet_mail_lease_held", &labels).set(0.0);
            metrics::gauge!("guichet_mail_connected", &labels).set(0.0);
            match lost {
                Some(reason) => tracing::warn!(mailbox = %name, %reason, "lease lost; stopped acting on the mailbox"),
                None => {
                    lease.release().await;
                    tracing::info!(mailbox = %name, "stopped; lease released");
                }
            }
        }
    }

    fn prepare(&self) -> Result<Run<'_>, MailError> {
        let key = format!("mail.mailboxes[{}].password", self.name());
        let password = self
            .config
            .password
            .as_ref()
            .ok_or_else(|| MailError::Config(guichet_core::Error::config(&key, "required")))?
            .resolve(&key)
            .map_err(MailError::Config)?;
        Ok(Run {
            watcher: self,
            password,
            tls: imap::tls_config(&self.config)?,
            limits: Limits {
                max_message_size: usize::try_from(self.config.max_message_size).unwrap_or(usize::MAX),
                ..Limits::default()
            },
            attempts: HashMap::new(),
        })
    }
}

impl Run<'_> {
    fn cfg(&self) -> &MailboxConfig {
        &self.watcher.config
    }

    fn name(&self) -> &str {
        &self.watcher.config.name
    }

    fn labels(&self) -> [(&'static str, String); 1] {
        [("mailbox", self.name().to_owned())]
    }

    /// Sessions one after the other, with backoff, until `stop`.
    async fn sessions(&mut self, stop: &CancellationToken) {
        let mut backoff = Backoff::new(BACKOFF_FIRST, BACKOFF_MAX);
        while !stop.is_cancelled() {
            let started = tokio::time::Instant::now();
            let outcome = self.session(stop).await;
            metrics::gauge!("guichet_mail_connected", &self.labels()).set(0.0);
            let Err(e) = outcome else { return };
            let kind = match &e {
                MailError::Bus { .. } => "nats",
                MailError::Tls { .. } => "tls",
                _ => "imap",
            };
            metrics::counter!("guichet_mail_errors_total", "mailbox" => self.name().to_owned(), "kind" => kind)
                .increment(1);
            if started.elapsed() > Duration::from_secs(60) {
                backoff.reset();
            }
            let delay = backoff.next_delay();
            tracing::warn!(mailbox = %self.name(), error = %e, retry_in = ?delay, "mailbox session ended; reconnecting");
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    async fn session(&mut self, stop: &CancellationToken) -> Result<(), MailError> {
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

    /// One message: ingested and added to the batch to mark handled, or
    /// (moved to the error folder, vanished) done at once, after the batch.
    async fn step(
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

    /// Marks the batch handled on the server (one MOVE or STORE for all),
    /// then moves the checkpoint past it.
    async fn flush(
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
        let contact = contact(
            self.cfg(),
            &self.watcher.instance,
            key,
            uidvalidity,
            uid,
            raw_ref,
            attachments,
            n,
        );
        bus.publish_contact(&contact).await
    }

    async fn mark_handled(&self, session: &mut ImapSession, server: &Server, set: &str) -> Result<(), MailError> {
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
    async fn move_to(
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

    async fn advance(&self, checkpoint: &mut Checkpoint, uid: u32, first_start: bool) -> Result<(), MailError> {
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

/// What is left to do on the server for one message after its ingest.
enum Step {
    /// Published: mark it handled (MOVE / STORE) with its batch.
    MarkWithBatch,
    /// Nothing more to do on the server for it (vanished, or moved to the
    /// error folder).
    Done,
}

/// What the IMAP server offers, from its CAPABILITY answer.
struct Server {
    idle: bool,
    has_move: bool,
    uidplus: bool,
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

#[allow(clippy::too_many_arguments)]
fn contact(
    cfg: &MailboxConfig,
    instance: &str,
    key: &str,
    uidvalidity: u32,
    uid: u32,
    raw: AttachmentRef,
    attachments: Vec<AttachmentRef>,
    n: &Normalized,
) -> Contact {
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
