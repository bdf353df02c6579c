//! The `[router]` section of the configuration.

use std::time::Duration;

use guichet_core::{Error, bus::subjects::is_token, config::Validate};
use serde::Deserialize;

/// How the router consumes INTAKE and where it finds its rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterConfig {
    /// The durable consumer on INTAKE, shared by every router process:
    /// routers with the same name share the load.
    pub consumer: String,
    /// Messages asked for in one pull request.
    pub batch_size: usize,
    /// Contacts routed at once by one process.
    pub concurrency: usize,
    /// Deliveries of one contact before it goes to the dead-letter stream.
    pub max_deliveries: u32,
    /// Delay before each redelivery of a contact whose routing failed
    /// (the n-th failure waits the n-th value; the last one repeats).
    #[serde(with = "guichet_core::config::duration_list")]
    pub backoff: Vec<Duration>,
    /// How long the server waits for an ack before redelivering a contact
    /// whose router vanished (crash, lost connection).
    #[serde(with = "humantime_serde")]
    pub ack_wait: Duration,
    /// The key of the active rules in the `guichet_config` bucket.
    pub rules_key: String,
    /// The manual-qualification service used while no rules were ever
    /// pushed (the rules name their own once pushed).
    pub fallback_service: String,
    /// Answer identity lookups from an in-process cache kept coherent by a
    /// watch on `guichet_identity` (merges and erasures reach it within
    /// the watch's delay; any doubt and it reads the KV).
    pub identity_cache: bool,
    /// At most this many identity keys in that cache (about 250 bytes
    /// each): the usagers seen recently stay, the others are read again.
    pub identity_cache_entries: usize,
    /// The same e-mail (same Message-ID and content) received again within
    /// this time, through another mailbox or twice, joins the first
    /// copy's request as a copy instead of opening another one.
    #[serde(with = "humantime_serde")]
    pub crosspost_window: Duration,
    /// A follow-up on a request closed less than this ago reopens it;
    /// after that it opens a new request that references the closed one.
    #[serde(with = "humantime_serde")]
    pub reopen_window: Duration,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            consumer: "router".into(),
            batch_size: 128,
            concurrency: 64,
            max_deliveries: 5,
            backoff: vec![
                Duration::from_secs(1),
                Duration::from_secs(5),
                Duration::from_secs(30),
                Duration::from_secs(120),
            ],
            ack_wait: Duration::from_secs(30),
            rules_key: "rules".into(),
            fallback_service: "qualification".into(),
            identity_cache: true,
            identity_cache_entries: 200_000,
            crosspost_window: Duration::from_secs(7 * 24 * 3600),
            reopen_window: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

impl RouterConfig {
    /// The delay before redelivery after the `delivered`-th failed try.
    pub fn backoff_after(&self, delivered: u32) -> Duration {
        let i = usize::try_from(delivered.saturating_sub(1)).unwrap_or(usize::MAX);
        self.backoff
            .get(i)
            .or(self.backoff.last())
            .copied()
            .unwrap_or(Duration::from_secs(1))
    }
}

impl Validate for RouterConfig {
    fn validate(&self) -> Result<(), Error> {
        if !is_token(&self.consumer) {
            return Err(Error::config(
                "router.consumer",
                "letters, digits, '-' and '_' only (at most 64)",
            ));
        }
        if !(1..=10_000).contains(&self.batch_size) {
            return Err(Error::config("router.batch_size", "must be between 1 and 10000"));
        }
        if !(1..=4096).contains(&self.concurrency) {
            return Err(Error::config("router.concurrency", "must be between 1 and 4096"));
        }
        if !(1..=100).contains(&self.max_deliveries) {
            return Err(Error::config("router.max_deliveries", "must be between 1 and 100"));
        }
        if self.backoff.is_empty() || self.backoff.iter().any(Duration::is_zero) {
            return Err(Error::config(
                "router.backoff",
                "must list at least one delay, each more than 0s (e.g. [\"1s\", \"5s\", \"30s\"])",
            ));
        }
        if self.ack_wait < Duration::from_secs(1) {
            return Err(Error::config("router.ack_wait", "must be at least 1s"));
        }
        let key_ok = !self.rules_key.is_empty()
            && self
                .rules_key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/' | b'='));
        if !key_ok || self.rules_key.starts_with('.') || self.rules_key.ends_with('.') {
            return Err(Error::config(
                "router.rules_key",
                "must be a key-value key: letters, digits and - _ . / =",
            ));
        }
        if !is_token(&self.fallback_service) {
            return Err(Error::config(
                "router.fallback_service",
                "must be a service name: letters, digits, '-' and '_' only (at most 64)",
            ));
        }
        if !(1_000..=50_000_000).contains(&self.identity_cache_entries) {
            return Err(Error::config(
                "router.identity_cache_entries",
                "must be between 1000 and 50000000 (set router.identity_cache = false to turn the cache off)",
            ));
        }
        Ok(())
    }
}
