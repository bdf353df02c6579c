//! `RecordContact`: validate, store the attachments, publish the contact
//! (exactly once per `client_request_id`), and optionally wait for the
//! router's decision.

use std::time::Duration;

use chrono::{SubsecRound, Utc};
use futures::StreamExt;
use guichet_core::{
    bus::{IntakeReceipt, subjects},
    ids,
    proto::{
        self,
        v1::{
            AttachmentRef, Contact, Decision, DeskAttachment, IdentityClaims, IdentityLevel, RecordContactRequest,
            RecordContactResponse, RoutingStatus, Source, contact, record_contact_request,
        },
    },
};
use prost::Message;
use tokio::time::Instant;
use tonic::Status;

use crate::{auth::Site, state::State, status::bus_status, validate};

/// Kept between the end of the routing wait and the caller's deadline, so
/// the answer arrives before the deadline: at least this, and a tenth of
/// the time the caller gave (a loaded host or network needs more than a
/// fixed 150 ms to carry the answer back before a long deadline).
const DEADLINE_MARGIN: Duration = Duration::from_millis(150);

/// Records one contact. `deadline` is the caller's, from `grpc-timeout`.
pub async fn record(
    state: &State,
    site: &Site,
    request: RecordContactRequest,
    deadline: Option<Instant>,
) -> Result<RecordContactResponse, Status> {
    let started = Instant::now();
    crate::auth::check_site(site, &request.site)?;
    let valid = validate::record_request(&state.config, &request)?;
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
        && let Some(receipt) = before_deadline(deadline, bus.already_received(valid.channel, &idempotency_key))
            .await?
            .map_err(|e| bus_status(&e, "recording the contact"))?
    {
        let receipt = IntakeReceipt {
            duplicate: true,
            ..receipt
        };
        return respond_after_routing_wait(state, receipt, None, valid.wait, deadline, started).await;
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
        claims: request
            .usager
            .map(|claims| site_claims(claims, state.config.sites.get(&site.0))),
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
    let receipt = before_deadline(deadline, bus.publish_contact(&contact))
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
    respond_after_routing_wait(state, receipt, subscription, valid.wait, deadline, started).await
}

/// Runs `f` within the caller's deadline, or DEADLINE_EXCEEDED.
async fn before_deadline<T>(deadline: Option<Instant>, f: impl Future<Output = T>) -> Result<T, Status> {
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
async fn respond_after_routing_wait(
    state: &State,
    receipt: IntakeReceipt,
    subscription: Option<async_nats::Subscriber>,
    wait: Option<Duration>,
    deadline: Option<Instant>,
    started: Instant,
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
        let margin = DEADLINE_MARGIN.max(deadline.saturating_duration_since(started) / 10);
        until = until.min(deadline.checked_sub(margin).unwrap_or(deadline));
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
    before_deadline(deadline, state.bus.put_attachment(&a.content, file_name, media_type))
        .await?
        .map_err(|e| bus_status(&e, "storing an attachment"))
}

/// The claims as recorded: trimmed, at the level the site's
/// configuration gives (the caller's levels are not trusted).
fn site_claims(mut c: IdentityClaims, site: Option<&crate::SiteConfig>) -> IdentityClaims {
    c.name = c.name.trim().to_owned();
    c.email = c.email.trim().to_owned();
    c.phone = c.phone.trim().to_owned();
    let level = if site.is_some_and(|s| s.checks_identity_documents) {
        IdentityLevel::Verified
    } else {
        IdentityLevel::Declared
    } as i32;
    c.email_level = level;
    c.phone_level = level;
    c.account_level = level;
    c
}
