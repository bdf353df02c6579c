//! The journal: one `RequestEvent` per version of a request, on EVENTS
//! `guichet.events.request.<transition>.<reference>`.
//!
//! The record is written first (revision-checked), then its event is
//! published with `Nats-Msg-Id` = `<reference>:<version>`. If the process
//! dies between the two, or the publish fails, the event of the current
//! version is missing; [`ensure_published`] finds that out with one
//! direct get of the last message on the version's subject, and publishes
//! it. It runs before every transition (so the journal never skips a
//! version: the event of version n is stored before version n+1 is
//! written) and over every request at start (for a last version whose
//! event was lost).

use async_nats::jetstream::stream::{DirectGetErrorKind, Stream};
use guichet_core::{
    Bus, Error,
    bus::subjects,
    proto::v1::{RequestEvent, Routed},
    request::{RequestRecord, event_msg_id, event_subject},
};
use prost::Message;

/// Publishes the event of the record's current version (deduplicated by
/// its message id within the duplicate window).
pub async fn publish(bus: &Bus, record: &RequestRecord) -> Result<(), Error> {
    let event = record.event();
    bus.publish(
        event_subject(record.event_kind(), &record.reference),
        &event_msg_id(&record.reference, record.current_version()),
        event.encode_to_vec().into(),
    )
    .await
    .map(|_| ())
}

/// Whether the journal holds the event of the record's current version.
pub async fn is_published(events: &Stream, record: &RequestRecord) -> Result<bool, Error> {
    let subject = event_subject(record.event_kind(), &record.reference);
    match events.direct_get_last_for_subject(subject.as_str()).await {
        Ok(message) => Ok(RequestEvent::decode(message.payload)
            .map(|e| e.version >= record.current_version())
            .unwrap_or(false)),
        Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::Unavailable(format!("reading the request journal: {e}"))),
    }
}

/// Publishes the current version's event unless the journal has it (and,
/// for a TRANSFER, the `Routed` envelope the new service's queue needs
/// first). `true` when something was repaired.
pub async fn ensure_published(bus: &Bus, events: &Stream, record: &RequestRecord) -> Result<bool, Error> {
    if is_published(events, record).await? {
        return Ok(false);
    }
    if record.event_kind() == "transfer" {
        publish_transfer(bus, record).await?;
    }
    publish(bus, record).await?;
    metrics::counter!("guichet_requests_events_repaired_total").increment(1);
    tracing::info!(reference = %record.reference, version = record.current_version(), "published a missing request event");
    Ok(true)
}

/// The EVENTS stream handle (for direct gets).
pub async fn events_stream(bus: &Bus) -> Result<Stream, Error> {
    bus.jetstream()
        .get_stream(subjects::EVENTS_STREAM)
        .await
        .map_err(|e| Error::Unavailable(format!("opening stream {}: {e}", subjects::EVENTS_STREAM)))
}

/// Puts the request in its new service's queue: the `Routed` envelope of
/// its first contact, qualified with the new service, on
/// `guichet.routed.<service>.<usager>` with message id
/// `transfer:<reference>:<version>`.
pub async fn publish_transfer(bus: &Bus, record: &RequestRecord) -> Result<(), Error> {
    let mut routed = match bus.routed_contact(&record.opened_by).await? {
        Some(routed) => routed,
        // The first contact is gone from ROUTED (retention, erasure): the
        // queue still gets the request, without the contact.
        None => Routed {
            usager_id: record.usager_id.clone(),
            ..Default::default()
        },
    };
    routed.reference = record.reference.clone();
    let qualification = routed.qualification.get_or_insert_with(Default::default);
    qualification.service = record.service.clone();
    qualification.explanation.push(format!(
        "transferred to {} (version {})",
        record.service,
        record.current_version()
    ));
    routed.routed_at = Some(guichet_core::proto::timestamp(chrono::Utc::now()));
    bus.publish(
        subjects::routed(&record.service, &record.usager_id),
        &format!("transfer:{}:{}", record.reference, record.current_version()),
        routed.encode_to_vec().into(),
    )
    .await
    .map(|_| ())
}
