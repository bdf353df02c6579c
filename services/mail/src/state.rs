//! What the mail service remembers in NATS, per mailbox:
//!
//! - the checkpoint `mail.<mailbox>` in `guichet_checkpoints`: UIDVALIDITY,
//!   the last UID handled, and while a UIDVALIDITY change is being
//!   recovered, the highest UID that may be an old message renumbered;
//! - the ingested-message guard `mail.<mailbox>.<sha256>` in
//!   `guichet_seen` (retention `topology.replay_guard_ttl`): the
//!   Message-ID (or, without one, the raw message's SHA-256) of every
//!   message ingested, so that after a UIDVALIDITY change an old message
//!   under a new UID is recognised and not ingested twice.

use async_nats::jetstream::kv;
use bytes::Bytes;
use guichet_core::{
    Error,
    bus::{IntakeReceipt, subjects},
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub uidvalidity: u32,
    pub last_uid: u32,
    /// Set while recovering from a UIDVALIDITY change: messages up to this
    /// UID are checked against the guard before being ingested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recover_until: Option<u32>,
}

pub fn checkpoint_key(mailbox: &str) -> String {
    format!("mail.{mailbox}")
}

pub async fn load(store: &kv::Store, mailbox: &str) -> Result<Option<Checkpoint>, Error> {
    let value = store.get(checkpoint_key(mailbox)).await.map_err(|e| Error::Store {
        store: subjects::CHECKPOINTS_BUCKET.into(),
        reason: e.to_string(),
    })?;
    Ok(value.and_then(|v| serde_json::from_slice(&v).ok()))
}

pub async fn save(store: &kv::Store, mailbox: &str, checkpoint: &Checkpoint) -> Result<(), Error> {
    let value = serde_json::to_vec(checkpoint).map_err(|e| Error::Store {
        store: subjects::CHECKPOINTS_BUCKET.into(),
        reason: e.to_string(),
    })?;
    store
        .put(checkpoint_key(mailbox), Bytes::from(value))
        .await
        .map(|_| ())
        .map_err(|e| Error::Store {
            store: subjects::CHECKPOINTS_BUCKET.into(),
            reason: e.to_string(),
        })
}

/// What identifies a message across renumbering: its Message-ID, or its
/// bytes when it has none.
pub fn identity(message_id: &str, raw: &[u8]) -> String {
    if message_id.is_empty() {
        format!("sha256:{}", hex::encode(Sha256::digest(raw)))
    } else {
        format!("mid:{message_id}")
    }
}

fn guard_key(mailbox: &str, identity: &str) -> String {
    format!("mail.{mailbox}.{}", hex::encode(Sha256::digest(identity.as_bytes())))
}

pub async fn ingested(store: &kv::Store, mailbox: &str, identity: &str) -> Result<Option<IntakeReceipt>, Error> {
    let value = store
        .get(guard_key(mailbox, identity))
        .await
        .map_err(|e| Error::Store {
            store: subjects::REPLAY_GUARD_BUCKET.into(),
            reason: e.to_string(),
        })?;
    Ok(value.and_then(|v| serde_json::from_slice(&v).ok()))
}

pub async fn mark_ingested(
    store: &kv::Store,
    mailbox: &str,
    identity: &str,
    receipt: &IntakeReceipt,
) -> Result<(), Error> {
    let value = serde_json::to_vec(receipt).map_err(|e| Error::Store {
        store: subjects::REPLAY_GUARD_BUCKET.into(),
        reason: e.to_string(),
    })?;
    store
        .put(guard_key(mailbox, identity), Bytes::from(value))
        .await
        .map(|_| ())
        .map_err(|e| Error::Store {
            store: subjects::REPLAY_GUARD_BUCKET.into(),
            reason: e.to_string(),
        })
}
