//! An in-process cache of the identity lookups, kept coherent by a watch
//! on `guichet_identity`.
//!
//! Per contact the router reads an identifier key (`<kind>.<key id>.<hmac>` →
//! usager id) and the alias of that usager (`alias.<U>` → the id it was
//! merged into, usually absent). Those reads dominated the broker's work
//! per contact; this cache answers them from memory.
//!
//! Loading: at start the watch (an ordered push consumer on the identifier
//! and alias keys) delivers the last value of every key, then every change.
//! When they all fit (`router.identity_cache_entries`), the cache is a
//! complete mirror: a key it does not hold does not exist, and a new
//! person costs no read at all. When they do not fit, the watch starts from
//! "now" instead and the cache fills as contacts come (a miss reads the
//! KV); the same happens once a complete mirror outgrows its bound.
//!
//! Coherence:
//! - the watch applies every put, delete and purge, so merges
//!   (`guichet usager merge` re-points keys and writes `alias.<B>`) and
//!   erasures (`guichet usager forget` purges keys) reach the cache within
//!   the watch's delivery delay;
//! - a value read from the KV is stored only if the watch applied nothing
//!   to its shard while the read was in flight ([`Ticket`]), and never over
//!   a newer revision: a slow read cannot put back a value the watch has
//!   already replaced;
//! - the cache answers only while its watch is known to be complete: until
//!   the first watch is set up, after the watch ends or fails, and from
//!   the moment the client loses its connection (events may be missed
//!   then), every lookup reads the KV, the cache is emptied, and the watch
//!   is set up again (then the cache refills);
//! - absence is known too (from a complete mirror, or cached: most usagers
//!   have no alias), but a key another router has just created may not
//!   have reached this cache yet: the resolver's `create` then fails with
//!   "already exists" and its retries read the KV directly
//!   ([`crate::identity`]).
//!
//! Memory is bounded: `router.identity_cache_entries` entries at most
//! (about 250 bytes each, measured: a 128-bit digest of the key, the usager
//! id, the revision, the maps' spare room), in shards of two generations. Past
//! the bound, a full young generation replaces the old one, which is
//! dropped: recently used keys stay, the others are read again when needed.

use std::{
    collections::HashMap,
    hash::BuildHasher,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use async_nats::jetstream::{
    consumer::{DeliverPolicy, push},
    kv::{self, Operation},
};
use futures::StreamExt;
use guichet_core::{Bus, backoff::Backoff};
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::RouterError;

/// The keys the cache holds (and the watch follows): identifiers of every
/// kind and aliases. Records (`usager.*`) and merge lists are not read
/// per contact.
pub const WATCHED_KEYS: [&str; 4] = ["account.>", "email.>", "phone.>", "alias.>"];

const SHARDS: usize = 64;
/// `watching` when no watch is in force.
const NOT_WATCHING: u64 = u64::MAX;

/// The identity cache. Cheap to clone; one per router process.
#[derive(Clone)]
pub struct IdentityCache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for IdentityCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityCache")
            .field("usable", &self.usable())
            .finish_non_exhaustive()
    }
}

struct Inner {
    shards: Box<[Mutex<Shard>]>,
    /// Entries per generation of one shard.
    generation: usize,
    /// The most entries the cache may hold.
    capacity: usize,
    /// Every identifier and alias key is in the cache: a key it does not
    /// hold does not exist. Lost for good (until the watch is set up
    /// again) at the first eviction.
    complete: AtomicBool,
    /// A watch is being loaded to make a complete mirror.
    loading: AtomicBool,
    hasher: std::collections::hash_map::RandomState,
    /// Bumped when the cache is emptied: reads begun before do not fill it.
    epoch: AtomicU64,
    /// The client's connection count when the watch in force was set up,
    /// or [`NOT_WATCHING`]. A reconnection since then may have lost
    /// events: the cache must not answer.
    watching: AtomicU64,
    stats: Arc<async_nats::Statistics>,
    /// `None` only in unit tests (always connected).
    client: Option<async_nats::Client>,
}

/// A 128-bit digest of a key: identifier keys are long (`email.` and 64
/// hex digits); a truncated SHA-256 keeps entries small, and a collision
/// among a town's keys (about 2^-88 for a million) is not a concern.
type KeyDigest = u128;

fn digest(key: &str) -> KeyDigest {
    let hash = Sha256::digest(key.as_bytes());
    let mut first = [0u8; 16];
    first.copy_from_slice(&hash[..16]);
    u128::from_le_bytes(first)
}

#[derive(Default)]
struct Shard {
    young: HashMap<KeyDigest, Slot>,
    old: HashMap<KeyDigest, Slot>,
    /// Watch events applied to this shard: a read in flight across one of
    /// them may be older than what the watch delivered.
    changes: u64,
    /// Entries were dropped since the last reset: the cache is not a
    /// complete mirror.
    dropped: bool,
}

#[derive(Clone)]
struct Slot {
    /// `None`: the key does not exist (never did, deleted or purged).
    value: Option<Arc<str>>,
    /// KV revision of the value; 0 for an absence read from the KV (no
    /// revision to compare; any write is newer).
    revision: u64,
}

/// Taken before reading a key from the KV, handed back with the value.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    epoch: u64,
    shard: usize,
    changes: u64,
}

impl IdentityCache {
    /// An empty cache of at most `entries` entries, not yet usable.
    fn new(entries: usize, stats: Arc<async_nats::Statistics>, client: Option<async_nats::Client>) -> Self {
        let generation = (entries / (2 * SHARDS)).max(1);
        Self {
            inner: Arc::new(Inner {
                shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
                generation,
                capacity: generation * 2 * SHARDS,
                complete: AtomicBool::new(false),
                loading: AtomicBool::new(false),
                hasher: std::collections::hash_map::RandomState::new(),
                epoch: AtomicU64::new(0),
                watching: AtomicU64::new(NOT_WATCHING),
                stats,
                client,
            }),
        }
    }

    /// Sets up the watch and loads the keys, then returns the cache
    /// (usable) and the task that keeps it coherent until `shutdown`.
    /// Fails if the first watch cannot be set up: the router must not
    /// start without it.
    pub async fn start(
        bus: &Bus,
        entries: usize,
        shutdown: CancellationToken,
    ) -> Result<(Self, JoinHandle<()>), RouterError> {
        let client = bus.client().clone();
        let cache = Self::new(entries, client.statistics(), Some(client.clone()));
        let kv = bus.stores().identity.clone();
        let first = tokio::select! {
            () = shutdown.cancelled() => None,
            watching = cache.establish(&client, &kv) => Some(
                watching.map_err(|e| RouterError::identity_store("loading the identity cache", e))?,
            ),
        };
        let task = tokio::spawn(keep_coherent(cache.clone(), client, kv, first, shutdown));
        Ok((cache, task))
    }

    /// Empties the cache, sets a watch up, and applies what it delivers
    /// until it has caught up with the bucket; then the cache answers.
    async fn establish(&self, client: &async_nats::Client, kv: &kv::Store) -> Result<Watching, String> {
        self.reset();
        // Read before the watch exists: a reconnection during its set-up
        // shows as a different count and the cache stays unusable.
        let connects = self.inner.stats.connects.load(Ordering::Acquire);
        let (mut messages, pending) = open_watch(client, kv, DeliverPolicy::LastPerSubject).await?;
        let mut complete = true;
        if pending > self.inner.capacity as u64 {
            // Will not fit: no point loading what would be evicted. From
            // "now" on, the cache fills as contacts come.
            drop(messages);
            tracing::info!(
                keys = pending,
                capacity = self.inner.capacity,
                "identity keys exceed router.identity_cache_entries: the cache keeps the recent ones, misses read the KV"
            );
            messages = open_watch(client, kv, DeliverPolicy::New).await?.0;
            complete = false;
        } else if pending > 0 {
            let started = std::time::Instant::now();
            self.inner.loading.store(true, Ordering::Release);
            let loaded = self.load(kv, &mut messages).await;
            self.inner.loading.store(false, Ordering::Release);
            loaded?;
            tracing::info!(
                keys = pending,
                seconds = started.elapsed().as_secs_f64(),
                "identity cache loaded"
            );
        }
        // Complete unless loading had to evict (the bucket grew meanwhile)
        // or met a value it cannot hold.
        let complete = complete && self.nothing_dropped();
        self.inner.complete.store(complete, Ordering::Release);
        self.inner.watching.store(connects, Ordering::Release);
        metrics::gauge!("guichet_router_identity_cache_usable").set(1.0);
        metrics::gauge!("guichet_router_identity_cache_complete").set(if complete { 1.0 } else { 0.0 });
        Ok(Watching { messages, connects })
    }

    /// Applies the watch's first messages, up to the last one it had to
    /// deliver when it was set up.
    async fn load(&self, kv: &kv::Store, messages: &mut push::Ordered) -> Result<(), String> {
        loop {
            // A bucket purged meanwhile would leave nothing to wait for.
            let next = tokio::time::timeout(Duration::from_secs(30), messages.next())
                .await
                .map_err(|_| "no message for 30 s while loading the identity keys".to_owned())?;
            let message = match next {
                Some(Ok(message)) => message,
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("the watch ended while loading".into()),
            };
            if self.apply_message(kv, &message)? == 0 {
                return Ok(());
            }
        }
    }

    /// Applies one watch message; returns how many the watch has left.
    fn apply_message(&self, kv: &kv::Store, message: &async_nats::jetstream::Message) -> Result<u64, String> {
        let info = message
            .info()
            .map_err(|e| format!("a watch message without metadata: {e}"))?;
        let (revision, left) = (info.stream_sequence, info.pending);
        let Some(key) = message.subject.strip_prefix(kv.prefix.as_str()) else {
            return Ok(left);
        };
        match operation(message) {
            Operation::Put => match std::str::from_utf8(&message.payload) {
                Ok(text) => self.apply(key, Some(text), revision),
                // Never written by guichet; the resolver reports it.
                Err(_) => self.drop_key(key),
            },
            Operation::Delete | Operation::Purge => self.apply(key, None, revision),
        }
        Ok(left)
    }

    /// Whether the cache may answer: a watch is in force and the
    /// connection it runs on has not been lost since it was set up.
    pub fn usable(&self) -> bool {
        let watching = self.inner.watching.load(Ordering::Acquire);
        watching != NOT_WATCHING
            && watching == self.inner.stats.connects.load(Ordering::Acquire)
            && self
                .inner
                .client
                .as_ref()
                .is_none_or(|c| c.connection_state() == async_nats::connection::State::Connected)
    }

    /// Whether the cache holds every identifier and alias key.
    pub fn complete(&self) -> bool {
        self.inner.complete.load(Ordering::Acquire)
    }

    fn shard_of(&self, key: KeyDigest) -> usize {
        // Truncation is the point: any bits will do to pick a shard.
        (self.inner.hasher.hash_one(key) as usize) % SHARDS
    }

    fn lock(&self, shard: usize) -> MutexGuard<'_, Shard> {
        // A panic while holding the lock leaves a map that is still
        // consistent (no invariant spans two statements): keep using it.
        match self.inner.shards[shard].lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The cached state of `key`: `None` when the cache cannot answer (not
    /// cached and not a complete mirror, or not usable); `Some(None)` when
    /// the key does not exist.
    pub fn get(&self, key: &str) -> Option<Option<Arc<str>>> {
        if !self.usable() {
            return None;
        }
        let key = digest(key);
        let found = {
            let mut shard = self.lock(self.shard_of(key));
            if let Some(slot) = shard.young.get(&key) {
                Some(slot.value.clone())
            } else if self.complete() {
                // Nothing was ever dropped from a complete mirror: a key
                // it does not hold does not exist.
                Some(shard.old.get(&key).and_then(|slot| slot.value.clone()))
            } else if let Some(slot) = shard.old.remove(&key) {
                // Used again: keep it through the next rotation.
                let value = slot.value.clone();
                self.insert(&mut shard, key, slot);
                Some(value)
            } else {
                None
            }
        };
        let label = if found.is_some() { "hit" } else { "miss" };
        metrics::counter!("guichet_router_identity_cache_lookups_total", "result" => label).increment(1);
        found
    }

    /// To take before reading `key` from the KV; `None` when the cache is
    /// not usable (the value read will not be kept).
    pub fn ticket(&self, key: &str) -> Option<Ticket> {
        if !self.usable() {
            return None;
        }
        let epoch = self.inner.epoch.load(Ordering::Acquire);
        let shard = self.shard_of(digest(key));
        let changes = self.lock(shard).changes;
        Some(Ticket { epoch, shard, changes })
    }

    /// Keeps what a KV read (or write) begun with `ticket` found: `value` at
    /// `revision` (0 for an absence). Dropped when the watch touched the
    /// shard meanwhile (the read may predate what it delivered), when the
    /// cache was emptied, or when the cache holds a newer revision.
    pub fn fill(&self, ticket: Ticket, key: &str, value: Option<&str>, revision: u64) {
        let key = digest(key);
        let mut shard = self.lock(ticket.shard);
        // Checked under the shard lock: `reset` bumps the epoch before it
        // empties the shards, so a fill either sees the new epoch or is
        // emptied with the rest.
        if shard.changes != ticket.changes || self.inner.epoch.load(Ordering::Acquire) != ticket.epoch || !self.usable()
        {
            return;
        }
        self.store(&mut shard, key, value, revision);
    }

    /// Applies one watch event. Puts are kept (the next contacts of a
    /// person another router just created are hits); deletes and purges
    /// are kept as known absences.
    fn apply(&self, key: &str, value: Option<&str>, revision: u64) {
        let key = digest(key);
        let mut shard = self.lock(self.shard_of(key));
        shard.changes += 1;
        self.store(&mut shard, key, value, revision);
    }

    fn store(&self, shard: &mut Shard, key: KeyDigest, value: Option<&str>, revision: u64) {
        let known = shard
            .young
            .get(&key)
            .or_else(|| shard.old.get(&key))
            .map(|s| s.revision);
        if known.is_some_and(|known| known >= revision) {
            return;
        }
        shard.old.remove(&key);
        if value.is_none() && (self.complete() || self.inner.loading.load(Ordering::Acquire)) {
            // A complete mirror knows absence without holding it; keeping
            // it would only take room (one alias per new usager).
            shard.young.remove(&key);
            return;
        }
        let slot = Slot {
            value: value.map(Arc::from),
            revision,
        };
        self.insert(shard, key, slot);
    }

    /// Inserts into the young generation. A full young generation becomes
    /// the old one; if the old one held entries they are dropped, and the
    /// cache is no longer a complete mirror.
    fn insert(&self, shard: &mut Shard, key: KeyDigest, slot: Slot) {
        if shard.young.len() >= self.inner.generation && !shard.young.contains_key(&key) {
            if !shard.old.is_empty() {
                shard.dropped = true;
                self.incomplete("identity cache full: it keeps the recent keys, misses read the KV");
            }
            shard.old = std::mem::take(&mut shard.young);
        }
        shard.young.insert(key, slot);
    }

    /// A value the cache cannot hold (not UTF-8 text): dropped, and the
    /// cache no longer claims to hold every key, so that lookups of it
    /// read the KV and report it.
    fn drop_key(&self, key: &str) {
        let key = digest(key);
        let mut shard = self.lock(self.shard_of(key));
        shard.changes += 1;
        shard.young.remove(&key);
        shard.old.remove(&key);
        shard.dropped = true;
        self.incomplete("an identity key holds something other than text: lookups of keys not cached read the KV");
    }

    fn incomplete(&self, why: &str) {
        if self.inner.complete.swap(false, Ordering::AcqRel) {
            metrics::gauge!("guichet_router_identity_cache_complete").set(0.0);
            tracing::info!(capacity = self.inner.capacity, "{why}");
        }
    }

    fn nothing_dropped(&self) -> bool {
        (0..SHARDS).all(|i| !self.lock(i).dropped)
    }

    /// Stops answering and empties the cache (the watch broke, or is
    /// being set up).
    fn reset(&self) {
        self.inner.watching.store(NOT_WATCHING, Ordering::Release);
        self.inner.complete.store(false, Ordering::Release);
        self.inner.epoch.fetch_add(1, Ordering::AcqRel);
        for i in 0..SHARDS {
            let mut shard = self.lock(i);
            shard.young = HashMap::new();
            shard.old = HashMap::new();
            shard.dropped = false;
        }
        metrics::gauge!("guichet_router_identity_cache_usable").set(0.0);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        (0..SHARDS)
            .map(|i| {
                let shard = self.lock(i);
                shard.young.len() + shard.old.len()
            })
            .sum()
    }
}

/// A watch in force: its messages and the connection count it began on.
struct Watching {
    messages: push::Ordered,
    connects: u64,
}

/// An ordered push consumer on the identifier and alias keys (what
/// `kv::Store::watch_many` builds), with the number of messages it has to
/// deliver at first: loading is done when they are applied.
async fn open_watch(
    client: &async_nats::Client,
    kv: &kv::Store,
    deliver_policy: DeliverPolicy,
) -> Result<(push::Ordered, u64), String> {
    let consumer = kv
        .stream
        .create_consumer(push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            description: Some("guichet router: identity cache".into()),
            filter_subjects: WATCHED_KEYS.iter().map(|k| format!("{}{k}", kv.prefix)).collect(),
            replay_policy: async_nats::jetstream::consumer::ReplayPolicy::Instant,
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("watching the identity keys: {e}"))?;
    let pending = consumer.cached_info().num_pending;
    let messages = consumer
        .messages()
        .await
        .map_err(|e| format!("watching the identity keys: {e}"))?;
    Ok((messages, pending))
}

/// What a KV message does to its key (the `KV-Operation` header; a server
/// marker, e.g. of an expiry, removes the key).
fn operation(message: &async_nats::jetstream::Message) -> Operation {
    let Some(headers) = message.headers.as_ref() else {
        return Operation::Put;
    };
    if let Some(op) = headers.get("KV-Operation") {
        return op.as_str().parse().unwrap_or(Operation::Put);
    }
    if headers.get("Nats-Marker-Reason").is_some() {
        return Operation::Purge;
    }
    Operation::Put
}

/// Applies the watch's events until `shutdown`; when the watch ends,
/// fails, or the connection is lost, empties the cache (lookups read the
/// KV meanwhile) and sets the watch up again.
async fn keep_coherent(
    cache: IdentityCache,
    client: async_nats::Client,
    kv: kv::Store,
    first: Option<Watching>,
    shutdown: CancellationToken,
) {
    let mut current = first;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    while !shutdown.is_cancelled() {
        let Watching { mut messages, connects } = match current.take() {
            Some(watching) => watching,
            None => {
                let established = tokio::select! {
                    () = shutdown.cancelled() => break,
                    established = cache.establish(&client, &kv) => established,
                };
                match established {
                    Ok(watching) => {
                        tracing::info!("identity cache watch set up again; the cache answers again");
                        backoff.reset();
                        watching
                    }
                    Err(e) => {
                        cache.reset();
                        let delay = backoff.next_delay();
                        tracing::warn!(error = %e, retry_in = ?delay, "cannot watch the identity keys; lookups read the KV meanwhile");
                        tokio::select! {
                            () = shutdown.cancelled() => break,
                            () = tokio::time::sleep(delay) => {}
                        }
                        continue;
                    }
                }
            }
        };
        // Lookups check the connection count themselves; this tick only
        // makes the watch come back without waiting for a lookup.
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let why = loop {
            tokio::select! {
                () = shutdown.cancelled() => break None,
                _ = tick.tick() => {
                    if cache.inner.stats.connects.load(Ordering::Acquire) != connects {
                        break Some("the connection to NATS was lost".to_owned());
                    }
                }
                next = messages.next() => match next {
                    Some(Ok(message)) => {
                        if let Err(e) = cache.apply_message(&kv, &message) {
                            break Some(e);
                        }
                    }
                    Some(Err(e)) => break Some(e.to_string()),
                    None => break Some("the watch ended".to_owned()),
                },
            }
        };
        cache.reset();
        match why {
            None => break,
            Some(why) => {
                metrics::counter!("guichet_router_identity_cache_resets_total").increment(1);
                tracing::warn!(reason = %why, "identity cache emptied: its watch broke; lookups read the KV until it is set up again");
            }
        }
    }
    cache.reset();
}

#[cfg(test)]
mod tests {
    use super::*;
    use guichet_core::identity::{normalize_account, normalize_email, normalize_phone};

    fn usable_cache(entries: usize) -> IdentityCache {
        let stats = Arc::new(async_nats::Statistics::default());
        stats.connects.store(1, Ordering::Release);
        let cache = IdentityCache::new(entries, stats, None);
        cache.inner.watching.store(1, Ordering::Release);
        cache
    }

    #[test]
    fn a_read_that_crossed_a_watch_event_is_not_kept() {
        let cache = usable_cache(1000);
        let ticket = cache.ticket("email.a").unwrap();
        // While the read is in flight, the watch delivers a merge.
        cache.apply("email.a", Some("UKEEP"), 12);
        cache.fill(ticket, "email.a", Some("UOLD"), 7);
        assert_eq!(cache.get("email.a"), Some(Some(Arc::from("UKEEP"))));
        // And an erasure.
        let ticket = cache.ticket("email.a").unwrap();
        cache.apply("email.a", None, 13);
        cache.fill(ticket, "email.a", Some("UKEEP"), 12);
        assert_eq!(cache.get("email.a"), Some(None));
    }

    #[test]
    fn older_revisions_never_replace_newer_ones() {
        let cache = usable_cache(1000);
        cache.apply("alias.U1", Some("U0"), 20);
        let ticket = cache.ticket("alias.U1").unwrap();
        cache.fill(ticket, "alias.U1", None, 0);
        assert_eq!(cache.get("alias.U1"), Some(Some(Arc::from("U0"))));
        cache.apply("alias.U1", Some("U9"), 15);
        assert_eq!(cache.get("alias.U1"), Some(Some(Arc::from("U0"))));
        let ticket = cache.ticket("email.b").unwrap();
        cache.fill(ticket, "email.b", Some("U2"), 30);
        assert_eq!(cache.get("email.b"), Some(Some(Arc::from("U2"))));
    }

    #[test]
    fn an_unusable_cache_answers_nothing_and_keeps_nothing() {
        let cache = usable_cache(1000);
        let before_reset = cache.ticket("email.a").unwrap();
        cache.apply("email.a", Some("U1"), 3);
        cache.reset();
        assert_eq!(cache.get("email.a"), None);
        assert!(cache.ticket("email.a").is_none());
        cache.fill(before_reset, "email.a", Some("U1"), 3);
        assert_eq!(cache.len(), 0);
        // A reconnection since the watch was set up: not usable either.
        let cache = usable_cache(1000);
        cache.apply("email.a", Some("U1"), 3);
        cache.inner.stats.connects.fetch_add(1, Ordering::AcqRel);
        assert_eq!(cache.get("email.a"), None);
        // Tickets from before an emptying are refused once usable again.
        let cache = usable_cache(1000);
        let old = cache.ticket("email.z").unwrap();
        cache.reset();
        cache.inner.watching.store(1, Ordering::Release);
        cache.fill(old, "email.z", Some("U1"), 3);
        assert_eq!(cache.get("email.z"), None);
    }

    #[test]
    fn memory_is_bounded_and_recent_keys_stay() {
        let cache = usable_cache(SHARDS * 2 * 10);
        for i in 0..10_000u64 {
            let key = format!("email.{i}");
            cache.apply(&key, Some("U1"), i + 1);
            // One key used all along.
            assert!(cache.get("email.0").is_some(), "after {i}");
        }
        assert!(cache.len() <= SHARDS * 2 * 10, "{}", cache.len());
    }

    #[test]
    fn a_complete_mirror_knows_absence_until_it_drops_a_key() {
        let cache = usable_cache(SHARDS * 2 * 10);
        cache.apply("email.known", Some("U1"), 1);
        cache.inner.complete.store(true, Ordering::Release);
        assert_eq!(cache.get("email.known"), Some(Some(Arc::from("U1"))));
        assert_eq!(cache.get("email.nobody"), Some(None));
        // Absence is known without taking room; an erasure frees the room.
        let ticket = cache.ticket("alias.U1").unwrap();
        cache.fill(ticket, "alias.U1", None, 0);
        cache.apply("email.known", None, 2);
        assert_eq!(cache.len(), 0);
        assert_eq!(cache.get("email.known"), Some(None));
        cache.apply("email.known", Some("U1"), 3);
        // Filling up to the bound keeps it complete (old and young both
        // hold entries; nothing is dropped)...
        for i in 0..SHARDS * 4 {
            cache.apply(&format!("email.{i}"), Some("U2"), 10 + i as u64);
        }
        assert!(cache.complete());
        assert_eq!(cache.get("email.known"), Some(Some(Arc::from("U1"))));
        // ...going past it does not: absence is no longer known.
        for i in 0..SHARDS * 40 {
            cache.apply(&format!("phone.{i}"), Some("U3"), 10_000 + i as u64);
        }
        assert!(!cache.complete());
        assert!(cache.len() <= SHARDS * 2 * 10);
        assert_eq!(cache.get("email.nobody"), None);
    }

    #[test]
    fn the_watch_follows_every_identifier_kind_and_aliases() {
        for id in [
            normalize_email("a@example.fr").unwrap(),
            normalize_phone("0612345678").unwrap(),
            normalize_account("franceconnect", "sub").unwrap(),
        ] {
            let key = guichet_core::privacy::Pseudonymizer::random().identity_key(&id);
            let kind = key.split('.').next().unwrap();
            assert!(WATCHED_KEYS.contains(&format!("{kind}.>").as_str()), "{key}");
        }
        let alias = guichet_core::bus::usagers::alias_key("U1");
        assert!(WATCHED_KEYS.contains(&format!("{}.>", alias.split('.').next().unwrap()).as_str()));
    }
}
