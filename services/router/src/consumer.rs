//! Consuming INTAKE: a durable pull consumer shared by every router.
//!
//! Each contact is acked only after its `Routed` PubAck. A failed routing
//! is NAKed with the configured backoff; at the last allowed delivery it
//! is copied to `guichet.deadletter.router` with the reason and
//! terminated. A payload that is not a contact is dead-lettered and
//! terminated at once: retrying cannot help. The server's own limit is
//! one delivery more than the router's, so a contact whose last try died
//! with its router (crash, lost connection) is still dead-lettered.
//! Pulling itself, the consumer it pulls from and its recovery from
//! stalls, is [`crate::pull`].

use std::{panic::AssertUnwindSafe, time::Duration};

use async_nats::jetstream::{AckKind, Message, consumer::PullConsumer};
use bytes::Bytes;
use chrono::Utc;
use futures::{FutureExt, StreamExt, stream::FuturesUnordered};
use guichet_core::{
    Bus,
    bus::subjects,
    proto::{
        self,
        v1::{Contact, DeadLetter},
    },
};
use prost::Message as _;
use tokio_util::sync::CancellationToken;

use crate::{
    RouterConfig, RouterError,
    pull::Puller,
    route::{RouteOutcome, Router},
};

/// Pulls and routes until `shutdown`, then finishes the contacts in hand.
pub async fn consume(
    consumer: PullConsumer,
    router: Router,
    bus: Bus,
    config: RouterConfig,
    shutdown: CancellationToken,
    on_ready: impl FnOnce(),
) -> Result<(), RouterError> {
    let mut puller = Puller::open(bus.clone(), config.clone(), consumer).await?;
    on_ready();
    let lag_stop = shutdown.child_token();
    let lag_task = tokio::spawn(report_lag(puller.consumer(), lag_stop.clone()));
    let mut in_flight = FuturesUnordered::new();
    let outcome = loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break Ok(()),
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            next = puller.next(), if in_flight.len() < config.concurrency => match next {
                Ok(message) => in_flight.push(handle(&router, &bus, &config, message)),
                Err(e) => break Err(e),
            },
        }
    };
    // Stop fetching; finish what is in hand. Messages buffered but not
    // started are not acked: the server gives them to another router.
    drop(puller);
    while in_flight.next().await.is_some() {}
    lag_stop.cancel();
    let _ = lag_task.await;
    outcome
}

/// How often the router's lag is read from the server.
const LAG_EVERY: Duration = Duration::from_secs(15);

/// Exports the INTAKE consumer's lag, `guichet_router_pending`: contacts
/// not yet delivered to any router plus those delivered and not yet acked.
/// Read from the server (one consumer-info request every 15 s, whichever
/// router asks), so every router process reports the same shared figure.
async fn report_lag(mut consumer: PullConsumer, stop: CancellationToken) {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), consumer.info()).await {
            Ok(Ok(info)) => {
                let pending = info.num_pending.saturating_add(info.num_ack_pending as u64);
                metrics::gauge!("guichet_router_pending").set(pending as f64);
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "reading the INTAKE consumer's lag failed"),
            Err(_) => tracing::debug!("reading the INTAKE consumer's lag timed out"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(LAG_EVERY) => {}
        }
    }
}

async fn handle(router: &Router, bus: &Bus, config: &RouterConfig, message: Message) {
    let started = std::time::Instant::now();
    let (sequence, delivered) = match message.info() {
        Ok(info) => (info.stream_sequence, u32::try_from(info.delivered).unwrap_or(u32::MAX)),
        Err(e) => {
            tracing::warn!(error = %e, "a message without JetStream metadata; ignored");
            return;
        }
    };
    let subject = message.subject.to_string();
    let dead_letter_of = |reason: String, undecodable: bool| DeadLetter {
        original_subject: subject.clone(),
        original_stream: subjects::INTAKE_STREAM.to_owned(),
        original_sequence: sequence,
        payload: message.payload.to_vec(),
        reason,
        undecodable,
        deliveries: delivered,
        failed_at: Some(proto::timestamp(Utc::now())),
        failed_in: "router".into(),
    };
    if delivered > config.max_deliveries {
        let reason = format!(
            "gave up after {} deliveries: the last one did not finish (router crash, lost connection or timeout after {:?})",
            config.max_deliveries, config.ack_wait
        );
        dead_letter(bus, &message, dead_letter_of(reason, false)).await;
        return;
    }
    let contact = match Contact::decode(message.payload.clone()) {
        Ok(contact) => contact,
        Err(e) => {
            let reason = format!("not a guichet.v1.Contact: {e}");
            dead_letter(bus, &message, dead_letter_of(reason, true)).await;
            return;
        }
    };
    // A panic while routing one contact is that contact's failure, not
    // the router's: unwinding out of here would take down every contact
    // in flight and restart the service.
    let routed = AssertUnwindSafe(router.route_delivery(&contact, delivered <= 1))
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| Err(RouterError::Panicked(panic_message(panic.as_ref()))));
    match routed {
        Ok(outcome) => {
            let label = match &outcome {
                RouteOutcome::Routed { published, .. } if published.duplicate => "duplicate",
                RouteOutcome::Routed { .. } => "routed",
                RouteOutcome::AlreadyRouted(_) => "already_routed",
            };
            metrics::counter!("guichet_router_contacts_total", "outcome" => label).increment(1);
            metrics::histogram!("guichet_router_route_seconds").record(started.elapsed().as_secs_f64());
            if let Err(e) = message.ack().await {
                tracing::warn!(contact_id = %contact.id, error = %e, "ack failed; the contact will come back and be recognized");
            }
        }
        Err(e @ RouterError::Contact { .. }) => {
            dead_letter(bus, &message, dead_letter_of(format!("not routable: {e}"), true)).await;
        }
        Err(e) if delivered >= config.max_deliveries => {
            let reason = format!(
                "routing failed {delivered} times; last error: {e}{}",
                if e.is_transient() {
                    " (transient: NATS was unavailable)"
                } else {
                    ""
                }
            );
            dead_letter(bus, &message, dead_letter_of(reason, false)).await;
        }
        Err(e) => {
            let delay = config.backoff_after(delivered);
            metrics::counter!("guichet_router_contacts_total", "outcome" => "retried").increment(1);
            tracing::warn!(contact_id = %contact.id, delivered, retry_in = ?delay, error = %e, "routing failed; will retry");
            if let Err(e) = message.ack_with(AckKind::Nak(Some(delay))).await {
                tracing::warn!(error = %e, "NAK failed; the server redelivers after ack_wait");
            }
        }
    }
}

/// The message a panic carried, when it is text.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Copies the message to the dead-letter stream, then terminates it. If
/// the copy is not stored, the message is NAKed instead: never dropped.
async fn dead_letter(bus: &Bus, message: &Message, mut letter: DeadLetter) {
    let msg_id = format!("router-{}-{}", letter.original_stream, letter.original_sequence);
    tracing::error!(
        subject = %letter.original_subject,
        sequence = letter.original_sequence,
        deliveries = letter.deliveries,
        reason = %letter.reason,
        "contact sent to the dead-letter stream"
    );
    let mut result = bus
        .publish(
            subjects::deadletter("router"),
            &msg_id,
            Bytes::from(letter.encode_to_vec()),
        )
        .await;
    if matches!(result, Err(ref e) if !e.is_transient()) {
        // Too large with its envelope: keep the reason, point at INTAKE.
        letter.payload.clear();
        letter.reason.push_str(&format!(
            " (payload omitted: too large for the dead-letter stream; it stays in {} at sequence {} until topology.intake_max_age)",
            letter.original_stream, letter.original_sequence
        ));
        result = bus
            .publish(
                subjects::deadletter("router"),
                &msg_id,
                Bytes::from(letter.encode_to_vec()),
            )
            .await;
    }
    match result {
        Ok(_) => {
            metrics::counter!("guichet_router_contacts_total", "outcome" => "dead_letter").increment(1);
            if let Err(e) = message.ack_with(AckKind::Term).await {
                tracing::warn!(error = %e, "TERM failed; the dead letter is deduplicated if it comes back");
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "dead-letter copy not stored; the contact will be retried");
            let _ = message.ack_with(AckKind::Nak(Some(Duration::from_secs(5)))).await;
        }
    }
}
