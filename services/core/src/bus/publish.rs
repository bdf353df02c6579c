//! The one publish path: `Nats-Msg-Id`, PubAck, bounded in-flight,
//! typed errors, and the replay guard for contacts.
//!
//! An adapter answers "received" to its source only after
//! [`Bus::publish`] or [`Bus::publish_contact`] returned `Ok`: by then
//! JetStream has stored the message. Errors are [`Error::Unavailable`]
//! (retry: 503 / UNAVAILABLE / leave the mail in the mailbox) or
//! [`Error::Rejected`] (the message itself is refused).

use std::time::Duration;

use async_nats::jetstream::{context::PublishErrorKind, kv, publish::PublishAck};
use bytes::Bytes;
use prost::Message;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Bus, subjects};
use crate::{
    Error,
    proto::v1::{Channel, Contact},
};

/// What JetStream said about a publish.
#[derive(Debug, Clone)]
pub struct Published {
    pub stream: String,
    pub sequence: u64,
    /// The server already had a message with this `Nats-Msg-Id`.
    pub duplicate: bool,
}

impl From<PublishAck> for Published {
    fn from(ack: PublishAck) -> Self {
        Self {
            stream: ack.stream,
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        }
    }
}

/// What an adapter tells its source once a contact is stored: the ids of
/// the first publish, even when this one was a retry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntakeReceipt {
    pub contact_id: String,
    pub reference: String,
    /// RFC 3339.
    pub received_at: String,
    pub sequence: u64,
    /// This call stored nothing new: the contact was already there.
    #[serde(skip)]
    pub duplicate: bool,
}

impl Bus {
    /// Publishes `payload` on `subject` with `Nats-Msg-Id: msg_id` and waits
    /// for the PubAck, at most `nats.publish_timeout` in all (including the
    /// wait for a free in-flight slot).
    pub async fn publish(&self, subject: String, msg_id: &str, payload: Bytes) -> Result<Published, Error> {
        let timeout = self.inner.publish_timeout;
        let started = tokio::time::Instant::now();
        let outcome = tokio::time::timeout(timeout, async {
            let _permit = self
                .inner
                .in_flight
                .acquire()
                .await
                .map_err(|_| Error::Unavailable("the bus is shutting down".into()))?;
            let publish = async_nats::jetstream::message::PublishMessage::build()
                .message_id(msg_id)
                .payload(payload);
            let ack = self
                .inner
                .jetstream
                .send_publish(subject, publish)
                .await
                .map_err(publish_error)?
                .await
                .map_err(publish_error)?;
            Ok::<_, Error>(Published::from(ack))
        })
        .await;
        let result = outcome.unwrap_or_else(|_| {
            Err(Error::Unavailable(format!(
                "no acknowledgement from JetStream within {timeout:?}"
            )))
        });
        let label = match &result {
            Ok(p) if p.duplicate => "duplicate",
            Ok(_) => "stored",
            Err(e) if e.is_transient() => "unavailable",
            Err(_) => "rejected",
        };
        metrics::counter!("guichet_publish_total", "outcome" => label).increment(1);
        metrics::histogram!("guichet_publish_seconds").record(started.elapsed().as_secs_f64());
        result
    }

    /// Publishes a contact on `guichet.intake.<channel>`, exactly once per
    /// `contact.idempotency_key`, however late the retry:
    ///
    /// 1. a key already in the replay guard returns the first receipt and
    ///    publishes nothing;
    /// 2. otherwise the contact is published with `Nats-Msg-Id` = the key;
    ///    a duplicate PubAck (a retry within the duplicate window) returns
    ///    the ids of the message the stream already holds;
    /// 3. the receipt is written to the replay guard.
    pub async fn publish_contact(&self, contact: &Contact) -> Result<IntakeReceipt, Error> {
        let key = &contact.idempotency_key;
        if key.is_empty() {
            return Err(Error::Rejected("a contact needs an idempotency key".into()));
        }
        let guard_key = replay_guard_key(key);
        let guard = &self.inner.stores.replay_guard;
        if let Some(receipt) = read_receipt(guard, &guard_key).await? {
            return Ok(IntakeReceipt {
                duplicate: true,
                ..receipt
            });
        }
        let channel = Channel::try_from(contact.channel).unwrap_or(Channel::Unspecified);
        let published = self
            .publish(subjects::intake(channel), key, Bytes::from(contact.encode_to_vec()))
            .await?;
        let receipt = if published.duplicate {
            let stored = self.stored_contact(&published).await?;
            IntakeReceipt {
                duplicate: true,
                ..receipt_of(&stored, published.sequence)
            }
        } else {
            receipt_of(contact, published.sequence)
        };
        // The message is stored: the guard only matters for retries that come
        // after the duplicate window (minutes later), so it is written in the
        // background instead of costing the caller a third round trip, and a
        // failure to write it only narrows deduplication to that window.
        match serde_json::to_vec(&receipt) {
            Ok(value) => {
                let guard = guard.clone();
                tokio::spawn(async move {
                    if let Err(e) = guard.put(&guard_key, value.into()).await {
                        tracing::warn!(error = %e, "replay guard not written; dedup relies on the duplicate window");
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "replay guard not encoded"),
        }
        Ok(receipt)
    }

    /// Whether the replay guard already holds `idempotency_key`.
    pub async fn already_received(&self, idempotency_key: &str) -> Result<Option<IntakeReceipt>, Error> {
        read_receipt(&self.inner.stores.replay_guard, &replay_guard_key(idempotency_key)).await
    }

    async fn stored_contact(&self, published: &Published) -> Result<Contact, Error> {
        let stream = self
            .inner
            .jetstream
            .get_stream(&published.stream)
            .await
            .map_err(|e| Error::Unavailable(format!("reading back the stored contact: {e}")))?;
        let message = stream
            .direct_get(published.sequence)
            .await
            .map_err(|e| Error::Unavailable(format!("reading back the stored contact: {e}")))?;
        Contact::decode(message.payload).map_err(|e| Error::Decode {
            subject: message.subject.to_string(),
            reason: e.to_string(),
        })
    }
}

fn receipt_of(contact: &Contact, sequence: u64) -> IntakeReceipt {
    let received_at = contact
        .received_at
        .as_ref()
        .and_then(crate::proto::to_datetime)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default();
    IntakeReceipt {
        contact_id: contact.id.clone(),
        reference: contact.reference.clone(),
        received_at,
        sequence,
        duplicate: false,
    }
}

/// KV keys have a restricted alphabet: idempotency keys are hashed.
fn replay_guard_key(idempotency_key: &str) -> String {
    hex::encode(Sha256::digest(idempotency_key.as_bytes()))
}

async fn read_receipt(guard: &kv::Store, key: &str) -> Result<Option<IntakeReceipt>, Error> {
    let entry = guard
        .get(key)
        .await
        .map_err(|e| Error::Unavailable(format!("reading the replay guard: {e}")))?;
    Ok(entry.and_then(|bytes| serde_json::from_slice(&bytes).ok()))
}

fn publish_error(e: async_nats::jetstream::context::PublishError) -> Error {
    match e.kind() {
        PublishErrorKind::WrongLastMessageId | PublishErrorKind::WrongLastSequence => Error::Rejected(e.to_string()),
        PublishErrorKind::StreamNotFound => {
            Error::Unavailable("no stream for this subject (is the topology in place?)".into())
        }
        _ => Error::Unavailable(e.to_string()),
    }
}

/// How long callers should suggest waiting before a retry (`Retry-After`).
pub const RETRY_AFTER: Duration = Duration::from_secs(5);
