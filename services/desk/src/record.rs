//! `RecordContact`: validate, store the attachments, publish the contact
//! (exactly once per `client_request_id`), and optionally wait for the
//! router's decision.

use std::time::Duration;

use chrono::{SubsecRound, Utc};
use futures::StreamExt;
use guichet_core::{
    bus::{IntakeReceipt, subjects},
    identity::{normalize_email, normalize_phone},
    ids,
    proto::{
        self,
        v1::{
            AttachmentRef, CallDirection, Channel, Contact, Decision, DeskAttachment, IdentityClaims,
            RecordContactRequest, RecordContactResponse, RoutingStatus, Source, contact, record_contact_request,
        },
    },
};
use prost::Message;
use tokio::time::Instant;
use tonic::Status;

use crate::{
    auth::Site,
    server::State,
    status::{Violations, bus_status, printable},
};

/// Longest `client_request_id`, `agent_id`.
pub(crate) const MAX_ID_LEN: usize = 128;
/// Longest subject, in characters.
const MAX_SUBJECT_CHARS: usize = 300;
/// Largest notes, in bytes.
const MAX_NOTES_BYTES: usize = 64 * 1024;
/// Most attachments on one contact.
const MAX_ATTACHMENTS: usize = 16;
/// Kept between the end of the routing wait and the caller's deadline, so
/// the answer arrives before the deadline.
const DEADLINE_MARGIN: Duration = Duration::from_millis(150);

/// What the validation kept: the parts of the request that go on the bus.
struct Valid {
    channel: Channel,
    client_request_id: String,
    subject: String,
    wait: Option<Duration>,
}

/// Records one contact. `deadline` is the caller's, from `grpc-timeout`.
pub async fn record(
    state: &State,
    site: &Site,
    request: RecordContactRequest,
    deadline: Option<Instant>,
) -> Result<RecordContactResponse, Status> {
    crate::auth::check_site(site, &request.site)?;
    let valid = validate(state, &request)?;
    let bus = &state.bus;
    if !bus.is_connected() {
        return Err(bus_status(
            &guichet_core::Error::Unavailable("not connected".into()),
            "recording the contact",
        ));
    }
    // Per site and channel: the channel is part of the intake subject that
    // makes JetStream refuse a second copy.
    let idempotency_key = format!("desk:{}:{}:{}", site.0, valid.channel.token(), valid.client_request_id);

    // With attachments, a retry is answered before uploading them again.
    if !request.attachments.is_empty()
        && let Some(receipt) = within(deadline, bus.already_received(valid.channel, &idempotency_key))
            .await?
            .map_err(|e| bus_status(&e, "recording the contact"))?
    {
        let receipt = IntakeReceipt {
            duplicate: true,
            ..receipt
        };
        return answer(state, receipt, None, valid.wait, deadline).await;
    }

    let mut attachments = Vec::with_capacity(request.attachments.len());
    for a in &request.attachments {
        attachments.push(store_attachment(state, a, deadline).await?);
    }

    // Millisecond precision: a retry's receipt (RFC 3339, ms) says the same.
    let now = Utc::now().trunc_subsecs(3);
    let contact = Contact {
        id: ids::contact_id(),
        received_at: Some(proto::timestamp(now)),
        channel: valid.channel as i32,
        source: Some(Source {
            name: site.0.clone(),
            agent_id: request.agent_id.trim().to_owned(),
            adapter_instance: state.instance.clone(),
        }),
        claims: request.usager.map(trim_claims),
        subject: valid.subject,
        body: request.notes,
        language: request.language.trim().to_owned(),
        reference: ids::reference(now),
        idempotency_key,
        details: request.details.map(|d| match d {
            record_contact_request::Details::Call(c) => contact::Details::Call(c),
            record_contact_request::Details::Counter(c) => contact::Details::Counter(c),
            record_contact_request::Details::Postal(p) => contact::Details::Postal(p),
        }),
        attachments,
        flags: Vec::new(),
    };

    // Subscribe before publishing: the decision cannot come before the
    // subscription reaches the server (same connection, in order).
    let subscription = match valid.wait {
        Some(_) => Some(subscribe(state, &contact.id).await?),
        None => None,
    };
    let receipt = within(deadline, bus.publish_contact(&contact))
        .await?
        .map_err(|e| bus_status(&e, "recording the contact"))?;
    tracing::info!(
        contact_id = %receipt.contact_id,
        reference = %receipt.reference,
        site = %site.0,
        channel = valid.channel.token(),
        attachments = contact.attachments.len(),
        duplicate = receipt.duplicate,
        "contact recorded"
    );
    // A retry answers for the first contact: the subscription was for ours.
    let subscription = if receipt.duplicate { None } else { subscription };
    answer(state, receipt, subscription, valid.wait, deadline).await
}

/// Runs `f` within the caller's deadline, or DEADLINE_EXCEEDED.
async fn within<T>(deadline: Option<Instant>, f: impl Future<Output = T>) -> Result<T, Status> {
    match deadline {
        None => Ok(f.await),
        Some(at) => tokio::time::timeout_at(at, f).await.map_err(|_| {
            Status::deadline_exceeded(
                "the deadline passed before the message broker answered; retry with the same client_request_id",
            )
        }),
    }
}

async fn subscribe(state: &State, contact_id: &str) -> Result<async_nats::Subscriber, Status> {
    state
        .bus
        .client()
        .subscribe(subjects::decided(contact_id))
        .await
        .map_err(|e| bus_status(&guichet_core::Error::Unavailable(e.to_string()), "waiting for routing"))
}

/// The response for `receipt`, after the routing wait if one was asked.
async fn answer(
    state: &State,
    receipt: IntakeReceipt,
    subscription: Option<async_nats::Subscriber>,
    wait: Option<Duration>,
    deadline: Option<Instant>,
) -> Result<RecordContactResponse, Status> {
    let received_at = chrono::DateTime::parse_from_rfc3339(&receipt.received_at)
        .ok()
        .map(|t| proto::timestamp(t.with_timezone(&Utc)));
    let mut response = RecordContactResponse {
        contact_id: receipt.contact_id.clone(),
        reference: receipt.reference.clone(),
        received_at,
        duplicate: receipt.duplicate,
        routing_status: RoutingStatus::NotRequested as i32,
        decision: None,
    };
    let Some(wait) = wait else {
        return Ok(response);
    };
    let mut until = Instant::now() + wait;
    if let Some(deadline) = deadline {
        until = until.min(deadline.checked_sub(DEADLINE_MARGIN).unwrap_or(deadline));
    }
    let decision = match subscription {
        Some(subscription) => wait_for_decision(subscription, &receipt.contact_id, until).await,
        None => decision_for_retry(state, &receipt.contact_id, until).await?,
    };
    let outcome = if decision.is_some() { "decided" } else { "pending" };
    metrics::counter!("guichet_desk_routing_wait_total", "outcome" => outcome).increment(1);
    response.routing_status = match decision {
        Some(_) => RoutingStatus::Decided,
        None => RoutingStatus::Pending,
    } as i32;
    response.decision = decision;
    Ok(response)
}

/// A retry: the router may have decided long ago, and its event is gone.
/// Subscribe first, then read the routed index, so that a decision made
/// between the two is caught either way.
async fn decision_for_retry(state: &State, contact_id: &str, until: Instant) -> Result<Option<Decision>, Status> {
    let mut subscription = subscribe(state, contact_id).await?;
    match tokio::time::timeout_at(until, state.bus.routed_contact(contact_id)).await {
        Ok(Ok(Some(routed))) => {
            let _ = subscription.unsubscribe().await;
            return Ok(Some(guichet_core::bus::routing::decision_of(&routed)));
        }
        Ok(Ok(None)) => {}
        // The index is a shortcut: without it, wait for the event as usual.
        Ok(Err(e)) => {
            tracing::warn!(%contact_id, error = %e, "routed index not readable; waiting for the decision event")
        }
        Err(_) => {}
    }
    Ok(wait_for_decision(subscription, contact_id, until).await)
}

async fn wait_for_decision(
    mut subscription: async_nats::Subscriber,
    contact_id: &str,
    until: Instant,
) -> Option<Decision> {
    let found = tokio::time::timeout_at(until, async {
        while let Some(message) = subscription.next().await {
            match Decision::decode(message.payload) {
                Ok(d) if d.contact_id.is_empty() || d.contact_id == contact_id => return Some(d),
                Ok(_) => {}
                Err(e) => tracing::warn!(%contact_id, error = %e, "undecodable decision event ignored"),
            }
        }
        None
    })
    .await
    .ok()
    .flatten();
    // Dropping the subscriber unsubscribes; say so explicitly to free the
    // server side at once.
    let _ = subscription.unsubscribe().await;
    found
}

async fn store_attachment(
    state: &State,
    a: &DeskAttachment,
    deadline: Option<Instant>,
) -> Result<AttachmentRef, Status> {
    let media_type = if a.media_type.trim().is_empty() {
        "application/octet-stream"
    } else {
        a.media_type.trim()
    };
    let file_name = if a.file_name.trim().is_empty() {
        "attachment"
    } else {
        a.file_name.as_str()
    };
    within(deadline, state.bus.put_attachment(&a.content, file_name, media_type))
        .await?
        .map_err(|e| bus_status(&e, "storing an attachment"))
}

fn trim_claims(mut c: IdentityClaims) -> IdentityClaims {
    c.name = c.name.trim().to_owned();
    c.email = c.email.trim().to_owned();
    c.phone = c.phone.trim().to_owned();
    c
}

fn validate(state: &State, r: &RecordContactRequest) -> Result<Valid, Status> {
    let mut v = Violations::default();

    let crid = r.client_request_id.trim();
    if crid.is_empty() {
        v.add(
            "client_request_id",
            "required: an id of this request, reused on every retry (e.g. a UUID)",
        );
    } else if crid.len() > MAX_ID_LEN
        || !crid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    {
        v.add(
            "client_request_id",
            format!("1 to {MAX_ID_LEN} characters among letters, digits, '-', '_', '.', ':'"),
        );
    }

    let channel = match Channel::try_from(r.channel) {
        Ok(c @ (Channel::Counter | Channel::Phone | Channel::Postal)) => c,
        Ok(Channel::Unspecified) => {
            v.add("channel", "required: CHANNEL_COUNTER, CHANNEL_PHONE or CHANNEL_POSTAL");
            Channel::Unspecified
        }
        Ok(other) => {
            v.add(
                "channel",
                format!(
                    "{} contacts have their own adapter; desk records CHANNEL_COUNTER, CHANNEL_PHONE or CHANNEL_POSTAL",
                    other.as_str_name()
                ),
            );
            other
        }
        Err(_) => {
            v.add(
                "channel",
                format!(
                    "unknown channel {}; expected CHANNEL_COUNTER, CHANNEL_PHONE or CHANNEL_POSTAL",
                    r.channel
                ),
            );
            Channel::Unspecified
        }
    };

    let agent = r.agent_id.trim();
    if agent.is_empty() {
        v.add("agent_id", "required: the id of the agent who took the contact");
    } else if agent.len() > MAX_ID_LEN || agent.chars().any(char::is_control) {
        v.add(
            "agent_id",
            format!("at most {MAX_ID_LEN} characters, no control characters"),
        );
    }

    let subject = r.subject.trim();
    if subject.is_empty() {
        v.add("subject", "required: one line saying what the contact is about");
    } else if subject.chars().count() > MAX_SUBJECT_CHARS {
        v.add("subject", format!("at most {MAX_SUBJECT_CHARS} characters"));
    } else if subject.chars().any(char::is_control) {
        v.add("subject", "one line: no line breaks or control characters");
    }

    if r.notes.len() > MAX_NOTES_BYTES {
        v.add(
            "notes",
            format!(
                "{} bytes is over the limit of {MAX_NOTES_BYTES} bytes; attach long documents instead",
                r.notes.len()
            ),
        );
    }
    let language = r.language.trim();
    if language.len() > 35 || !language.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        v.add("language", "a BCP 47 tag such as \"fr\" or \"fr-FR\"");
    }

    if let Some(u) = &r.usager {
        validate_claims(u, &mut v);
    }

    match (&r.details, channel) {
        (None, _) => {}
        (Some(record_contact_request::Details::Call(c)), Channel::Phone) => {
            if CallDirection::try_from(c.direction).is_err() {
                v.add("call.direction", format!("unknown call direction {}", c.direction));
            }
            if c.line.len() > MAX_ID_LEN {
                v.add("call.line", format!("at most {MAX_ID_LEN} characters"));
            }
        }
        (Some(record_contact_request::Details::Counter(_)), Channel::Counter) => {}
        (Some(record_contact_request::Details::Postal(p)), Channel::Postal) => {
            if !p.dated.is_empty() && chrono::NaiveDate::parse_from_str(&p.dated, "%Y-%m-%d").is_err() {
                v.add("postal.dated", "a date as YYYY-MM-DD");
            }
            if p.registered_number.len() > 64 {
                v.add("postal.registered_number", "at most 64 characters");
            }
        }
        (Some(_), Channel::Unspecified | Channel::Email | Channel::Web) => {}
        (Some(d), _) => {
            let (field, fits) = match d {
                record_contact_request::Details::Call(_) => ("call", "CHANNEL_PHONE"),
                record_contact_request::Details::Counter(_) => ("counter", "CHANNEL_COUNTER"),
                record_contact_request::Details::Postal(_) => ("postal", "CHANNEL_POSTAL"),
            };
            v.add(field, format!("these details go with {fits} only"));
        }
    }

    if r.attachments.len() > MAX_ATTACHMENTS {
        v.add("attachments", format!("at most {MAX_ATTACHMENTS} attachments"));
    }
    let limit = state.config.max_attachment_size;
    for (i, a) in r.attachments.iter().enumerate() {
        if a.content.is_empty() {
            v.add(format!("attachments[{i}].content"), "empty file");
        } else if a.content.len() > limit {
            v.add(
                format!("attachments[{i}].content"),
                format!(
                    "{} bytes is over the limit of {limit} bytes (`desk.max_attachment_size`)",
                    a.content.len()
                ),
            );
        }
        if a.file_name.len() > 255 {
            v.add(format!("attachments[{i}].file_name"), "at most 255 bytes");
        }
        let mt = a.media_type.trim();
        if !mt.is_empty() && !is_media_type(mt) {
            v.add(
                format!("attachments[{i}].media_type"),
                "a media type such as \"application/pdf\"",
            );
        }
    }

    let wait = if r.wait_for_routing {
        match &r.routing_timeout {
            None => Some(state.config.wait_for_routing_timeout),
            Some(d) => {
                let max = state.config.wait_for_routing_max;
                match (u64::try_from(d.seconds), u32::try_from(d.nanos)) {
                    (Ok(s), Ok(n)) if n < 1_000_000_000 => {
                        let asked = Duration::new(s, n);
                        if asked > max {
                            v.add(
                                "routing_timeout",
                                format!("at most {max:?} (`desk.wait_for_routing_max`)"),
                            );
                        }
                        Some(asked)
                    }
                    _ => {
                        v.add("routing_timeout", "must not be negative");
                        None
                    }
                }
            }
        }
    } else {
        None
    };

    v.into_result()?;
    Ok(Valid {
        channel,
        client_request_id: crid.to_owned(),
        subject: subject.to_owned(),
        wait,
    })
}

fn validate_claims(u: &IdentityClaims, v: &mut Violations) {
    if u.name.chars().count() > 200 || u.name.chars().any(char::is_control) {
        v.add("usager.name", "at most 200 characters, one line");
    }
    if !u.email.trim().is_empty()
        && let Err(e) = normalize_email(&u.email)
    {
        v.add("usager.email", identity_reason(&e));
    }
    if !u.phone.trim().is_empty()
        && let Err(e) = normalize_phone(&u.phone)
    {
        v.add("usager.phone", identity_reason(&e));
    }
    if !u.account_id.is_empty() || !u.account_issuer.is_empty() {
        v.add(
            "usager.account_id",
            "desk cannot vouch for a verified account: leave account_id and account_issuer empty",
        );
    }
    if let Some(a) = &u.postal_address {
        if a.lines.len() > 10 || a.lines.iter().any(|l| l.chars().count() > 200) {
            v.add("usager.postal_address.lines", "at most 10 lines of 200 characters");
        }
        if a.postal_code.len() > 16 {
            v.add("usager.postal_address.postal_code", "at most 16 characters");
        }
        if a.city.chars().count() > 200 {
            v.add("usager.postal_address.city", "at most 200 characters");
        }
        if a.country.len() > 2 || !a.country.bytes().all(|b| b.is_ascii_alphabetic()) {
            v.add(
                "usager.postal_address.country",
                "an ISO 3166-1 alpha-2 code such as \"FR\", or empty",
            );
        }
    }
}

/// The normalizer's reason, without echoing the value.
fn identity_reason(e: &guichet_core::Error) -> String {
    printable(&e.identity_reason(), 200)
}

fn is_media_type(s: &str) -> bool {
    let Some((top, sub)) = s.split(';').next().unwrap_or_default().trim().split_once('/') else {
        return false;
    };
    let token = |t: &str| {
        !t.is_empty()
            && t.len() <= 127
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    token(top) && token(sub)
}

#[cfg(test)]
mod tests {
    use guichet_core::proto::v1::{GetUsagerHistoryRequest, RecordContactRequest, get_usager_history_request::Usager};

    /// The proto3 JSON of the grpcurl examples of docs/desk.md is valid.
    #[test]
    fn readme_json_examples_parse() {
        let r: RecordContactRequest = serde_json::from_str(
            r#"{
  "clientRequestId": "visit-0001", "channel": "CHANNEL_COUNTER", "site": "accueil-dev",
  "agentId": "agent-42", "subject": "Renouvellement de carte d identité",
  "usager": {"name": "Jeanne Martin", "phone": "06 12 34 56 78"},
  "counter": {"waitSeconds": 240, "serviceSeconds": 600}, "waitForRouting": true
}"#,
        )
        .unwrap();
        assert_eq!(r.channel, super::Channel::Counter as i32);
        assert!(r.wait_for_routing && r.details.is_some());
        let h: GetUsagerHistoryRequest = serde_json::from_str(
            r#"{"site": "accueil-dev", "phone": "0612345678", "pageSize": 20, "agentId": "agent-42"}"#,
        )
        .unwrap();
        assert_eq!(h.usager, Some(Usager::Phone("0612345678".into())));
        assert_eq!((h.page_size, h.agent_id.as_str()), (20, "agent-42"));
    }

    #[test]
    fn media_types() {
        assert!(super::is_media_type("application/pdf"));
        assert!(super::is_media_type("image/svg+xml; charset=utf-8"));
        assert!(!super::is_media_type("pdf"));
        assert!(!super::is_media_type("a/b c"));
    }
}
