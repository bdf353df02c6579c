//! The last step of `guichet usager forget`: the markers that purging a
//! key leaves in a key-value bucket's stream.
//!
//! A purge removes a key's values but leaves one marker message on the
//! key's subject, so that watchers learn the key is gone. The subject is
//! the key: `usager.<U>`, `email.<key id>.<keyed hash>`... An erased
//! person's ids and identifier hashes would stay there for good. Once
//! every consumer of the bucket (the routers' identity caches watch it)
//! has been delivered the markers, they are removed, each only up to its
//! own sequence: a key written again meanwhile (the same person writing
//! anew) keeps its new value.

use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt;

use crate::RouterError;

/// How long the watchers get to receive the markers; past that they stay
/// (a key name, no value) and are counted.
const WATCHERS_WAIT: Duration = Duration::from_secs(10);

/// Removes the purge (or delete) markers of `keys` in `store`. Returns
/// how many were removed; a key with a value, or absent, is left alone.
pub async fn drop_markers(store: &kv::Store, keys: impl IntoIterator<Item = String>) -> Result<usize, RouterError> {
    let failed = |e: &dyn std::fmt::Display| RouterError::jetstream(format!("removing markers in {}", store.name), e);
    let mut markers = Vec::new();
    for key in keys {
        if let Some(entry) = store.entry(key.as_str()).await.map_err(|e| failed(&e))?
            && entry.operation != kv::Operation::Put
        {
            markers.push((key, entry.revision));
        }
    }
    if markers.is_empty() {
        return Ok(0);
    }
    if !watchers_caught_up(store).await? {
        tracing::warn!(
            bucket = %store.name,
            markers = markers.len(),
            "a consumer of the bucket did not receive the purges in time: their markers are kept"
        );
        return Ok(0);
    }
    for (key, revision) in &markers {
        store
            .stream
            .purge()
            .filter(format!("{}{key}", store.prefix))
            .sequence(revision.saturating_add(1))
            .await
            .map_err(|e| failed(&e))?;
    }
    Ok(markers.len())
}

/// Whether every watcher of the bucket's stream has nothing pending,
/// waiting up to [`WATCHERS_WAIT`]: a watcher must see a purge before its
/// marker goes, or it would keep the key in its cache.
async fn watchers_caught_up(store: &kv::Store) -> Result<bool, RouterError> {
    let deadline = tokio::time::Instant::now() + WATCHERS_WAIT;
    loop {
        let mut behind = false;
        let mut consumers = store.stream.consumers();
        while let Some(info) = consumers.next().await {
            match info {
                // Only watchers (push consumers with a subscriber) count:
                // a pull consumer reads on demand, and one whose reader
                // went away (a finished `nats kv ls`) would never catch up.
                Ok(info) => behind |= info.push_bound && info.num_pending > 0,
                // Gone between the listing and its info: nothing to wait for.
                Err(e) => tracing::debug!(error = %e, "a consumer's info could not be read"),
            }
        }
        if !behind {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
