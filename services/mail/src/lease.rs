//! One watcher per mailbox across every guichet process: a lease in the
//! `guichet_leases` KV bucket (entries expire after 30 s).
//!
//! The holder creates the key (atomic: one winner), then renews it every
//! [`RENEW_EVERY`] with an update that names the revision it last wrote,
//! so a holder that was presumed dead and replaced finds out at its next
//! renewal instead of overwriting the new holder. When renewals keep
//! failing (broker away) for [`GIVE_UP_AFTER`], the holder stops acting: the
//! lease may have expired and another process may have taken it.
//!
//! The lease names its [`Holder`]: the process's `instance` and this run
//! of it. A process restarted after a crash finds the lease of its own
//! instance's previous run and takes it over at once (revision-checked),
//! instead of waiting out a lease nobody renews. Instance names must
//! differ between processes: two processes misconfigured with one name
//! would each take the lease from the other. The first one to find its
//! lease taken by its own name logs the misconfiguration and from then on
//! waits for expiry like any other process; meanwhile both may act on the
//! mailbox for at most one renewal period, which exactly-once intake
//! absorbs (a second copy of a contact is refused by its key).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use bytes::Bytes;

pub const RENEW_EVERY: Duration = Duration::from_secs(10);
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(22);
/// How often a standby process tries to take a held lease.
pub const STANDBY_RETRY: Duration = Duration::from_secs(2);
const OP_TIMEOUT: Duration = Duration::from_secs(3);

/// Who holds a lease: an instance, and one run of it.
#[derive(Debug, Clone)]
pub struct Holder {
    instance: String,
    run: String,
    /// Another process was seen holding leases under this instance name:
    /// no more taking over leases of "a previous run" of it.
    duplicate_instance: Arc<AtomicBool>,
}

impl Holder {
    /// A new run of `instance` (one per process start).
    pub fn new(instance: &str) -> Self {
        Self {
            instance: instance.to_owned(),
            run: ulid::Ulid::new().to_string(),
            duplicate_instance: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The lease's value: `<instance>#<run>`.
    fn value(&self) -> Bytes {
        Bytes::from(format!("{}#{}", self.instance, self.run))
    }

    /// Whether `value` names an earlier run of this instance.
    fn is_earlier_run(&self, value: &[u8]) -> bool {
        let Some((instance, run)) = std::str::from_utf8(value).ok().and_then(|v| v.rsplit_once('#')) else {
            return false;
        };
        instance == self.instance && run != self.run
    }
}

/// A lease this process holds.
pub struct Lease {
    store: kv::Store,
    key: String,
    holder: Holder,
    revision: u64,
}

/// Why a renewal failed.
#[derive(Debug)]
pub enum RenewError {
    /// Someone else holds it now.
    Lost,
    /// The bus did not answer; try again.
    Unavailable(String),
}

pub fn key(mailbox: &str) -> String {
    format!("mail.{mailbox}")
}

impl Lease {
    /// Takes the lease if it is free, already ours, or held by an earlier
    /// run of this instance (a restart after a crash); `Ok(None)` when
    /// another process holds it.
    pub async fn try_acquire(store: &kv::Store, key: String, holder: &Holder) -> Result<Option<Lease>, String> {
        let value = holder.value();
        let created = tokio::time::timeout(OP_TIMEOUT, store.create(&key, value.clone()))
            .await
            .map_err(|_| "lease: no answer from NATS".to_owned())?;
        let revision = match created {
            Ok(revision) => revision,
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {
                let entry = tokio::time::timeout(OP_TIMEOUT, store.entry(&key))
                    .await
                    .map_err(|_| "lease: no answer from NATS".to_owned())?
                    .map_err(|e| format!("lease: {e}"))?;
                let take_over = |entry: &kv::Entry| {
                    entry.value == value
                        || (holder.is_earlier_run(&entry.value) && !holder.duplicate_instance.load(Ordering::Relaxed))
                };
                match entry {
                    Some(entry) if entry.operation == Operation::Put && take_over(&entry) => {
                        if entry.value != value {
                            tracing::info!(lease = %key, "taking over the lease of this instance's previous run");
                        }
                        match store.update(&key, value, entry.revision).await {
                            Ok(revision) => revision,
                            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => return Ok(None),
                            Err(e) => return Err(format!("lease: {e}")),
                        }
                    }
                    _ => return Ok(None),
                }
            }
            Err(e) => return Err(format!("lease: {e}")),
        };
        Ok(Some(Lease {
            store: store.clone(),
            key,
            holder: holder.clone(),
            revision,
        }))
    }

    pub async fn renew(&mut self) -> Result<(), RenewError> {
        let update = self.store.update(&self.key, self.holder.value(), self.revision);
        match tokio::time::timeout(OP_TIMEOUT, update).await {
            Ok(Ok(revision)) => {
                self.revision = revision;
                Ok(())
            }
            Ok(Err(e)) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                self.notice_duplicate_instance().await;
                Err(RenewError::Lost)
            }
            Ok(Err(e)) => Err(RenewError::Unavailable(e.to_string())),
            Err(_) => Err(RenewError::Unavailable("no answer from NATS".into())),
        }
    }

    /// A lease lost to "an earlier run" of this instance while this run
    /// is alive means two processes share the instance name.
    async fn notice_duplicate_instance(&self) {
        let Ok(Ok(Some(entry))) = tokio::time::timeout(OP_TIMEOUT, self.store.entry(&self.key)).await else {
            return;
        };
        if self.holder.is_earlier_run(&entry.value) && !self.holder.duplicate_instance.swap(true, Ordering::Relaxed) {
            tracing::error!(
                instance = %self.holder.instance,
                lease = %self.key,
                "another process runs with this instance name and took this lease: give each process its \
                 own `instance`; until then this one waits for leases to expire before taking them"
            );
        }
    }

    /// Renews until the lease is lost or cannot be confirmed for
    /// [`GIVE_UP_AFTER`]; returns why it stopped.
    pub async fn keep(&mut self) -> String {
        let mut confirmed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(RENEW_EVERY.min(GIVE_UP_AFTER / 3)).await;
            match self.renew().await {
                Ok(()) => confirmed = tokio::time::Instant::now(),
                Err(RenewError::Lost) => return "another process took the lease".into(),
                Err(RenewError::Unavailable(reason)) => {
                    tracing::warn!(lease = %self.key, %reason, "lease not renewed");
                    if confirmed.elapsed() >= GIVE_UP_AFTER {
                        return format!("lease not renewed for {GIVE_UP_AFTER:?} ({reason})");
                    }
                }
            }
        }
    }

    /// Gives the lease up at once (clean shutdown), so a standby process
    /// takes over without waiting for the expiry.
    pub async fn release(self) {
        let delete = self.store.delete_expect_revision(&self.key, Some(self.revision));
        let _ = tokio::time::timeout(OP_TIMEOUT, delete).await;
    }
}
