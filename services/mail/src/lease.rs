//! One watcher per mailbox across every guichet process: a lease in the
//! `guichet_leases` KV bucket (entries expire after 30 s).
//!
//! The holder creates the key (atomic: one winner), then renews it every
//! [`RENEW_EVERY`] with an update that names the revision it last wrote,
//! so a holder that was presumed dead and replaced finds out at its next
//! renewal instead of overwriting the new holder. When renewals keep
//! failing (broker away) for [`GIVE_UP_AFTER`], the holder stops acting: the
//! lease may have expired and another process may have taken it.

use std::time::Duration;

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use bytes::Bytes;

pub const RENEW_EVERY: Duration = Duration::from_secs(10);
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(22);
/// How often a standby process tries to take a held lease.
pub const STANDBY_RETRY: Duration = Duration::from_secs(2);
const OP_TIMEOUT: Duration = Duration::from_secs(3);

/// A lease this process holds.
pub struct Lease {
    store: kv::Store,
    key: String,
    holder: String,
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
    /// Takes the lease if it is free (or already ours, from an earlier run
    /// of this process); `Ok(None)` when another process holds it.
    pub async fn try_acquire(store: &kv::Store, key: String, holder: &str) -> Result<Option<Lease>, String> {
        let value = Bytes::from(holder.to_owned());
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
                match entry {
                    Some(entry) if entry.operation == Operation::Put && entry.value == value => {
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
            holder: holder.to_owned(),
            revision,
        }))
    }

    pub async fn renew(&mut self) -> Result<(), RenewError> {
        let update = self
            .store
            .update(&self.key, Bytes::from(self.holder.clone()), self.revision);
        match tokio::time::timeout(OP_TIMEOUT, update).await {
            Ok(Ok(revision)) => {
                self.revision = revision;
                Ok(())
            }
            Ok(Err(e)) if e.kind() == UpdateErrorKind::WrongLastRevision => Err(RenewError::Lost),
            Ok(Err(e)) => Err(RenewError::Unavailable(e.to_string())),
            Err(_) => Err(RenewError::Unavailable("no answer from NATS".into())),
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
