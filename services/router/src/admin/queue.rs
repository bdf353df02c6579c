//! `guichet queue`: what a back-office sees in its service's queue.

use std::time::Duration;

use async_nats::jetstream::AckKind;
use futures::StreamExt;
use guichet_core::{
    Bus,
    bus::subjects::{self, is_token},
    proto::v1::Routed,
};
use prost::Message;

use crate::{RouterError, dispatch::queue_consumer};

/// What a back-office sees in its queue.
#[derive(Debug, Clone)]
pub struct QueueView {
    pub service: String,
    /// Messages not yet delivered to the back-office.
    pub pending: u64,
    /// Delivered, not yet acknowledged.
    pub unacknowledged: usize,
    pub items: Vec<Routed>,
}

/// Pulls up to `max` messages from a service's queue; acknowledges them
/// only when `ack` (otherwise they go back to the queue at once).
pub async fn pull_queue(bus: &Bus, service: &str, max: usize, ack: bool) -> Result<QueueView, RouterError> {
    if !is_token(service) {
        return Err(RouterError::Invalid(format!(
            "`{}` is not a service name (letters, digits, - and _ only)",
            service.escape_default()
        )));
    }
    let stream = bus
        .jetstream()
        .get_stream(subjects::ROUTED_STREAM)
        .await
        .map_err(|e| RouterError::jetstream("opening ROUTED", e))?;
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = stream
        .get_consumer(&queue_consumer(service))
        .await
        .map_err(|_| {
            RouterError::NotFound(format!(
                "no queue for service `{service}`: routers create one per service of the active rules (see `guichet rules history`)"
            ))
        })?;
    let mut items = Vec::new();
    if max > 0 {
        let mut batch = consumer
            .fetch()
            .max_messages(max)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .map_err(|e| RouterError::jetstream(format!("pulling the queue of {service}"), e))?;
        while let Some(message) = batch.next().await {
            let message = message.map_err(|e| RouterError::jetstream(format!("pulling the queue of {service}"), e))?;
            match Routed::decode(message.payload.clone()) {
                Ok(routed) => items.push(routed),
                Err(e) => tracing::warn!(error = %e, "a message in the queue is not a Routed"),
            }
            let kind = if ack { AckKind::Ack } else { AckKind::Nak(None) };
            message
                .ack_with(kind)
                .await
                .map_err(|e| RouterError::jetstream("acknowledging", e))?;
        }
    }
    let info = consumer
        .info()
        .await
        .map_err(|e| RouterError::jetstream(format!("reading the queue of {service}"), e))?;
    Ok(QueueView {
        service: service.to_owned(),
        pending: info.num_pending,
        unacknowledged: info.num_ack_pending,
        items,
    })
}
