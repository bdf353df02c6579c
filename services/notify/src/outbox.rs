//! The OUTBOX stream: every notification, rendered, before it is sent.
//!
//! A notification is published once on its own subject
//! (`guichet.outbox.<kind>.<usager>.<reference>.<event>`) with
//! `Nats-Msg-Id` = `<kind>:<reference>:<event>` and
//! `Nats-Expected-Last-Subject-Sequence: 0`: re-reading ROUTED after a
//! crash, or long after, queues nothing twice. The stream takes the
//! storage and replicas of ROUTED, so it follows the topology settings.

use std::time::Duration;

use async_nats::jetstream::{
    self,
    context::PublishErrorKind,
    kv,
    message::PublishMessage,
    stream::{self, DiscardPolicy, RetentionPolicy},
};
use bytes::Bytes;
use guichet_core::{Bus, bus::subjects};
use serde::{Deserialize, Serialize};

use crate::NotifyError;

/// The bucket of the per-usager hourly counters.
pub const RATE_BUCKET: &str = "guichet_notify_rate";

/// How long OUTBOX keeps a notification (sent or not).
const OUTBOX_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

/// One message to send, as stored on OUTBOX (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// "acknowledgment".
    pub kind: String,
    pub reference: String,
    /// What happened to the request: "opened".
    pub event: String,
    pub usager_id: String,
    pub service: String,
    pub to: String,
    pub reply_to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// Our Message-ID, without angle brackets; the same on every attempt,
    /// so a message sent twice (see the delivery guarantee) threads as one.
    pub message_id: String,
    /// The usager's Message-ID (without brackets), when they wrote by e-mail.
    pub in_reply_to: String,
    pub references: Vec<String>,
    /// When the usager's contact was received (RFC 3339), for the
    /// receipt → 250 indicator.
    pub received_at: String,
}

impl Notification {
    pub fn msg_id(&self) -> String {
        format!("{}:{}:{}", self.kind, self.reference, self.event)
    }

    pub fn subject_on_outbox(&self) -> String {
        subjects::outbox(&self.kind, &self.usager_id, &self.reference, &self.event)
    }
}

/// Creates OUTBOX and the rate bucket when missing.
pub async fn ensure(bus: &Bus) -> Result<kv::Store, NotifyError> {
    let js = bus.jetstream();
    let mut routed = js
        .get_stream(subjects::ROUTED_STREAM)
        .await
        .map_err(|e| NotifyError::jetstream("opening ROUTED", e))?;
    let model = routed
        .info()
        .await
        .map_err(|e| NotifyError::jetstream("reading ROUTED", e))?
        .config
        .clone();
    js.get_or_create_stream(stream::Config {
        name: subjects::OUTBOX_STREAM.to_owned(),
        description: Some("guichet: notifications to the usagers, before and after sending".into()),
        subjects: vec![subjects::OUTBOX_ALL.to_owned()],
        retention: RetentionPolicy::Limits,
        storage: model.storage,
        num_replicas: model.num_replicas,
        duplicate_window: model.duplicate_window,
        max_age: OUTBOX_MAX_AGE,
        discard: DiscardPolicy::Old,
        allow_direct: true,
        ..Default::default()
    })
    .await
    .map_err(|e| NotifyError::jetstream("creating OUTBOX", e))?;
    if let Ok(store) = js.get_key_value(RATE_BUCKET).await {
        return Ok(store);
    }
    js.create_key_value(kv::Config {
        bucket: RATE_BUCKET.to_owned(),
        description: "guichet: notifications per usager and hour".into(),
        history: 1,
        max_age: Duration::from_secs(2 * 3600),
        storage: model.storage,
        num_replicas: model.num_replicas,
        ..Default::default()
    })
    .await
    .map_err(|e| NotifyError::jetstream(format!("creating the {RATE_BUCKET} bucket"), e))
}

/// Queues `notification`; `Ok(false)` when it was already queued.
pub async fn enqueue(
    js: &jetstream::Context,
    notification: &Notification,
    timeout: Duration,
) -> Result<bool, NotifyError> {
    let payload = serde_json::to_vec(notification).map_err(|e| NotifyError::Unusable(e.to_string()))?;
    let publish = PublishMessage::build()
        .message_id(notification.msg_id())
        .expected_last_subject_sequence(0)
        .payload(Bytes::from(payload));
    let sent = async {
        let ack = js.send_publish(notification.subject_on_outbox(), publish).await?;
        ack.await
    };
    match tokio::time::timeout(timeout, sent).await {
        Err(_) => Err(NotifyError::jetstream(
            "publishing to OUTBOX",
            format!("no PubAck within {timeout:?}"),
        )),
        Ok(Ok(ack)) => Ok(!ack.duplicate),
        Ok(Err(e)) if e.kind() == PublishErrorKind::WrongLastSequence => Ok(false),
        Ok(Err(e)) => Err(NotifyError::jetstream("publishing to OUTBOX", e)),
    }
}
