//! The NATS bus: connection, JetStream topology, and the publish path.
//!
//! [`Bus::start`] connects to any of the listed servers (retrying until
//! `nats.connect_timeout`), checks that JetStream is on, creates or
//! reconciles the topology (retrying until `topology.ready_timeout`),
//! opens the stores and starts the readiness monitor. Every service receives a clone of the same `Bus`.

mod attachments;
pub mod claim;
mod connect;
mod outbox;
mod publish;
mod readiness;
pub mod revisions;
pub mod routing;
mod scan;
pub mod subjects;
mod topology;
pub mod usagers;

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{self, kv, object_store::ObjectStore};
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;

pub use attachments::{attachment_key, attachment_ref};
pub use publish::{IntakeReceipt, Published, RETRY_AFTER};
pub use readiness::NotReady;
pub use scan::Scanned;
pub use topology::ensure_topology;

use crate::{
    Error,
    backoff::Backoff,
    config::{NatsConfig, NatsUrls, TopologyConfig, redact_urls},
};
use readiness::Readiness;

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
            .field("urls", &redact_urls(&self.inner.urls))
            .finish_non_exhaustive()
    }
}

struct Inner {
    urls: Vec<String>,
    client: async_nats::Client,
    jetstream: jetstream::Context,
    stores: Stores,
    /// INTAKE, for reading back a contact that was already stored.
    intake: jetstream::stream::Stream<()>,
    in_flight: Semaphore,
    publish_timeout: Duration,
    readiness: Arc<Readiness>,
}

/// Checks JetStream, ensures the topology, opens the stores and INTAKE.
async fn open(
    jetstream: &jetstream::Context,
    topology: &TopologyConfig,
    shown: &str,
) -> Result<(Stores, jetstream::stream::Stream<()>), Error> {
    use jetstream::context::AccountErrorKind;
    if let Err(e) = jetstream.query_account().await {
        return Err(match e.kind() {
            // No answer yet, or "temporarily unavailable": a cluster electing.
            AccountErrorKind::TimedOut => Error::Unavailable(format!("JetStream account query: {e}")),
            AccountErrorKind::JetStream(js) if js.code() == 503 => {
                Error::Unavailable(format!("JetStream account query: {e}"))
            }
            _ => {
                tracing::debug!(error = %e, "JetStream account query failed");
                Error::NoJetStream { url: shown.to_owned() }
            }
        });
    }
    let stores = ensure_topology(jetstream, topology).await?;
    let intake = jetstream
        .get_stream_no_info(subjects::INTAKE_STREAM)
        .await
        .map_err(|e| Error::Unavailable(format!("opening {}: {e}", subjects::INTAKE_STREAM)))?;
    Ok((stores, intake))
}

impl Bus {
    /// Connects to any of `urls` (all of them are tried, at start and on
    /// every reconnection), checks JetStream, ensures the topology and
    /// starts the readiness monitor. Gives up after `nats.connect_timeout`,
    /// or when `cancel` fires; the monitor runs until `cancel` fires or
    /// the last clone of the bus is dropped.
    pub async fn start(
        urls: &[String],
        nats: &NatsConfig,
        topology: &TopologyConfig,
        cancel: &CancellationToken,
    ) -> Result<Self, Error> {
        let addrs = NatsUrls::from(urls.to_vec()).server_addrs()?;
        let shown = redact_urls(urls);
        let readiness = Readiness::new();
        let client = connect::connect(addrs, &shown, nats, &readiness, cancel).await?;
        let jetstream = jetstream::new(client.clone());
        // Connected is not enough: a cluster that just started or lost a
        // node answers JetStream requests only once it has elected its
        // leaders, and peers starting together create the topology at the
        // same time. Tried again until `topology.ready_timeout`.
        let deadline = tokio::time::Instant::now() + topology.ready_timeout;
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(2));
        let (stores, intake) = loop {
            let error = match open(&jetstream, topology, &shown).await {
                Ok(opened) => break opened,
                Err(e @ (Error::Topology { .. } | Error::Unavailable(_))) => e,
                Err(e) => return Err(e),
            };
            let delay = backoff.next_delay();
            if tokio::time::Instant::now() + delay > deadline {
                return Err(match error {
                    Error::Topology { what, reason } => Error::Topology {
                        what,
                        reason: format!(
                            "{reason} (gave up after `topology.ready_timeout` = {:?})",
                            topology.ready_timeout
                        ),
                    },
                    other => other,
                });
            }
            tracing::warn!(%error, retry_in = ?delay, "JetStream topology not in place yet (cluster election, peers starting?)");
            tokio::select! {
                () = cancel.cancelled() => return Err(error),
                () = tokio::time::sleep(delay) => {}
            }
        };
        let inner = Arc::new(Inner {
            urls: urls.to_vec(),
            client,
            jetstream,
            stores,
            intake,
            in_flight: Semaphore::new(nats.max_in_flight),
            publish_timeout: nats.publish_timeout,
            readiness,
        });
        tokio::spawn(readiness::monitor(Arc::downgrade(&inner), cancel.child_token()));
        Ok(Self { inner })
    }

    /// The servers listed, without credentials, comma-separated.
    pub fn urls(&self) -> String {
        redact_urls(&self.inner.urls)
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

    /// Whether a contact published now would be stored, and if not, why
    /// (see [`NotReady`]). No I/O: the readiness monitor keeps it current.
    pub fn ready(&self) -> Result<(), NotReady> {
        if !self.is_connected() {
            return Err(NotReady::Disconnected);
        }
        self.inner.readiness.current()
    }

    /// The readiness verdict, to follow its changes.
    pub fn watch_ready(&self) -> watch::Receiver<Result<(), NotReady>> {
        self.inner.readiness.watch()
    }
}
