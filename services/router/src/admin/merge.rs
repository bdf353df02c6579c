//! `guichet usager merge`: one person known under two ids becomes one usager.

use async_nats::jetstream::kv;
use bytes::Bytes;
use chrono::Utc;
use guichet_core::{
    Bus,
    bus::{
        subjects,
        usagers::{alias_key, merged_key, record_key},
    },
};

use super::check_id;
use crate::{
    RouterError, identity,
    identity_conflicts::{self, Status},
    usager_records::add_to_record,
};

/// What `guichet usager merge A B` did.
#[derive(Debug, Clone)]
pub struct MergeReport {
    pub kept: String,
    pub merged: String,
    pub identifiers_moved: usize,
    /// The ids whose routed messages now make up the kept usager's history.
    pub history_ids: Vec<String>,
    /// B was already merged into A: the merge was only completed.
    pub already_merged: bool,
}

/// Merges usager `other` into `keep`: `other` becomes an alias of `keep`,
/// its identifiers point at `keep` (at the levels `other` held them),
/// `keep`'s history covers both, and their identity conflict, if one was
/// open, is resolved as merged.
pub async fn merge(bus: &Bus, keep: &str, other: &str) -> Result<MergeReport, RouterError> {
    check_id("KEEP", keep)?;
    check_id("OTHER", other)?;
    if keep == other {
        return Err(RouterError::Invalid("KEEP and OTHER are the same usager".into()));
    }
    let kv = &bus.stores().identity;
    let keep_canonical = bus.canonical_usager(keep).await?;
    if keep_canonical != keep {
        return Err(RouterError::Invalid(format!(
            "{keep} was itself merged into {keep_canonical}: merge into {keep_canonical} instead"
        )));
    }
    let other_canonical = bus.canonical_usager(other).await?;
    let already_merged = other_canonical == keep;
    if !already_merged && other_canonical != other {
        return Err(RouterError::Invalid(format!(
            "{other} was already merged into {other_canonical}; merge {other_canonical} instead"
        )));
    }
    if identity::read_record(bus, keep).await?.is_none() {
        return Err(RouterError::NotFound(format!(
            "no usager {keep} (no record in the identity bucket)"
        )));
    }
    let other_record = identity::read_record(bus, other).await?.map(|(r, _)| r);
    if other_record.is_none() && !already_merged {
        return Err(RouterError::NotFound(format!(
            "no usager {other} (no record in the identity bucket)"
        )));
    }

    // History first (so that no message is ever out of every history),
    // then the alias (lookups now land on KEEP), then the keys.
    let joining: Vec<String> = std::iter::once(other.to_owned())
        .chain(read_json_list(bus, &merged_key(other)).await?)
        .collect();
    let history = add_to_merged_list(bus, keep, &joining).await?;
    kv.put(alias_key(other), Bytes::from(keep.to_owned()))
        .await
        .map_err(|e| RouterError::identity_store("writing the alias", e))?;
    let (keys, levels) = other_record.map(|r| (r.identifiers, r.levels)).unwrap_or_default();
    for key in &keys {
        kv.put(key.as_str(), Bytes::from(keep.to_owned()))
            .await
            .map_err(|e| RouterError::identity_store("re-pointing an identifier", e))?;
    }
    add_to_record(kv, keep, keys.iter().cloned(), &levels).await?;
    if let Err(e) = kv.purge(record_key(other)).await {
        tracing::warn!(usager_id = other, error = %e, "merged usager's record not removed");
    }
    let _ = kv.purge(merged_key(other)).await;

    let event = serde_json::json!({
        "kind": "usager_merged", "kept": keep, "merged": other,
        "identifiers_moved": keys.len(), "at": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    });
    bus.publish(
        subjects::event("usager_merged"),
        &format!("merge-{other}-into-{keep}"),
        Bytes::from(event.to_string()),
    )
    .await?;
    // The pair cannot meet again; a conflict about it is closed.
    let conflict = identity_conflicts::conflict_id(keep, other);
    if matches!(identity_conflicts::read(kv, &conflict).await?, Some((record, _)) if record.status == Status::Open) {
        identity_conflicts::settle(kv, &conflict, Status::Merged).await?;
    }
    let mut history_ids = vec![keep.to_owned()];
    history_ids.extend(history);
    Ok(MergeReport {
        kept: keep.to_owned(),
        merged: other.to_owned(),
        identifiers_moved: keys.len(),
        history_ids,
        already_merged,
    })
}

/// Adds `ids` to `merged.<keep>`, revision-checked: two merges into the
/// same usager at once both land (a plain put lost one, which a later
/// `forget` then missed). Returns the list as written.
async fn add_to_merged_list(bus: &Bus, keep: &str, ids: &[String]) -> Result<Vec<String>, RouterError> {
    let kv = &bus.stores().identity;
    let key = merged_key(keep);
    for _ in 0..16 {
        let entry = kv
            .entry(key.as_str())
            .await
            .map_err(|e| RouterError::identity_store(format!("reading {key}"), e))?;
        let (mut list, revision): (Vec<String>, Option<u64>) = match entry {
            Some(entry) if entry.operation == kv::Operation::Put => (
                serde_json::from_slice(&entry.value)
                    .map_err(|e| RouterError::Identity(format!("{key} is not a JSON list of usager ids ({e})")))?,
                Some(entry.revision),
            ),
            Some(entry) => (Vec::new(), Some(entry.revision)),
            None => (Vec::new(), None),
        };
        for id in ids {
            if id != keep && !list.contains(id) {
                list.push(id.clone());
            }
        }
        let value = Bytes::from(serde_json::to_vec(&list).map_err(|e| RouterError::Invalid(e.to_string()))?);
        let written_list = list;
        // `Err(None)`: another merge wrote it meanwhile, read it again.
        let written: Result<u64, Option<String>> = match revision {
            Some(revision) => kv
                .update(key.as_str(), value, revision)
                .await
                .map_err(|e| (e.kind() != kv::UpdateErrorKind::WrongLastRevision).then(|| e.to_string())),
            None => kv
                .create(key.as_str(), value)
                .await
                .map_err(|e| (e.kind() != kv::CreateErrorKind::AlreadyExists).then(|| e.to_string())),
        };
        match written {
            Ok(_) => return Ok(written_list),
            Err(None) => continue,
            Err(Some(e)) => return Err(RouterError::identity_store("writing the merged list", e)),
        }
    }
    Err(RouterError::identity_store(
        "writing the merged list",
        "too many concurrent merges; retry",
    ))
}

async fn read_json_list(bus: &Bus, key: &str) -> Result<Vec<String>, RouterError> {
    let value = bus
        .stores()
        .identity
        .get(key)
        .await
        .map_err(|e| RouterError::identity_store(format!("reading {key}"), e))?;
    match value {
        None => Ok(Vec::new()),
        Some(v) => serde_json::from_slice(&v)
            .map_err(|e| RouterError::Identity(format!("{key} is not a JSON list of usager ids ({e})"))),
    }
}
