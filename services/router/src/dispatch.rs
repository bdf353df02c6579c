//! Dispatch: the service queues on ROUTED, and the journal of noise.
//!
//! A routed contact is published on `guichet.routed.<service>.<usager>`;
//! each service named by the active rules has a durable pull consumer
//! `queue-<service>` filtered on `guichet.routed.<service>.>`, which is
//! the queue its back-office pulls. Contacts a rule discards as noise are
//! journaled under the reserved service token [`NOISE`]
//! (`guichet.routed._noise.<usager>`): they stay in the usager's history
//! and in the audit trail, but no consumer exists for them, so they never
//! reach an agent. Copies of an e-mail already received (the same message
//! through another mailbox) are journaled the same way under [`COPIES`].

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use guichet_core::{Bus, bus::subjects};

use crate::RouterError;

/// The service token of discarded noise (no queue, journal only).
pub const NOISE: &str = "_noise";

/// The service token of copies of an e-mail already routed (journal only).
pub const COPIES: &str = "_copy";

/// The durable consumer name of a service's queue.
pub fn queue_consumer(service: &str) -> String {
    format!("queue-{service}")
}

/// The configuration of a service's queue consumer.
pub fn queue_config(service: &str) -> pull::Config {
    pull::Config {
        durable_name: Some(queue_consumer(service)),
        description: Some(format!("guichet: the queue of service {service}")),
        filter_subject: subjects::service_queue(service),
        ack_policy: AckPolicy::Explicit,
        deliver_policy: DeliverPolicy::All,
        ack_wait: Duration::from_secs(300),
        max_ack_pending: 10_000,
        ..Default::default()
    }
}

/// Makes sure every service has its queue (idempotent; creates what is
/// missing, never touches messages).
pub async fn ensure_queues(bus: &Bus, services: &[String]) -> Result<(), RouterError> {
    let stream = bus
        .jetstream()
        .get_stream(subjects::ROUTED_STREAM)
        .await
        .map_err(|e| RouterError::jetstream("opening ROUTED", e))?;
    for service in services {
        if service == NOISE || service == COPIES || !subjects::is_token(service) {
            tracing::error!(service = %service.escape_default(), "not a usable service name; no queue created");
            continue;
        }
        let name = queue_consumer(service);
        if stream.get_consumer::<pull::Config>(&name).await.is_ok() {
            continue;
        }
        stream
            .create_consumer(queue_config(service))
            .await
            .map_err(|e| RouterError::jetstream(format!("creating the queue of service {service}"), e))?;
        tracing::info!(service = %service, consumer = %name, "service queue created");
    }
    Ok(())
}
