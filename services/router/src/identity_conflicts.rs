//! Open identity conflicts, durable and cluster-safe, and the decisions
//! that close them.
//!
//! When a contact's identifiers designate two usagers and their levels do
//! not settle it ([`crate::identity`]), the pair is recorded under one key
//! of the identity bucket, `conflict.<A>.<B>` (the two ids in order, so
//! every router meeting the pair writes the same key), compare-and-set:
//! two routers meeting it at once count their contacts once each and
//! never overwrite a decision. `guichet usager resolve` closes it:
//! `merged` (the two were one person: see [`crate::admin::merge`]) or
//! `distinct` (two people: the router never raises the pair again). The
//! record holds usager ids, identifier kinds, levels, contact ids and
//! times: nothing personal.

use std::time::Duration;

use async_nats::jetstream::kv::{self, UpdateErrorKind};
use bytes::Bytes;
use chrono::Utc;
use guichet_core::{
    Bus,
    bus::{claim, subjects},
};
use serde::{Deserialize, Serialize};

use crate::{RouterError, levels::Level};

/// How many contact ids a record keeps (the latest): enough to `explain`
/// a few, and to count a redelivered contact once.
const RECENT_CONTACTS: usize = 20;

/// The id of the conflict between two usagers: both ids, in order,
/// joined by a dot (usager ids have none).
pub fn conflict_id(a: &str, b: &str) -> String {
    if a <= b { format!("{a}.{b}") } else { format!("{b}.{a}") }
}

/// The key of a conflict in the identity bucket.
pub fn conflict_key(id: &str) -> String {
    format!("conflict.{id}")
}

/// Where a conflict stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Waiting for an operator.
    Open,
    /// Two people: never raised again.
    Distinct,
    /// One person: merged (the pair cannot meet again).
    Merged,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Distinct => "distinct",
            Status::Merged => "merged",
        }
    }
}

/// One usager of a conflict: the identifier kinds that designated them
/// in the contacts met, and the highest level among those.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Side {
    pub usager_id: String,
    pub kinds: Vec<String>,
    pub level: Level,
}

/// `conflict.<A>.<B>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictRecord {
    pub id: String,
    /// The usager the router routed the first contact to.
    pub kept: Side,
    pub other: Side,
    pub status: Status,
    /// RFC 3339.
    pub first_at: String,
    pub last_at: String,
    /// Contacts that met the pair while the conflict was open.
    pub contacts: u64,
    /// The latest of those contacts' ids.
    pub recent_contacts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<String>,
}

/// What [`record`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// The conflict is open (`first`: this contact opened it).
    Open { first: bool },
    /// An operator settled the pair: not a conflict any more.
    Settled(Status),
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Records that `contact_id` met `kept` and `other`: opens their conflict,
/// or counts the contact in the open one, or reports the decision that
/// settled the pair.
pub async fn record(kv: &kv::Store, contact_id: &str, kept: Side, other: Side) -> Result<Recorded, RouterError> {
    let id = conflict_id(&kept.usager_id, &other.usager_id);
    let mut outcome = Recorded::Open { first: false };
    update(kv, &id, |current| match current {
        None => {
            outcome = Recorded::Open { first: true };
            let at = now();
            Some(ConflictRecord {
                id: id.clone(),
                kept: kept.clone(),
                other: other.clone(),
                status: Status::Open,
                first_at: at.clone(),
                last_at: at,
                contacts: 1,
                recent_contacts: vec![contact_id.to_owned()],
                resolved_at: None,
            })
        }
        Some(record) if record.status != Status::Open => {
            outcome = Recorded::Settled(record.status);
            None
        }
        Some(record) => {
            outcome = Recorded::Open { first: false };
            let mut record = record.clone();
            let mut changed = false;
            for side in [&kept, &other] {
                let held = if record.kept.usager_id == side.usager_id {
                    &mut record.kept
                } else {
                    &mut record.other
                };
                for kind in &side.kinds {
                    if !held.kinds.contains(kind) {
                        held.kinds.push(kind.clone());
                        changed = true;
                    }
                }
                if side.level > held.level {
                    held.level = side.level;
                    changed = true;
                }
            }
            if !record.recent_contacts.iter().any(|c| c == contact_id) {
                record.contacts += 1;
                record.recent_contacts.push(contact_id.to_owned());
                let excess = record.recent_contacts.len().saturating_sub(RECENT_CONTACTS);
                record.recent_contacts.drain(..excess);
                record.last_at = now();
                changed = true;
            }
            changed.then_some(record)
        }
    })
    .await?;
    Ok(outcome)
}

/// Closes the open conflict `id` as `status`. Returns the record as
/// written and whether it already had that status (a repeated command).
pub async fn settle(kv: &kv::Store, id: &str, status: Status) -> Result<(ConflictRecord, bool), RouterError> {
    let mut refused = None;
    let mut already = false;
    let mut missing = false;
    let written = update(kv, id, |current| match current {
        None => {
            missing = true;
            None
        }
        Some(record) if record.status == status => {
            already = true;
            None
        }
        Some(record) if record.status != Status::Open => {
            refused = Some(record.status);
            None
        }
        Some(record) => Some(ConflictRecord {
            status,
            resolved_at: Some(now()),
            ..record.clone()
        }),
    })
    .await?;
    if missing {
        return Err(RouterError::NotFound(format!(
            "no identity conflict `{id}` (see `guichet usager conflicts`)"
        )));
    }
    if let Some(was) = refused {
        return Err(RouterError::Invalid(format!(
            "conflict {id} was already resolved as {}; a decision is not undone here",
            was.as_str()
        )));
    }
    let record = written.ok_or_else(|| RouterError::NotFound(format!("no identity conflict `{id}`")))?;
    Ok((record, already))
}

/// Reads a conflict from the stream leader, with its revision.
pub async fn read(kv: &kv::Store, id: &str) -> Result<Option<(ConflictRecord, u64)>, RouterError> {
    let key = conflict_key(id);
    let Some((value, revision)) = claim::leader_value(kv, &key)
        .await
        .map_err(|e| RouterError::identity_store("reading an identity conflict", e))?
    else {
        return Ok(None);
    };
    let record = serde_json::from_slice(&value)
        .map_err(|e| RouterError::Identity(format!("{key} is not an identity conflict ({e}); fix or purge it")))?;
    Ok(Some((record, revision)))
}

/// Applies `change` to the conflict `id` (compare-and-set, `None` from
/// `change`: nothing to write). Returns the record as it now stands.
async fn update(
    kv: &kv::Store,
    id: &str,
    mut change: impl FnMut(Option<&ConflictRecord>) -> Option<ConflictRecord>,
) -> Result<Option<ConflictRecord>, RouterError> {
    let key = conflict_key(id);
    for _ in 0..16 {
        let current = read(kv, id).await?;
        let Some(next) = change(current.as_ref().map(|(r, _)| r)) else {
            return Ok(current.map(|(r, _)| r));
        };
        let value = Bytes::from(
            serde_json::to_vec(&next).map_err(|e| RouterError::Identity(format!("encoding a conflict: {e}")))?,
        );
        let written = match current {
            Some((_, revision)) => match kv.update(key.as_str(), value, revision).await {
                Ok(_) => true,
                // Another writer meanwhile (10164 on a cluster is `Other`).
                Err(e) if matches!(e.kind(), UpdateErrorKind::WrongLastRevision | UpdateErrorKind::Other) => false,
                Err(e) => return Err(RouterError::identity_store("writing an identity conflict", e)),
            },
            None => matches!(
                claim::claim(kv, &key, value)
                    .await
                    .map_err(|e| RouterError::identity_store("writing an identity conflict", e))?,
                claim::Claim::Won(_)
            ),
        };
        if written {
            return Ok(Some(next));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(RouterError::identity_store(
        "writing an identity conflict",
        "too many concurrent updates; retry",
    ))
}

/// Every conflict recorded, in any status, ordered by id.
pub async fn list(bus: &Bus) -> Result<Vec<ConflictRecord>, RouterError> {
    let stream = format!("KV_{}", subjects::IDENTITY_BUCKET);
    let prefix = format!("$KV.{}.", subjects::IDENTITY_BUCKET);
    let filter = format!("{prefix}{}", conflict_key(">"));
    // The bucket may keep several revisions of a key: the last one counts,
    // and an empty one is a delete or purge marker.
    let mut latest = std::collections::BTreeMap::new();
    bus.scan(&stream, &filter, |message| {
        let key = message.subject.trim_start_matches(prefix.as_str()).to_owned();
        match serde_json::from_slice::<ConflictRecord>(message.payload) {
            Ok(record) => latest.insert(key, Some(record)),
            Err(_) => latest.insert(key, None),
        };
    })
    .await?;
    Ok(latest.into_values().flatten().collect())
}

/// The keys of the conflicts that name one of `usager_ids` (for erasure).
pub async fn keys_naming(bus: &Bus, usager_ids: &[String]) -> Result<Vec<String>, RouterError> {
    Ok(list(bus)
        .await?
        .into_iter()
        .filter(|r| {
            usager_ids
                .iter()
                .any(|u| *u == r.kept.usager_id || *u == r.other.usager_id)
        })
        .map(|r| conflict_key(&r.id))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_has_one_id_whichever_usager_comes_first() {
        assert_eq!(conflict_id("UB", "UA"), "UA.UB");
        assert_eq!(conflict_id("UA", "UB"), "UA.UB");
        assert_eq!(conflict_key("UA.UB"), "conflict.UA.UB");
    }
}
