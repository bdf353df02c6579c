//! The indicator "receipt → accusé de réception": when the SMTP server
//! took the acknowledgment (`250`), notify records `notify_sent` on
//! EVENTS with `receipt_to_sent_seconds`; this folds the first one of each
//! request into its record (`acknowledged_at`,
//! `receipt_to_acknowledgment_seconds`), so the indicators read it with
//! the request.
//!
//! A durable consumer shared by every requests process, from the start of
//! the journal's `notify_sent` events: the fold keeps the first
//! acknowledgment and is revision-checked, so a redelivery or a copy sent
//! twice (notify's duplicate window) changes nothing.

use std::time::Duration;

use async_nats::jetstream::{
    AckKind, Message,
    consumer::{AckPolicy, DeliverPolicy, pull},
    kv::UpdateErrorKind,
};
use bytes::Bytes;
use futures::StreamExt;
use guichet_core::{Bus, Error, backoff::Backoff, bus::subjects};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::{RequestsError, store};

/// The durable consumer on EVENTS.
pub const CONSUMER: &str = "requests-acknowledgments";

/// What is read of a `notify_sent` event.
#[derive(Debug, Deserialize)]
struct Sent {
    notification: String,
    reference: String,
    /// RFC 3339, when notify recorded the `250`.
    at: String,
    receipt_to_sent_seconds: f64,
}

/// Folds one acknowledgment into its request; `false` when the request
/// is gone (erased) or already has one.
pub async fn fold(bus: &Bus, reference: &str, at: &str, seconds: f64) -> Result<bool, RequestsError> {
    let kv = &bus.stores().requests;
    for _ in 0..20 {
        let Some((mut record, revision)) = store::read(kv, reference).await? else {
            return Ok(false);
        };
        if !record.acknowledged_at.is_empty() {
            return Ok(false);
        }
        record.acknowledged_at = at.to_owned();
        record.receipt_to_acknowledgment_seconds = seconds.max(0.0);
        let value = serde_json::to_vec(&record).map_err(|e| RequestsError::Corrupt {
            key: guichet_core::request::request_key(&record.reference),
            reason: format!("encoding: {e}"),
        })?;
        match kv
            .update(
                guichet_core::request::request_key(&record.reference),
                Bytes::from(value),
                revision,
            )
            .await
        {
            Ok(_) => return Ok(true),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => continue,
            Err(e) => {
                return Err(RequestsError::Core(Error::Unavailable(format!(
                    "writing the acknowledgment of {reference}: {e}"
                ))));
            }
        }
    }
    Err(RequestsError::Core(Error::Unavailable(format!(
        "the record of {reference} kept changing; will retry"
    ))))
}

async fn handle(bus: &Bus, message: &Message) {
    let sent: Sent = match serde_json::from_slice(&message.payload) {
        Ok(sent) => sent,
        Err(e) => {
            tracing::warn!(error = %e, "a notify_sent event without the expected fields; skipped");
            let _ = message.ack_with(AckKind::Term).await;
            return;
        }
    };
    if sent.notification != "acknowledgment" {
        let _ = message.ack().await;
        return;
    }
    match fold(bus, &sent.reference, &sent.at, sent.receipt_to_sent_seconds).await {
        Ok(folded) => {
            if folded {
                metrics::histogram!("guichet_requests_receipt_to_acknowledgment_seconds")
                    .record(sent.receipt_to_sent_seconds);
            }
            let _ = message.ack().await;
        }
        Err(e) => {
            tracing::warn!(reference = %sent.reference, error = %e, "folding an acknowledgment failed; will retry");
            let _ = message.ack_with(AckKind::Nak(Some(Duration::from_secs(5)))).await;
        }
    }
}

async fn consume(bus: &Bus, shutdown: &CancellationToken) -> Result<(), String> {
    let consumer = bus
        .jetstream()
        .get_stream(subjects::EVENTS_STREAM)
        .await
        .map_err(|e| e.to_string())?
        .create_consumer(pull::Config {
            durable_name: Some(CONSUMER.into()),
            description: Some("guichet: requests, the acknowledgment's time on the request".into()),
            filter_subject: subjects::event("notify_sent"),
            ack_policy: AckPolicy::Explicit,
            deliver_policy: DeliverPolicy::All,
            ack_wait: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    loop {
        let next = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            next = messages.next() => next,
        };
        match next {
            Some(Ok(message)) => handle(bus, &message).await,
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("the message stream ended".into()),
        }
    }
}

/// Folds acknowledgments until `shutdown`; reconnects with backoff.
pub async fn run(bus: Bus, shutdown: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    while !shutdown.is_cancelled() {
        if let Err(e) = consume(&bus, &shutdown).await {
            let delay = backoff.next_delay();
            tracing::warn!(error = %e, retry_in = ?delay, "reading notify_sent events failed; retrying");
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }
}
