//! What every request handler shares: the bus, the configuration, the
//! identity keys and the budget of request bytes in progress. Its own
//! module so that the handlers ([`crate::record`], [`crate::history`],
//! [`crate::access`]) and the server that owns it depend on it, not on
//! each other.

use guichet_core::{Bus, privacy::Pseudonymizer};
use tokio::sync::{Semaphore, SemaphorePermit};
use tonic::Status;

use crate::config::DeskConfig;

/// What every request handler shares.
pub struct State {
    pub bus: Bus,
    pub instance: String,
    /// Identity keys, to look usagers up by e-mail or phone.
    pub privacy: Pseudonymizer,
    pub config: DeskConfig,
    /// Request bytes being processed (`desk.max_buffered_bytes`), one
    /// permit a byte.
    pub budget: Semaphore,
}

impl State {
    pub fn new(bus: Bus, instance: String, privacy: Pseudonymizer, config: DeskConfig) -> Self {
        Self {
            budget: Semaphore::new(config.max_buffered_bytes),
            bus,
            instance,
            privacy,
            config,
        }
    }

    /// Reserves `bytes` of the budget until the permit is dropped, or
    /// UNAVAILABLE at once: waiting would only pile requests up.
    pub fn reserve(&self, bytes: usize) -> Result<SemaphorePermit<'_>, Status> {
        let permit = u32::try_from(bytes)
            .ok()
            .and_then(|n| self.budget.try_acquire_many(n).ok());
        permit.ok_or_else(|| {
            metrics::counter!("guichet_desk_budget_exhausted_total").increment(1);
            tracing::warn!(
                bytes,
                "request refused: `desk.max_buffered_bytes` of requests in progress"
            );
            Status::unavailable(
                "too many request bytes are being processed right now; retry with backoff (same client_request_id)",
            )
        })
    }
}
