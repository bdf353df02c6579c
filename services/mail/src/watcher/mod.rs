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
//!
//! Here: the lease loop and the reconnections; [`session`] is one IMAP
//! session (SELECT, checkpoint, search, IDLE or poll), [`ingest`] one
//! message (fetch, normalize, store, publish) and [`marking`] what is done
//! on the server once messages are published (MOVE / \Seen, checkpoint).

mod ingest;
mod marking;
mod session;

use std::{collections::HashMap, sync::Arc, time::Duration};

use guichet_core::{Bus, backoff::Backoff};
use tokio_rustls::rustls::ClientConfig;
use tokio_util::sync::CancellationToken;

use crate::{
    Hooks,
    config::MailboxConfig,
    error::MailError,
    imap,
    lease::{self, Lease},
    normalize::Limits,
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
}

/// What the IMAP server offers, from its CAPABILITY answer.
struct Server {
    idle: bool,
    has_move: bool,
    uidplus: bool,
}
