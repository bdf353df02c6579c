//! Reading the identity bucket: which usager an identifier belongs to,
//! and whose history a usager id covers after merges.
//!
//! Layout of `guichet_identity` (the router writes it, adapters read it):
//! - `<kind>.<keyed hash>` (see [`Pseudonymizer::identity_key`]) → usager id, UTF-8;
//! - `alias.<B>` → `A` when usager B was merged into A;
//! - `merged.<A>` → JSON array of the ids merged into A;
//! - `usager.<U>` → the usager's record (JSON, owned by the router).

use super::Bus;
use crate::{Error, bus::subjects::IDENTITY_BUCKET, identity::Identifier, privacy::Pseudonymizer};

/// Key of the alias record of a merged usager.
pub fn alias_key(usager_id: &str) -> String {
    format!("alias.{usager_id}")
}

/// Key of the list of usagers merged into `usager_id`.
pub fn merged_key(usager_id: &str) -> String {
    format!("merged.{usager_id}")
}

/// Key of a usager's record.
pub fn record_key(usager_id: &str) -> String {
    format!("usager.{usager_id}")
}

/// Follows merges from `usager_id`: reads `alias.<U>` (through
/// `read_alias`, given the key) until an id has none, and returns that id.
/// The one alias-following loop: the router passes its cached reader.
pub async fn follow_aliases<E, F, Fut>(usager_id: &str, mut read_alias: F) -> Result<String, E>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<Option<String>, E>>,
{
    let mut current = usager_id.to_owned();
    // Bounded: a merge chain longer than this is a loop written by hand.
    for _ in 0..16 {
        match read_alias(alias_key(&current)).await? {
            Some(next) if next != current => current = next,
            _ => break,
        }
    }
    Ok(current)
}

impl Bus {
    async fn identity_get(&self, key: &str) -> Result<Option<String>, Error> {
        let value = self
            .inner
            .stores
            .identity
            .get(key)
            .await
            .map_err(|e| Error::store(IDENTITY_BUCKET, e))?;
        Ok(value.and_then(|v| String::from_utf8(v.to_vec()).ok()))
    }

    /// The (canonical) usager an identifier points at, if any, its key
    /// computed with `keys`.
    pub async fn usager_of(&self, keys: &Pseudonymizer, identifier: &Identifier) -> Result<Option<String>, Error> {
        match self.identity_get(&keys.identity_key(identifier)).await? {
            Some(id) => Ok(Some(self.canonical_usager(&id).await?)),
            None => Ok(None),
        }
    }

    /// Follows merges: the id a usager id now lives under.
    pub async fn canonical_usager(&self, usager_id: &str) -> Result<String, Error> {
        follow_aliases(usager_id, |key| async move { self.identity_get(&key).await }).await
    }

    /// The usager ids whose routed messages make up `usager_id`'s history:
    /// itself and every id merged into it.
    pub async fn usager_history_ids(&self, usager_id: &str) -> Result<Vec<String>, Error> {
        let canonical = self.canonical_usager(usager_id).await?;
        let mut ids = vec![canonical.clone()];
        if let Some(json) = self.identity_get(&merged_key(&canonical)).await?
            && let Ok(merged) = serde_json::from_str::<Vec<String>>(&json)
        {
            for id in merged {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        Ok(ids)
    }
}
