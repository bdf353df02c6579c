//! The operators' dead-letter workflow: list what the router gave up on,
//! look at one, replay it once the cause is fixed, or discard it.
//!
//! A dead letter's id is its sequence in DEADLETTER. Replaying or
//! discarding one records an event (`guichet.events.deadletter.replayed`,
//! `…discarded`: who, why, when, ids only) and then removes it from
//! DEADLETTER, so that what is left there is what is pending.
//!
//! Replay is safe to repeat: the contact goes back to its INTAKE subject
//! under the replay id `deadletter-replay-<id>` (JetStream drops a second
//! copy within the duplicate window), and after the window the router's
//! contact index recognizes a contact it routed already. A replay that
//! died between its steps can thus be run again.

use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use guichet_core::{
    Bus,
    bus::subjects,
    proto::{
        self,
        v1::{Channel, Contact, DeadLetter},
    },
};
use prost::Message as _;
use serde_json::json;

use crate::{RouterError, streams::read_stored};

/// The origins whose dead letters can be replayed: those that came from
/// INTAKE and go back there.
pub const REPLAYABLE_ORIGINS: &[&str] = &["router"];

/// The longest `--reason` kept with a discard.
pub const MAX_REASON_CHARS: usize = 500;

/// A dead letter still in DEADLETTER.
#[derive(Debug, Clone)]
pub struct Pending {
    /// Its sequence in DEADLETTER: the id operators use.
    pub id: u64,
    /// The service that gave up (`guichet.deadletter.<origin>`).
    pub origin: String,
    pub letter: DeadLetter,
}

impl Pending {
    /// When it was given up on.
    pub fn failed_at(&self) -> Option<DateTime<Utc>> {
        self.letter.failed_at.as_ref().and_then(proto::to_datetime)
    }

    /// What an operator needs of the contact, without its content: id,
    /// channel, source and reception time. `None` when the payload is not
    /// a contact (or was omitted as too large).
    pub fn contact(&self) -> Option<ContactSummary> {
        let contact = Contact::decode(self.letter.payload.as_slice()).ok()?;
        Some(ContactSummary::of(&contact))
    }
}

/// A contact as the dead-letter commands show it: no claims, no subject,
/// no body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactSummary {
    pub id: String,
    pub channel: String,
    pub source: String,
    pub received_at: String,
}

impl ContactSummary {
    fn of(contact: &Contact) -> Self {
        Self {
            id: contact.id.clone(),
            channel: Channel::try_from(contact.channel)
                .unwrap_or(Channel::Unspecified)
                .token()
                .to_owned(),
            source: contact.source.as_ref().map(|s| s.name.clone()).unwrap_or_default(),
            received_at: crate::admin::rfc3339(contact.received_at.as_ref()),
        }
    }
}

/// What a replay did.
#[derive(Debug, Clone)]
pub struct Replayed {
    pub id: u64,
    pub contact_id: String,
    /// Where the contact went back: its INTAKE subject and new sequence.
    pub subject: String,
    pub intake_sequence: u64,
    /// JetStream had it already (a replay run twice within the window).
    pub duplicate: bool,
}

/// The origin token of a dead letter's subject.
fn origin_of(subject: &str) -> String {
    subject
        .strip_prefix(subjects::deadletter("").as_str())
        .unwrap_or(subject)
        .to_owned()
}

fn check_origin(origin: &str) -> Result<(), RouterError> {
    if subjects::is_token(origin) {
        Ok(())
    } else {
        Err(RouterError::Invalid(format!(
            "--origin `{}` is not a service name (letters, digits, - and _ only), e.g. `router`",
            origin.escape_default()
        )))
    }
}

/// The pending dead letters, oldest first, of one origin or all.
pub async fn list(bus: &Bus, origin: Option<&str>) -> Result<Vec<Pending>, RouterError> {
    let filter = match origin {
        Some(origin) => {
            check_origin(origin)?;
            subjects::deadletter(origin)
        }
        None => subjects::DEADLETTER_ALL.to_owned(),
    };
    let mut out = Vec::new();
    for stored in read_stored(bus, subjects::DEADLETTER_STREAM, &filter).await? {
        match DeadLetter::decode(stored.payload) {
            Ok(letter) => out.push(Pending {
                id: stored.sequence,
                origin: origin_of(&stored.subject),
                letter,
            }),
            Err(e) => {
                tracing::warn!(sequence = stored.sequence, error = %e, "a message in DEADLETTER is not a DeadLetter")
            }
        }
    }
    Ok(out)
}

/// One pending dead letter; a clear error if it is not (any more).
pub async fn get(bus: &Bus, id: u64) -> Result<Pending, RouterError> {
    if id == 0 {
        return Err(RouterError::Invalid(
            "dead letter ids start at 1: take one from `guichet deadletter list`".into(),
        ));
    }
    let stream = deadletter_stream(bus).await?;
    let message = match stream.direct_get(id).await {
        Ok(message) => message,
        Err(e) if e.kind() == async_nats::jetstream::stream::DirectGetErrorKind::NotFound => {
            return Err(not_pending(bus, id).await);
        }
        Err(e) => return Err(RouterError::jetstream(format!("reading dead letter {id}"), e)),
    };
    let letter = DeadLetter::decode(message.payload)
        .map_err(|e| RouterError::Invalid(format!("DEADLETTER sequence {id} is not a dead letter: {e}")))?;
    Ok(Pending {
        id,
        origin: origin_of(message.subject.as_str()),
        letter,
    })
}

/// Why `id` is not pending: replayed, discarded, or never was.
async fn not_pending(bus: &Bus, id: u64) -> RouterError {
    let events = read_stored(bus, subjects::EVENTS_STREAM, &subjects::event("deadletter.>"))
        .await
        .unwrap_or_default();
    let resolved = events.iter().rev().find_map(|e| {
        let event: serde_json::Value = serde_json::from_slice(&e.payload).ok()?;
        (event["deadletter_id"].as_u64() == Some(id)).then_some(event)
    });
    match resolved {
        Some(event) => RouterError::NotFound(format!(
            "dead letter {id} is no longer pending: {} by {} at {}",
            event["action"].as_str().unwrap_or("resolved"),
            event["by"].as_str().unwrap_or("?"),
            event["at"].as_str().unwrap_or("?"),
        )),
        None => RouterError::NotFound(format!(
            "no dead letter {id} (the id is the first column of `guichet deadletter list`; past topology.deadletter_max_age they are gone)"
        )),
    }
}

async fn deadletter_stream(bus: &Bus) -> Result<async_nats::jetstream::stream::Stream<()>, RouterError> {
    bus.jetstream()
        .get_stream_no_info(subjects::DEADLETTER_STREAM)
        .await
        .map_err(|e| RouterError::jetstream("opening DEADLETTER", e))
}

/// Sends dead letter `id` back to where it failed, records the replay and
/// removes it from the pending ones. `by` names the operator.
pub async fn replay(bus: &Bus, id: u64, by: &str) -> Result<Replayed, RouterError> {
    let pending = get(bus, id).await?;
    let replayed = resend(bus, &pending).await?;
    let event = json!({
        "action": "replayed",
        "deadletter_id": id,
        "origin": pending.origin,
        "contact_id": replayed.contact_id,
        "original_stream": pending.letter.original_stream,
        "original_sequence": pending.letter.original_sequence,
        "intake_sequence": replayed.intake_sequence,
        "by": by,
        "at": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    });
    resolve(bus, id, "replayed", event).await?;
    tracing::info!(deadletter_id = id, contact_id = %replayed.contact_id, "dead letter replayed");
    Ok(replayed)
}

/// Every pending replayable dead letter (of `origin`, or of every
/// replayable origin), one by one: a failure is reported with its id and
/// does not stop the others.
pub async fn replay_all(
    bus: &Bus,
    origin: Option<&str>,
    by: &str,
) -> Result<Vec<(u64, Result<Replayed, RouterError>)>, RouterError> {
    let mut out = Vec::new();
    for pending in list(bus, origin).await? {
        if !REPLAYABLE_ORIGINS.contains(&pending.origin.as_str()) || pending.letter.undecodable {
            continue;
        }
        out.push((pending.id, replay(bus, pending.id, by).await));
    }
    Ok(out)
}

/// The first step of a replay: publishes the contact again on its INTAKE
/// subject under the replay id. Safe to repeat (see the module doc).
pub async fn resend(bus: &Bus, pending: &Pending) -> Result<Replayed, RouterError> {
    let id = pending.id;
    let letter = &pending.letter;
    if !REPLAYABLE_ORIGINS.contains(&pending.origin.as_str()) || letter.original_stream != subjects::INTAKE_STREAM {
        return Err(RouterError::Invalid(format!(
            "dead letter {id} (origin `{}`, from stream {}) cannot be replayed: only the router's dead letters of INTAKE go back; discard it with a --reason once handled",
            pending.origin, letter.original_stream
        )));
    }
    if letter.undecodable {
        return Err(RouterError::Invalid(format!(
            "dead letter {id} failed on its content ({}): a replay would fail the same way; discard it with a --reason",
            letter.reason
        )));
    }
    let payload = if letter.payload.is_empty() {
        // Too large for DEADLETTER: INTAKE may still hold it.
        let intake = bus
            .jetstream()
            .get_stream_no_info(subjects::INTAKE_STREAM)
            .await
            .map_err(|e| RouterError::jetstream("opening INTAKE", e))?;
        intake
            .direct_get(letter.original_sequence)
            .await
            .map_err(|e| {
                RouterError::NotFound(format!(
                    "dead letter {id} has no payload and INTAKE no longer holds sequence {} ({e}): it cannot be replayed; discard it",
                    letter.original_sequence
                ))
            })?
            .payload
    } else {
        Bytes::from(letter.payload.clone())
    };
    let contact = Contact::decode(payload.clone())
        .map_err(|e| RouterError::Invalid(format!("dead letter {id} does not hold a contact ({e}); discard it")))?;
    if subjects::stream_of(&letter.original_subject) != Some(subjects::INTAKE_STREAM) {
        return Err(RouterError::Invalid(format!(
            "dead letter {id}: its original subject is not an INTAKE subject; discard it"
        )));
    }
    // The replay id, not the adapter's: the original is still in INTAKE's
    // duplicate window when a fix is quick, and would swallow the replay.
    let publish = PublishMessage::build()
        .message_id(format!("deadletter-replay-{id}"))
        .payload(payload);
    let ack = bus
        .jetstream()
        .send_publish(letter.original_subject.clone(), publish)
        .await
        .map_err(|e| RouterError::jetstream(format!("replaying dead letter {id}"), e))?
        .await
        .map_err(|e| RouterError::jetstream(format!("replaying dead letter {id}"), e))?;
    Ok(Replayed {
        id,
        contact_id: contact.id,
        subject: letter.original_subject.clone(),
        intake_sequence: ack.sequence,
        duplicate: ack.duplicate,
    })
}

/// Discards dead letter `id` for `reason`, recorded with `by`.
pub async fn discard(bus: &Bus, id: u64, reason: &str, by: &str) -> Result<Pending, RouterError> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(RouterError::Invalid(
            "--reason is empty: say why this dead letter is discarded (it is recorded in guichet.events.deadletter.discarded)".into(),
        ));
    }
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(RouterError::Invalid(format!(
            "--reason is longer than {MAX_REASON_CHARS} characters: keep it short, and without personal data"
        )));
    }
    let pending = get(bus, id).await?;
    let event = json!({
        "action": "discarded",
        "deadletter_id": id,
        "origin": pending.origin,
        "contact_id": pending.contact().map(|c| c.id).unwrap_or_default(),
        "original_stream": pending.letter.original_stream,
        "original_sequence": pending.letter.original_sequence,
        "reason": reason,
        "by": by,
        "at": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    });
    resolve(bus, id, "discarded", event).await?;
    tracing::info!(deadletter_id = id, "dead letter discarded");
    Ok(pending)
}

/// Records the event, then removes the dead letter. The event's msg id is
/// per dead letter and action, so a retried resolution records it once.
async fn resolve(bus: &Bus, id: u64, action: &str, event: serde_json::Value) -> Result<(), RouterError> {
    bus.publish(
        subjects::event(&format!("deadletter.{action}")),
        &format!("deadletter-{action}-{id}"),
        Bytes::from(event.to_string()),
    )
    .await?;
    match deadletter_stream(bus).await?.delete_message(id).await {
        Ok(_) => Ok(()),
        // Resolved meanwhile by another run of the same command.
        Err(e) if e.to_string().contains("no message found") => Ok(()),
        Err(e) => Err(RouterError::jetstream(format!("removing dead letter {id}"), e)),
    }
}
