//! The pull loop both of notify's consumers share: bounded concurrency,
//! stop fetching on shutdown, finish what is in hand.

use std::{future::Future, time::Duration};

use async_nats::jetstream::{
    AckKind, Message,
    consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull},
};
use bytes::Bytes;
use chrono::Utc;
use futures::{StreamExt, stream::FuturesUnordered};
use guichet_core::{
    Bus,
    bus::subjects,
    proto::{self, v1::DeadLetter},
};
use prost::Message as _;
use tokio_util::sync::CancellationToken;

use crate::NotifyError;

/// A durable consumer of the messages published from now on (turning
/// notify on does not go through a whole journal), acked one by one.
pub fn new_messages(name: &str, description: &str, filter_subjects: Vec<String>, max_deliveries: u32) -> pull::Config {
    pull::Config {
        durable_name: Some(name.to_owned()),
        description: Some(description.to_owned()),
        filter_subjects,
        ack_policy: AckPolicy::Explicit,
        deliver_policy: DeliverPolicy::New,
        ack_wait: Duration::from_secs(60),
        max_deliver: i64::from(max_deliveries) + 1,
        max_ack_pending: 10_000,
        ..Default::default()
    }
}

/// Creates a durable consumer, or brings an existing one to `config`.
pub async fn ensure(bus: &Bus, stream: &str, config: pull::Config) -> Result<PullConsumer, NotifyError> {
    let name = config.durable_name.clone().unwrap_or_default();
    bus.jetstream()
        .get_stream(stream)
        .await
        .map_err(|e| NotifyError::jetstream(format!("opening {stream}"), e))?
        .create_consumer(config)
        .await
        .map_err(|e| NotifyError::jetstream(format!("creating the consumer `{name}` on {stream}"), e))
}

/// Pulls until `shutdown`, at most `concurrency` messages in hand.
pub async fn run<F, Fut>(
    consumer: &PullConsumer,
    what: &str,
    concurrency: usize,
    shutdown: &CancellationToken,
    handle: F,
) -> Result<(), NotifyError>
where
    F: Fn(Message) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(concurrency.max(1))
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
        .map_err(|e| NotifyError::jetstream(format!("pulling from {what}"), e))?;
    let mut in_flight = FuturesUnordered::new();
    let mut errors_in_a_row = 0u32;
    let outcome = loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break Ok(()),
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            next = messages.next(), if in_flight.len() < concurrency => match next {
                Some(Ok(message)) => {
                    errors_in_a_row = 0;
                    in_flight.push(handle(message));
                }
                Some(Err(e)) => {
                    errors_in_a_row += 1;
                    tracing::warn!(error = %e, consumer = what, "pull failed; continuing");
                    if errors_in_a_row >= 20 {
                        break Err(NotifyError::jetstream(format!("pulling from {what}"), format!("{e} (20 failures in a row)")));
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => break Ok(()),
                        () = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                }
                None => break Err(NotifyError::jetstream(format!("pulling from {what}"), "the message stream ended")),
            },
        }
    };
    drop(messages);
    while in_flight.next().await.is_some() {}
    outcome
}

/// Exports a consumer's lag as `gauge`: messages not yet delivered plus
/// delivered and not yet acked, read from the server every 15 s (the same
/// shared figure from every process).
pub async fn report_lag(mut consumer: PullConsumer, gauge: &'static str, stop: CancellationToken) {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), consumer.info()).await {
            Ok(Ok(info)) => {
                let pending = info.num_pending.saturating_add(info.num_ack_pending as u64);
                metrics::gauge!(gauge).set(pending as f64);
            }
            Ok(Err(e)) => tracing::debug!(error = %e, gauge, "reading a consumer's lag failed"),
            Err(_) => tracing::debug!(gauge, "reading a consumer's lag timed out"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(15)) => {}
        }
    }
}

/// Copies a message that cannot be processed to `guichet.deadletter.notify`
/// with the reason, then terminates it; NAKs it when the copy fails.
pub async fn dead_letter(bus: &Bus, message: &Message, reason: String, undecodable: bool) {
    let (stream, sequence, deliveries) = message.info().map_or((String::new(), 0, 0), |i| {
        (
            i.stream.to_owned(),
            i.stream_sequence,
            u32::try_from(i.delivered).unwrap_or(u32::MAX),
        )
    });
    tracing::error!(stream = %stream, sequence, deliveries, reason = %reason, "notification sent to the dead-letter stream");
    let letter = DeadLetter {
        original_subject: message.subject.to_string(),
        original_stream: stream.clone(),
        original_sequence: sequence,
        payload: message.payload.to_vec(),
        reason,
        undecodable,
        deliveries,
        failed_at: Some(proto::timestamp(Utc::now())),
        failed_in: "notify".into(),
    };
    let published = bus
        .publish(
            subjects::deadletter("notify"),
            &format!("notify-{stream}-{sequence}"),
            Bytes::from(letter.encode_to_vec()),
        )
        .await;
    match published {
        Ok(_) => {
            if let Err(e) = message.ack_with(AckKind::Term).await {
                tracing::warn!(error = %e, "TERM failed; the dead letter is deduplicated if it comes back");
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "dead-letter copy not stored; will retry");
            let _ = message.ack_with(AckKind::Nak(Some(Duration::from_secs(5)))).await;
        }
    }
}
