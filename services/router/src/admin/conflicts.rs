//! `guichet usager conflicts` and `guichet usager resolve ID merge|distinct`:
//! reviewing the identity conflicts the routers recorded
//! ([`crate::identity_conflicts`]) and deciding them.

use bytes::Bytes;
use chrono::Utc;
use guichet_core::{
    Bus,
    bus::subjects::{self, is_token},
};

use super::merge::{MergeReport, merge};
use crate::{
    RouterError,
    identity_conflicts::{self, ConflictRecord, Status},
};

/// The conflicts waiting for a decision, oldest first.
pub async fn conflicts(bus: &Bus) -> Result<Vec<ConflictRecord>, RouterError> {
    let mut open: Vec<ConflictRecord> = identity_conflicts::list(bus)
        .await?
        .into_iter()
        .filter(|c| c.status == Status::Open)
        .collect();
    open.sort_by(|a, b| (&a.first_at, &a.id).cmp(&(&b.first_at, &b.id)));
    Ok(open)
}

/// What an operator decided about a conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// One person: `guichet usager merge KEPT OTHER`.
    Merge,
    /// Two people: the pair is never raised again.
    Distinct,
}

/// What `guichet usager resolve` did.
#[derive(Debug, Clone)]
pub struct ResolveReport {
    pub conflict: ConflictRecord,
    /// The merge, for [`Decision::Merge`].
    pub merge: Option<MergeReport>,
    /// The conflict had already been resolved so: nothing changed.
    pub already: bool,
}

/// Decides the conflict `id` (as `guichet usager conflicts` lists it).
/// `Merge` merges the other usager into the one the router kept, as
/// `guichet usager merge` does (which closes the conflict); `Distinct`
/// records two people. Repeating a decision changes nothing; the other
/// decision after one is refused.
pub async fn resolve(bus: &Bus, id: &str, decision: Decision) -> Result<ResolveReport, RouterError> {
    let valid = id.split_once('.').is_some_and(|(a, b)| is_token(a) && is_token(b));
    if !valid {
        return Err(RouterError::Invalid(format!(
            "`{}` is not a conflict id (two usager ids joined by a dot, as `guichet usager conflicts` lists them)",
            id.escape_default()
        )));
    }
    let kv = &bus.stores().identity;
    let Some((record, _)) = identity_conflicts::read(kv, id).await? else {
        return Err(RouterError::NotFound(format!(
            "no identity conflict `{id}` (see `guichet usager conflicts`)"
        )));
    };
    let (conflict, merged, already) = match decision {
        Decision::Distinct => {
            let (conflict, already) = identity_conflicts::settle(kv, id, Status::Distinct).await?;
            (conflict, None, already)
        }
        Decision::Merge if record.status == Status::Merged => (record, None, true),
        Decision::Merge if record.status == Status::Distinct => {
            return Err(RouterError::Invalid(format!(
                "conflict {id} was already resolved as distinct; a decision is not undone here"
            )));
        }
        Decision::Merge => {
            let report = merge(bus, &record.kept.usager_id, &record.other.usager_id).await?;
            let (conflict, _) = identity_conflicts::settle(kv, id, Status::Merged).await?;
            (conflict, Some(report), false)
        }
    };
    if !already {
        let event = serde_json::json!({
            "kind": "identity_conflict_resolved",
            "conflict": conflict.id,
            "kept": conflict.kept.usager_id,
            "other": conflict.other.usager_id,
            "decision": conflict.status.as_str(),
            "at": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        });
        bus.publish(
            subjects::event("identity_conflict_resolved"),
            &format!("conflict-{}-{}", conflict.id, conflict.status.as_str()),
            Bytes::from(event.to_string()),
        )
        .await?;
    }
    Ok(ResolveReport {
        conflict,
        merge: merged,
        already,
    })
}
