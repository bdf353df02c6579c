//! Claiming a KV key once, in a way that holds on replicated buckets.
//!
//! async-nats's `create` is a write expecting revision 0 followed, when
//! that fails, by a read to tell "the key exists" from other failures.
//! With `allow_direct` (our buckets) that read may be answered by a
//! replica that has not applied the winning write yet, and the lost race
//! then surfaces as an opaque error (`wrong last sequence`) instead of
//! "already exists". Here the write is followed, on any failure, by a
//! read from the stream leader, which has every acknowledged write: the
//! key is either ours (a write whose answer was lost), someone else's
//! (a lost race, with the holder's value), free (a tombstone: written
//! again over it), or not there yet (a competing write proposed and not
//! yet applied, which a cluster refuses ours for: tried again shortly).
//!
//! [`revise`] is the same care for a read-modify-write of an existing key:
//! a refused compare-and-set (`wrong last sequence`, 10071, or 10164 for a
//! competing write in flight) is decided again on the leader's value, so
//! that a race costs a retry, not a failure.

use async_nats::jetstream::{kv, stream::LastRawMessageErrorKind};
use std::time::Duration;

use bytes::Bytes;

use crate::Error;

/// The outcome of [`claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key now holds our value, at this revision.
    Won(u64),
    /// Another writer holds the key: its value and revision, read from
    /// the stream leader.
    Held { value: Bytes, revision: u64 },
}

/// The last entry of `key` as the stream leader has it (not a direct get,
/// which any replica may answer): value, revision, and whether it is a
/// tombstone (deleted or purged).
pub async fn leader_entry(kv: &kv::Store, key: &str) -> Result<Option<(Bytes, u64, bool)>, Error> {
    let subject = format!("{}{key}", kv.prefix);
    match kv.stream.get_last_raw_message_by_subject(&subject).await {
        Ok(message) => {
            let operation = message
                .headers
                .get("KV-Operation")
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default();
            let tombstone = matches!(operation.as_str(), "DEL" | "PURGE");
            Ok(Some((message.payload, message.sequence, tombstone)))
        }
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(Error::store(
            &kv.name,
            format!("reading {key} from the stream leader: {e}"),
        )),
    }
}

/// Writes `value` under `key` unless the key already holds a value.
///
/// A lost race is [`Claim::Held`] whatever the server said about the
/// refused write. An error means the outcome is unknown (NATS away): the
/// caller retries, and a retry finds its own value as [`Claim::Won`] if
/// the first write did land — so values must be unique per writer (a new
/// usager id, a record naming it).
pub async fn claim(kv: &kv::Store, key: &str, value: Bytes) -> Result<Claim, Error> {
    let mut expected = 0;
    // Bounded: a key deleted and written again between our tries, or a
    // competing write still in flight.
    for attempt in 0..6u32 {
        let refused = match kv.update(key, value.clone(), expected).await {
            Ok(revision) => return Ok(Claim::Won(revision)),
            Err(e) => e,
        };
        let held = match leader_entry(kv, key).await {
            Ok(held) => held,
            // The leader cannot be asked: report the write's own error.
            Err(_) => return Err(Error::store(&kv.name, format!("claiming {key}: {refused}"))),
        };
        match held {
            Some((held, revision, false)) if held == value => return Ok(Claim::Won(revision)),
            Some((held, revision, false)) => return Ok(Claim::Held { value: held, revision }),
            // Deleted or purged: free, written over its tombstone.
            Some((_, revision, true)) => expected = revision,
            // Refused, yet the leader has nothing: on a cluster, another
            // write of the key is proposed and not yet applied (NATS
            // refuses ours with `wrong last sequence`, error 10164, not
            // the usual 10071). A moment later the leader has it.
            None => {
                expected = 0;
                tokio::time::sleep(Duration::from_millis(10 << attempt)).await;
            }
        }
    }
    Err(Error::store(
        &kv.name,
        format!(
            "claiming {key}: refused, yet not found on the stream leader after 6 tries (written and removed concurrently?); retry"
        ),
    ))
}

/// What [`revise`]'s `change` makes of a key's current value.
#[derive(Debug)]
pub enum Change<T> {
    /// Write this value, then return `T`.
    Write(Bytes, T),
    /// Leave the key as it is and return `T` (nothing to change).
    Keep(T),
}

/// Bounded: each refusal means another writer's change landed (or was in
/// flight). Ten would do for ten writers taking turns, but writers that
/// retry in step can all lose the same round again on a loaded cluster:
/// the margin, with a random pause after each loss, breaks the step.
pub const REVISE_TRIES: u32 = 24;

/// Changes the value of `key` with `change`, compare-and-set on its
/// revision. `known` is the value and revision the caller has (read now
/// if `None`); after a refused write `change` decides again on the value
/// the stream leader has (another writer went first, or a read answered
/// by a replica behind the leader), pausing when the leader has nothing
/// newer (a competing write still in flight), up to [`REVISE_TRIES`] times.
///
/// `Ok(None)` when the key is absent, deleted or purged. `change` must
/// give the same outcome when shown its own write (a write whose answer
/// was lost is then found done).
pub async fn revise<T, E: From<Error>>(
    kv: &kv::Store,
    key: &str,
    known: Option<(Bytes, u64)>,
    mut change: impl FnMut(&Bytes) -> Result<Change<T>, E>,
) -> Result<Option<T>, E> {
    let mut current = match known {
        Some(known) => Some(known),
        None => kv
            .entry(key)
            .await
            .map_err(|e| Error::store(&kv.name, format!("reading {key}: {e}")))?
            .filter(|entry| entry.operation == kv::Operation::Put)
            .map(|entry| (entry.value, entry.revision)),
    };
    let mut refused = String::new();
    for attempt in 0..REVISE_TRIES {
        let Some((value, revision)) = current else {
            return Ok(None);
        };
        let (write, out) = match change(&value)? {
            Change::Keep(out) => return Ok(Some(out)),
            Change::Write(write, out) => (write, out),
        };
        match kv.update(key, write, revision).await {
            Ok(_) => return Ok(Some(out)),
            Err(e) => refused = e.to_string(),
        }
        current = match leader_entry(kv, key).await {
            Ok(Some((value, newer, false))) => {
                if newer == revision {
                    // Nothing newer: a competing write still in flight.
                    tokio::time::sleep(Duration::from_millis(10 << attempt.min(5))).await;
                } else {
                    // Another writer won: a random pause so that those who
                    // lost with us do not all come back at the same instant.
                    let most = 5 * u64::from(attempt.min(8) + 1);
                    tokio::time::sleep(Duration::from_millis(rand::random::<u64>() % most)).await;
                }
                Some((value, newer))
            }
            Ok(_) => None,
            // The leader cannot be asked: report the write's own error.
            Err(_) => return Err(Error::store(&kv.name, format!("updating {key}: {refused}")).into()),
        };
    }
    Err(Error::store(
        &kv.name,
        format!("updating {key}: refused {REVISE_TRIES} times (last: {refused}); too many concurrent updates, retry"),
    )
    .into())
}

/// Reads `key` from the stream leader as a KV entry would: `None` when
/// absent or deleted, else its value and revision.
pub async fn leader_value(kv: &kv::Store, key: &str) -> Result<Option<(Bytes, u64)>, Error> {
    Ok(match leader_entry(kv, key).await? {
        Some((value, revision, false)) => Some((value, revision)),
        _ => None,
    })
}
