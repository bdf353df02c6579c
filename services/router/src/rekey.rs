//! `guichet identity rekey`: moving an identity bucket written with plain
//! (unkeyed) identity keys to keyed ones (see [`guichet_core::privacy`]).
//!
//! A plain key is `<kind>.<sha256("<kind>:<value>")>`; its keyed successor
//! is HMAC(key, that digest), computed from the old key alone: no address
//! or phone number is needed, none is read.
//!
//! Two passes, each step safe to repeat, so that the command can be
//! interrupted anywhere and run again to the same final state:
//! 1. every plain identifier key: the keyed key is created pointing at the
//!    same usager (already there with that usager: nothing to do), then the
//!    plain key is purged, only if it still holds the revision read
//!    (a merge that re-pointed it meanwhile is left for the next run);
//! 2. every `usager.<U>` record: the plain keys it lists are replaced by
//!    their keyed successors (compare-and-set on the record's revision).
//!
//! Routers running meanwhile with the new key do not find a person whose
//! key is not migrated yet and create a new usager for them; when the
//! migration then finds that keyed key taken by another usager it keeps
//! it, and reports the pair to review (`guichet usager merge`). Stop the
//! routers during a rekey to avoid this.

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use bytes::Bytes;
use futures::TryStreamExt;
use guichet_core::{Bus, privacy::Pseudonymizer};

use crate::{RouterError, identity::UsagerRecord};

/// What a rekey did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RekeyReport {
    /// Plain keys replaced by keyed ones in this run.
    pub keys_migrated: usize,
    /// Records whose list of keys was rewritten.
    pub records_updated: usize,
    /// Plain keys left (changed meanwhile, or past `limit`): run again.
    pub keys_left: usize,
    /// `(usager of the plain key, usager of the keyed key)` when the keyed
    /// key already pointed elsewhere: one person under two ids, to review.
    pub conflicts: Vec<(String, String)>,
}

/// Migrates plain identity keys to `keys`. `limit` stops after that many
/// keys (before the records pass): what an interrupted run leaves.
pub async fn rekey_plain(bus: &Bus, keys: &Pseudonymizer, limit: Option<usize>) -> Result<RekeyReport, RouterError> {
    let kv = &bus.stores().identity;
    let all: Vec<String> = kv
        .keys()
        .await
        .map_err(|e| RouterError::identity_store("listing identity keys", e))?
        .try_collect()
        .await
        .map_err(|e| RouterError::identity_store("listing identity keys", e))?;
    let mut report = RekeyReport::default();
    for old in &all {
        let Some(new) = keys.rekey_plain(old) else {
            continue;
        };
        if limit.is_some_and(|limit| report.keys_migrated >= limit) {
            report.keys_left += 1;
            continue;
        }
        if migrate_key(kv, old, &new, &mut report).await? {
            report.keys_migrated += 1;
        } else {
            report.keys_left += 1;
        }
    }
    if report.keys_left > 0 && limit.is_some() {
        return Ok(report);
    }
    for key in all.iter().filter(|k| k.starts_with("usager.")) {
        if rewrite_record(kv, keys, key).await? {
            report.records_updated += 1;
        }
    }
    Ok(report)
}

/// One plain key: keyed successor created, then the plain key purged.
/// `false` when it changed meanwhile (left for the next run).
async fn migrate_key(kv: &kv::Store, old: &str, new: &str, report: &mut RekeyReport) -> Result<bool, RouterError> {
    let entry = kv
        .entry(old)
        .await
        .map_err(|e| RouterError::identity_store("reading a plain identity key", e))?;
    let Some(entry) = entry.filter(|e| e.operation == Operation::Put) else {
        // Purged meanwhile (or by an earlier run): nothing left to move.
        return Ok(true);
    };
    let usager = String::from_utf8_lossy(&entry.value).trim().to_owned();
    match kv.create(new, Bytes::from(usager.clone())).await {
        Ok(_) => {}
        Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {
            let there = kv
                .get(new)
                .await
                .map_err(|e| RouterError::identity_store("reading a keyed identity key", e))?
                .map(|v| String::from_utf8_lossy(&v).trim().to_owned());
            if let Some(there) = there
                && there != usager
            {
                tracing::warn!(plain = %usager, keyed = %there, "identity rekey: the keyed key already points at another usager; kept it");
                report.conflicts.push((usager.clone(), there));
            }
        }
        Err(e) => return Err(RouterError::identity_store("creating a keyed identity key", e)),
    }
    match kv.purge_expect_revision(old, Some(entry.revision)).await {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(false),
        Err(e) => Err(RouterError::identity_store("purging a plain identity key", e)),
    }
}

/// Replaces the plain keys a record lists; `true` when it was rewritten.
async fn rewrite_record(kv: &kv::Store, keys: &Pseudonymizer, key: &str) -> Result<bool, RouterError> {
    // Bounded: a record updated this often meanwhile is left for the next run.
    for _ in 0..8 {
        let Some(entry) = kv
            .entry(key)
            .await
            .map_err(|e| RouterError::identity_store("reading a usager record", e))?
            .filter(|e| e.operation == Operation::Put)
        else {
            return Ok(false);
        };
        let Ok(mut record) = serde_json::from_slice::<UsagerRecord>(&entry.value) else {
            tracing::warn!(key, "identity rekey: not a usager record; left as is");
            return Ok(false);
        };
        let mut changed = false;
        let mut identifiers = Vec::with_capacity(record.identifiers.len());
        for id in &record.identifiers {
            let id = keys
                .rekey_plain(id)
                .inspect(|_| changed = true)
                .unwrap_or_else(|| id.clone());
            if !identifiers.contains(&id) {
                identifiers.push(id);
            }
        }
        if !changed {
            return Ok(false);
        }
        record.identifiers = identifiers;
        let value =
            serde_json::to_vec(&record).map_err(|e| RouterError::Identity(format!("encoding a record: {e}")))?;
        match kv.update(key, Bytes::from(value), entry.revision).await {
            Ok(_) => return Ok(true),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => continue,
            Err(e) => return Err(RouterError::identity_store("updating a usager record", e)),
        }
    }
    Err(RouterError::identity_store(
        "updating a usager record",
        "too many concurrent updates; run the rekey again",
    ))
}
