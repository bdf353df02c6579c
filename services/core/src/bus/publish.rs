//! The one publish path: `Nats-Msg-Id`, PubAck, bounded in-flight,
//! typed errors, and exactly-once intake of contacts.
//!
//! An adapter answers "received" to its source only after
//! [`Bus::publish`] or [`Bus::publish_contact`] returned `Ok`: by then
//! JetStream has stored the message. Errors are [`Error::Unavailable`]
//! (retry: 503 / UNAVAILABLE / leave the mail in the mailbox) or
//! [`Error::Rejected`] (the message itself is refused). The outcome of
//! every publish to INTAKE feeds the readiness.

use std::time::Duration;

use async_nats::jetstream::{
    context::PublishErrorKind, message::StreamMessage, publish::PublishAck, stream::DirectGetErrorKind,
};
use bytes::Bytes;
use prost::Message;
use serde::{Deserialize, Serialize};

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
        let publish = async_nats::jetstream::message::PublishMessage::build()
            .message_id(msg_id)
            .payload(payload);
        self.send(subject, publish).await.map_err(|e| self.publish_error(&e))
    }

    /// Publishes a contact on `guichet.intake.<channel>.<key>`, exactly
    /// once per `contact.idempotency_key`, in one round trip:
    ///
    /// - the publish carries `Nats-Msg-Id` = the key and
    ///   `Nats-Expected-Last-Subject-Sequence: 0`, and the subject is
    ///   derived from the key, so JetStream stores it only if no contact
    ///   with that key is in INTAKE: within the duplicate window the PubAck
    ///   says "duplicate", after it the publish is refused, for as long as
    ///   INTAKE keeps the first (`topology.intake_max_age`);
    /// - a retry gets the ids of the contact the stream already holds.
    pub async fn publish_contact(&self, contact: &Contact) -> Result<IntakeReceipt, Error> {
        let key = &contact.idempotency_key;
        if key.is_empty() {
            return Err(Error::Rejected("a contact needs an idempotency key".into()));
        }
        let channel = Channel::try_from(contact.channel).unwrap_or(Channel::Unspecified);
        let subject = subjects::intake_keyed(channel, key);
        let publish = async_nats::jetstream::message::PublishMessage::build()
            .message_id(key.as_str())
            .expected_last_subject_sequence(0)
            .payload(Bytes::from(contact.encode_to_vec()));
        match self.send(subject.clone(), publish).await {
            Ok(published) if !published.duplicate => Ok(receipt_of(contact, published.sequence)),
            // Within the duplicate window: the PubAck names the stored copy.
            Ok(published) => {
                let stored = self.inner.intake.direct_get(published.sequence).await;
                duplicate_receipt(stored.map_err(read_back_error)?)
            }
            // After it: the contact's subject is taken.
            Err(SendError::Publish(e, _)) if e.kind() == PublishErrorKind::WrongLastSequence => {
                // `None`: purged between the refusal and the read (an
                // erasure): nothing to answer with, and nothing stored.
                self.stored_contact(&subject)
                    .await?
                    .ok_or_else(|| Error::Unavailable("the contact was removed while being recorded".into()))
            }
            Err(e) => Err(self.publish_error(&e)),
        }
    }

    /// The receipt of the contact with this idempotency key, if INTAKE
    /// still holds it: lets an adapter answer a retry before uploading
    /// its attachments again.
    pub async fn already_received(
        &self,
        channel: Channel,
        idempotency_key: &str,
    ) -> Result<Option<IntakeReceipt>, Error> {
        self.stored_contact(&subjects::intake_keyed(channel, idempotency_key))
            .await
    }

    /// The contact stored on `subject`, as a duplicate receipt.
    async fn stored_contact(&self, subject: &str) -> Result<Option<IntakeReceipt>, Error> {
        match self.inner.intake.direct_get_last_for_subject(subject).await {
            Ok(message) => duplicate_receipt(message).map(Some),
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(read_back_error(e)),
        }
    }

    /// One publish with PubAck, bounded in time and in flight, counted.
    ///
    /// A lost connection fails the publish at once rather than after
    /// `nats.publish_timeout`: the disconnection is seen within tens of
    /// milliseconds, the PubAck will never come on this connection. The
    /// message may still have been stored just before the connection
    /// dropped: that is safe, because the adapter answers 503 /
    /// UNAVAILABLE and the source retries with the same idempotency key,
    /// which JetStream stores once (`Nats-Msg-Id` within the duplicate
    /// window, the contact's own subject with an expected last subject
    /// sequence of 0 after it), and the retry gets the first receipt.
    async fn send(
        &self,
        subject: String,
        publish: async_nats::jetstream::message::PublishMessage,
    ) -> Result<Published, SendError> {
        let timeout = self.inner.publish_timeout;
        let started = tokio::time::Instant::now();
        let stream = subjects::stream_of(&subject);
        // Subscribed before the state is read: a disconnection after this
        // point is seen by one or the other.
        let mut disconnects = self.inner.readiness.disconnects();
        let result = if self.is_connected() {
            let stored = tokio::time::timeout(timeout, async {
                let _permit = self.inner.in_flight.acquire().await.map_err(|_| SendError::Closed)?;
                let ack = self
                    .inner
                    .jetstream
                    .send_publish(subject, publish)
                    .await
                    .map_err(|e| SendError::Publish(e, stream))?
                    .await
                    .map_err(|e| SendError::Publish(e, stream))?;
                Ok::<_, SendError>(Published::from(ack))
            });
            tokio::select! {
                outcome = stored => outcome.unwrap_or(Err(SendError::Timeout(timeout))),
                // `Err`: the bus is gone, so is the connection.
                _ = disconnects.changed() => Err(SendError::Disconnected),
            }
        } else {
            Err(SendError::Disconnected)
        };
        let label = match &result {
            Ok(p) if p.duplicate => "duplicate",
            Ok(_) => "stored",
            Err(SendError::Publish(e, _)) if e.kind() == PublishErrorKind::WrongLastSequence => "duplicate",
            Err(e) if self.publish_error(e).is_transient() => "unavailable",
            Err(_) => "rejected",
        };
        if stream == Some(subjects::INTAKE_STREAM) {
            match (label, &result) {
                // JetStream answered: INTAKE takes contacts.
                ("stored" | "duplicate", _) => self.inner.readiness.publish_outcome(Ok(())),
                ("unavailable", Err(e)) if !matches!(e, SendError::Closed) => {
                    self.inner
                        .readiness
                        .publish_outcome(Err(self.publish_error(e).to_string()));
                }
                _ => {}
            }
        }
        metrics::counter!("guichet_publish_total", "outcome" => label).increment(1);
        metrics::histogram!("guichet_publish_seconds").record(started.elapsed().as_secs_f64());
        result
    }

    fn publish_error(&self, e: &SendError) -> Error {
        let (e, stream) = match e {
            SendError::Publish(e, stream) => (e, stream),
            SendError::Timeout(timeout) => {
                return Error::Unavailable(format!("no acknowledgement from JetStream within {timeout:?}"));
            }
            SendError::Disconnected => return Error::Unavailable("disconnected from NATS".into()),
            SendError::Closed => return Error::Unavailable("the bus is shutting down".into()),
        };
        match (e.kind(), stream) {
            (PublishErrorKind::WrongLastMessageId | PublishErrorKind::WrongLastSequence, _) => {
                Error::Rejected(e.to_string())
            }
            // "No responders": in a cluster only a stream's leader listens
            // on its subjects, so during an election an existing stream
            // answers like a missing one. INTAKE is probed: the topology
            // is blamed only when JetStream says INTAKE does not exist.
            (PublishErrorKind::StreamNotFound, Some(subjects::INTAKE_STREAM))
                if !self.inner.readiness.intake_missing() =>
            {
                Error::Unavailable(format!(
                    "JetStream has no leader for {} (election in progress?)",
                    subjects::INTAKE_STREAM
                ))
            }
            (PublishErrorKind::StreamNotFound, Some(stream)) if *stream != subjects::INTAKE_STREAM => {
                Error::Unavailable(format!(
                    "no answer from stream {stream}: no leader (election in progress?) or no such stream (is the topology in place?)"
                ))
            }
            (PublishErrorKind::StreamNotFound, _) => {
                Error::Unavailable("no stream for this subject (is the topology in place?)".into())
            }
            _ => Error::Unavailable(e.to_string()),
        }
    }
}

/// Why [`Bus::send`] failed, before it is mapped to an [`Error`].
#[derive(Debug)]
enum SendError {
    /// With the stream the subject belongs to, when it is one of ours.
    Publish(async_nats::jetstream::context::PublishError, Option<&'static str>),
    Timeout(Duration),
    /// The connection was lost (or was down) before the PubAck.
    Disconnected,
    Closed,
}

/// The receipt of a contact already in INTAKE, answered to a retry.
fn duplicate_receipt(stored: StreamMessage) -> Result<IntakeReceipt, Error> {
    let contact = Contact::decode(stored.payload).map_err(|e| Error::Decode {
        subject: stored.subject.to_string(),
        reason: e.to_string(),
    })?;
    Ok(IntakeReceipt {
        duplicate: true,
        ..receipt_of(&contact, stored.sequence)
    })
}

fn read_back_error(e: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("reading back the stored contact: {e}"))
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

/// How long callers should suggest waiting before a retry (`Retry-After`).
pub const RETRY_AFTER: Duration = Duration::from_secs(5);
