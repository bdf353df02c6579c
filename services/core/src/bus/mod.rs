//! The NATS bus: connection, JetStream topology, and the publish path.
//!
//! [`Bus::start`] connects (retrying until `nats.connect_timeout`), checks
//! that JetStream is on, creates or reconciles the topology, and opens the
//! stores. Every service receives a clone of the same `Bus`.

mod attachments;
mod connect;
mod publish;
pub mod routing;
pub mod subjects;
mod topology;
pub mod usagers;

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{self, kv, object_store::ObjectStore};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub use publish::{IntakeReceipt, Published, RETRY_AFTER};
pub use topology::ensure_topology;

use crate::{
    Error,
    config::{NatsConfig, TopologyConfig},
};

/// The stores of the topology, opened once.
#[derive(Clone)]
pub struct Stores {
    pub identity: kv::Store,
    pub requests: kv::Store,
    pub checkpoints: kv::Store,
    pub config: kv::Store,
    /// `guichet_seen`: the mail adapter's ingested Message-IDs.
    pub replay_guard: kv::Store,
    pub leases: kv::Store,
    pub attachments: ObjectStore,
}

/// A connected bus with its topology in place. Cheap to clone.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("url", &self.inner.url)
            .finish_non_exhaustive()
    }
}

struct Inner {
    url: String,
    client: async_nats::Client,
    jetstream: jetstream::Context,
    stores: Stores,
    /// INTAKE, for reading back a contact that was already stored.
    intake: jetstream::stream::Stream<()>,
    in_flight: Semaphore,
    publish_timeout: Duration,
}

impl Bus {
    /// Connects to `url`, checks JetStream, and ensures the topology.
    /// Gives up after `nats.connect_timeout`, or when `cancel` fires.
    pub async fn start(
        url: &str,
        nats: &NatsConfig,
        topology: &TopologyConfig,
        cancel: &CancellationToken,
    ) -> Result<Self, Error> {
        let client = connect::connect(url, nats, cancel).await?;
        let jetstream = jetstream::new(client.clone());
        if let Err(e) = jetstream.query_account().await {
            tracing::debug!(error = %e, "JetStream account query failed");
            return Err(Error::NoJetStream { url: url.to_owned() });
        }
        let stores = ensure_topology(&jetstream, topology).await?;
        let intake = jetstream
            .get_stream_no_info(subjects::INTAKE_STREAM)
            .await
            .map_err(|e| Error::Unavailable(format!("opening {}: {e}", subjects::INTAKE_STREAM)))?;
        Ok(Self {
            inner: Arc::new(Inner {
                url: url.to_owned(),
                client,
                jetstream,
                stores,
                intake,
                in_flight: Semaphore::new(nats.max_in_flight),
                publish_timeout: nats.publish_timeout,
            }),
        })
    }

    pub fn url(&self) -> &str {
        &self.inner.url
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.inner.client
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.inner.jetstream
    }

    pub fn stores(&self) -> &Stores {
        &self.inner.stores
    }

    pub fn publish_timeout(&self) -> Duration {
        self.inner.publish_timeout
    }

    /// Whether the connection to the server is up right now.
    pub fn is_connected(&self) -> bool {
        self.inner.client.connection_state() == async_nats::connection::State::Connected
    }
}
