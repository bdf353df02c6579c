//! `guichet identity rekey`: moving an identity bucket to the configured
//! key (see [`guichet_core::privacy`]), from plain (unkeyed) identity keys
//! or from a previous key (rotation).
//!
//! A plain key is `<kind>.<sha256("<kind>:<value>")>`; its keyed successor
//! is HMAC(key, that digest), computed from the old key alone: no address
//! or phone number is needed, none is read.
//!
//! A key written with a previous secret cannot be undone (that is the
//! point of a keyed hash): the successor of each is found from the
//! identifiers in clear that the journal (`ROUTED`) holds, every key of a
//! person having been created while routing one of their contacts. A key
//! whose contacts have all left the journal (`topology.routed_max_age`,
//! or erased) cannot be migrated: it is counted, left in place, and that
//! person is a new usager at their next contact.
//!
//! Two passes, each step safe to repeat, so that the command can be
//! interrupted anywhere and run again to the same final state:
//! 1. every plain identifier key: the keyed key is created pointing at the
//!    same usager (already there with that usager: nothing to do), then the
//!    plain key is purged, only if it still holds the revision read
//!    (a merge that re-pointed it meanwhile is left for the next run);
//! 2. every `usager.<U>` record: the plain keys it lists (and the levels
//!    it holds them at) are replaced by their keyed successors (compare-and-set on the record's revision).
//!
//! Routers running meanwhile with the new key do not find a person whose
//! key is not migrated yet and create a new usager for them; when the
//! migration then finds that keyed key taken by another usager it keeps
//! it, and reports the pair to review (`guichet usager merge`). Stop the
//! routers during a rekey to avoid this.

use std::collections::HashMap;

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use bytes::Bytes;
use futures::TryStreamExt;
use guichet_core::{Bus, bus::subjects, privacy::Pseudonymizer, proto::v1::Routed};
use prost::Message;

use crate::{
    RouterError,
    identity::{self, UsagerRecord},
};

/// What the bucket's keys were written with.
#[derive(Debug, Clone)]
pub enum OldKeys {
    /// Plain SHA-256 (before keyed pseudonyms existed).
    PlainHash,
    /// A previous `privacy.pseudonym_key`.
    Key(Pseudonymizer),
}

/// Old key → its successor under the configured key.
enum Successors<'a> {
    Plain(&'a Pseudonymizer),
    Known {
        old: &'a Pseudonymizer,
        map: HashMap<String, String>,
    },
}

impl Successors<'_> {
    /// Whether `key` was written with the old keys.
    fn is_old(&self, key: &str) -> bool {
        match self {
            Successors::Plain(new) => new.rekey_plain(key).is_some(),
            Successors::Known { old, .. } => old.is_current(key),
        }
    }

    fn of(&self, key: &str) -> Option<String> {
        match self {
            Successors::Plain(new) => new.rekey_plain(key),
            Successors::Known { map, .. } => map.get(key).cloned(),
        }
    }
}

/// What a rekey did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RekeyReport {
    /// Old keys replaced by keys under the configured key in this run.
    pub keys_migrated: usize,
    /// Records whose list of keys was rewritten.
    pub records_updated: usize,
    /// Old keys left (changed meanwhile, or past `limit`): run again.
    pub keys_left: usize,
    /// Old keys whose identifier is in no routed contact any more
    /// (rotation only): left in place, cannot be migrated.
    pub keys_unknown: usize,
    /// `(usager of the plain key, usager of the keyed key)` when the keyed
    /// key already pointed elsewhere: one person under two ids, to review.
    pub conflicts: Vec<(String, String)>,
}

/// Migrates plain identity keys to `keys`. `limit` stops after that many
/// keys (before the records pass): what an interrupted run leaves.
pub async fn rekey_plain(bus: &Bus, keys: &Pseudonymizer, limit: Option<usize>) -> Result<RekeyReport, RouterError> {
    rekey(bus, keys, &OldKeys::PlainHash, limit).await
}

/// Migrates the identity keys written with `from` to `keys`; `limit` as
/// for [`rekey_plain`].
pub async fn rekey(
    bus: &Bus,
    keys: &Pseudonymizer,
    from: &OldKeys,
    limit: Option<usize>,
) -> Result<RekeyReport, RouterError> {
    let successors = match from {
        OldKeys::PlainHash => Successors::Plain(keys),
        OldKeys::Key(old) if old == keys => {
            return Err(RouterError::Identity(
                "the previous key is the configured key: nothing to rotate".into(),
            ));
        }
        OldKeys::Key(old) => Successors::Known {
            old,
            map: journal_successors(bus, old, keys).await?,
        },
    };
    let kv = &bus.stores().identity;
    let all: Vec<String> = kv
        .keys()
        .await
        .map_err(|e| RouterError::identity_store("listing identity keys", e))?
        .try_collect()
        .await
        .map_err(|e| RouterError::identity_store("listing identity keys", e))?;
    let mut report = RekeyReport::default();
    for old in all.iter().filter(|k| successors.is_old(k)) {
        let Some(new) = successors.of(old) else {
            report.keys_unknown += 1;
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
        if rewrite_record(kv, &successors, key).await? {
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
async fn rewrite_record(kv: &kv::Store, successors: &Successors<'_>, key: &str) -> Result<bool, RouterError> {
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
            let id = successors
                .of(id)
                .inspect(|_| changed = true)
                .unwrap_or_else(|| id.clone());
            if !identifiers.contains(&id) {
                identifiers.push(id);
            }
        }
        // The levels they are held at follow them.
        let levels = std::mem::take(&mut record.levels);
        for (id, level) in levels {
            let id = successors.of(&id).inspect(|_| changed = true).unwrap_or(id);
            let held = record.levels.entry(id).or_default();
            *held = (*held).max(level);
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

/// The successor of every old key whose identifier a routed contact of
/// the journal carries, read once with core's scan (nothing kept but the
/// map: about 200 bytes per identifier).
async fn journal_successors(
    bus: &Bus,
    old: &Pseudonymizer,
    new: &Pseudonymizer,
) -> Result<HashMap<String, String>, RouterError> {
    let mut map = HashMap::new();
    bus.scan(subjects::ROUTED_STREAM, subjects::ROUTED_ALL, |message| {
        if let Ok(routed) = Routed::decode(message.payload.clone())
            && let Some(contact) = routed.contact
        {
            for id in identity::claims(&contact).0 {
                map.insert(old.identity_key(&id), new.identity_key(&id));
            }
        }
    })
    .await?;
    Ok(map)
}
