//! What the `guichet` binary hands to every service it starts.

use crate::{Bus, admin::Health, privacy::Pseudonymizer};

/// The shared handles of a running service.
#[derive(Clone, Debug)]
pub struct ServiceContext {
    /// The connected bus, topology in place.
    pub bus: Bus,
    /// Where the service reports its readiness (`/readyz`).
    pub health: Health,
    /// This process's name in traces and `Source.adapter_instance`
    /// (the host name unless configured).
    pub instance: String,
    /// Identity keys and log pseudonyms under `privacy.pseudonym_key`.
    pub privacy: Pseudonymizer,
}
