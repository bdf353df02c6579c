//! Usager records, `usager.<U>` in the identity bucket: the identity
//! keys (keyed hashes) that point at a usager and the level each is held
//! at. Written compare-and-set, since routers, merges and erasures change
//! them at once; read from the stream leader when a write depends on them.

use std::collections::{BTreeMap, BTreeSet};

use async_nats::jetstream::kv::{self, Operation, UpdateErrorKind};
use bytes::Bytes;
use chrono::Utc;
use guichet_core::{
    Bus,
    bus::{
        claim::{self, Claim},
        usagers::record_key,
    },
};
use serde::{Deserialize, Serialize};

use crate::{RouterError, levels::Level};

/// A usager's record, `usager.<U>` in the identity bucket.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct UsagerRecord {
    pub usager_id: String,
    /// RFC 3339.
    pub created_at: String,
    /// The identity keys (hashed identifiers) that point at this usager.
    pub identifiers: Vec<String>,
    /// The level each identity key is held at, when above declared: the
    /// highest it was ever claimed at for this usager.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub levels: BTreeMap<String, Level>,
}

/// Takes `keys` out of `usager_id`'s record (compare-and-set against
/// routers adding identifiers meanwhile); a record left with none is
/// removed when `remove_empty`. Whether the record changed.
pub(crate) async fn remove_from_record(
    kv: &kv::Store,
    usager_id: &str,
    keys: &BTreeSet<String>,
    remove_empty: bool,
) -> Result<bool, RouterError> {
    let key = record_key(usager_id);
    for _ in 0..8 {
        let Some((mut record, revision)) = read_record_from_leader(kv, usager_id).await? else {
            return Ok(false);
        };
        let before = record.identifiers.len();
        record.identifiers.retain(|k| !keys.contains(k));
        record.levels.retain(|k, _| !keys.contains(k));
        if record.identifiers.len() == before {
            return Ok(false);
        }
        let written = if record.identifiers.is_empty() && remove_empty {
            kv.purge_expect_revision(key.as_str(), Some(revision)).await
        } else {
            let value =
                serde_json::to_vec(&record).map_err(|e| RouterError::Identity(format!("encoding a record: {e}")))?;
            kv.update(key.as_str(), Bytes::from(value), revision).await.map(|_| ())
        };
        match written {
            Ok(()) => return Ok(true),
            // 10164 (a competing write in flight on a cluster) is `Other`.
            Err(e) if matches!(e.kind(), UpdateErrorKind::WrongLastRevision | UpdateErrorKind::Other) => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            Err(e) => return Err(RouterError::identity_store("taking identifiers out of a record", e)),
        }
    }
    Err(RouterError::identity_store(
        "taking identifiers out of a record",
        "too many concurrent updates; retry",
    ))
}

/// Removes the record of an id that lost the race for its person.
pub(crate) async fn remove_record(kv: &kv::Store, usager_id: &str) -> Result<(), RouterError> {
    kv.purge(record_key(usager_id))
        .await
        .map_err(|e| RouterError::identity_store("removing the record of an id that lost its race", e))
}

pub(crate) async fn put_record(kv: &kv::Store, record: &UsagerRecord) -> Result<(), RouterError> {
    let value = serde_json::to_vec(record).map_err(|e| RouterError::Identity(format!("encoding a record: {e}")))?;
    kv.put(record_key(&record.usager_id), Bytes::from(value))
        .await
        .map_err(|e| RouterError::identity_store("writing a usager record", e))?;
    Ok(())
}

/// Reads a usager's record and its revision (`None`: no record).
pub async fn read_record(bus: &Bus, usager_id: &str) -> Result<Option<(UsagerRecord, u64)>, RouterError> {
    read_record_in(&bus.stores().identity, usager_id).await
}

pub(crate) async fn read_record_in(
    kv: &kv::Store,
    usager_id: &str,
) -> Result<Option<(UsagerRecord, u64)>, RouterError> {
    let key = record_key(usager_id);
    let entry = kv
        .entry(key.as_str())
        .await
        .map_err(|e| RouterError::identity_store("reading a usager record", e))?;
    match entry {
        Some(entry) if entry.operation == Operation::Put => {
            let record: UsagerRecord = serde_json::from_slice(&entry.value)
                .map_err(|e| RouterError::Identity(format!("{key} is not a usager record ({e}); fix or purge it")))?;
            Ok(Some((record, entry.revision)))
        }
        _ => Ok(None),
    }
}

/// A record as the stream leader has it: the revision a compare-and-set
/// must name (a replica may be behind).
pub(crate) async fn read_record_from_leader(
    kv: &kv::Store,
    usager_id: &str,
) -> Result<Option<(UsagerRecord, u64)>, RouterError> {
    let key = record_key(usager_id);
    let Some((value, revision)) = claim::leader_value(kv, &key)
        .await
        .map_err(|e| RouterError::identity_store("reading a usager record", e))?
    else {
        return Ok(None);
    };
    let record: UsagerRecord = serde_json::from_slice(&value)
        .map_err(|e| RouterError::Identity(format!("{key} is not a usager record ({e}); fix or purge it")))?;
    Ok(Some((record, revision)))
}

/// Adds identity keys to a record and raises the levels it holds keys
/// at (never lowers one) (compare-and-set, created if missing).
pub(crate) async fn add_to_record<'l>(
    kv: &kv::Store,
    usager_id: &str,
    keys: impl IntoIterator<Item = String>,
    levels: impl IntoIterator<Item = (&'l String, &'l Level)> + Clone,
) -> Result<(), RouterError> {
    let keys: Vec<String> = keys.into_iter().collect();
    for _ in 0..8 {
        let current = read_record_from_leader(kv, usager_id).await?;
        let (mut record, revision) = match current {
            Some((record, revision)) => (record, Some(revision)),
            None => (
                UsagerRecord {
                    usager_id: usager_id.to_owned(),
                    created_at: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    identifiers: Vec::new(),
                    levels: BTreeMap::new(),
                },
                None,
            ),
        };
        let mut changed = false;
        for key in &keys {
            if !record.identifiers.contains(key) {
                record.identifiers.push(key.clone());
                changed = true;
            }
        }
        for (key, level) in levels.clone() {
            let held = record.levels.entry(key.clone()).or_default();
            if *level > *held {
                *held = *level;
                changed = true;
            }
        }
        if revision.is_some() && !changed {
            return Ok(());
        }
        let value =
            Bytes::from(serde_json::to_vec(&record).map_err(|e| RouterError::Identity(format!("encoding: {e}")))?);
        let key = record_key(usager_id);
        let written = match revision {
            Some(revision) => match kv.update(key.as_str(), value, revision).await {
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => continue,
                // On a cluster, a competing update still in flight gets
                // ours refused with another code (10164): read the leader
                // again. A write of ours that did land is seen there.
                Err(e) if e.kind() == UpdateErrorKind::Other => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
                other => other.map(|_| ()).map_err(|e| e.to_string()),
            },
            None => match claim::claim(kv, &key, value).await {
                Ok(Claim::Won(_)) => Ok(()),
                Ok(Claim::Held { .. }) => continue,
                Err(e) => Err(e.to_string()),
            },
        };
        return written.map_err(|e| RouterError::identity_store("updating a usager record", e));
    }
    Err(RouterError::identity_store(
        "updating a usager record",
        "too many concurrent updates; retry",
    ))
}
