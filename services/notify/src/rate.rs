//! At most `notify.max_per_usager` messages to one usager per hour.
//!
//! One key per usager and clock hour in the `guichet_notify_rate` bucket
//! (keyed by the usager id, a pseudonymous ULID, never by the address),
//! holding the references already let through that hour. Updated with
//! compare-and-set, so two notify processes never let more through, and
//! idempotent: a notification redelivered after a crash finds its
//! reference there and passes again without counting twice.

use async_nats::jetstream::kv;
use chrono::{DateTime, Utc};

use crate::NotifyError;

/// Whether one more message for `reference` may go to `usager_id` now.
pub async fn admit(
    store: &kv::Store,
    usager_id: &str,
    reference: &str,
    now: DateTime<Utc>,
    max_per_hour: u32,
) -> Result<bool, NotifyError> {
    let key = format!("{usager_id}.{}", now.format("%Y%m%d%H"));
    for _ in 0..20 {
        let entry = store
            .entry(&key)
            .await
            .map_err(|e| NotifyError::jetstream("reading the rate counter", e))?;
        let (mut seen, revision) = match &entry {
            Some(e) if e.operation == kv::Operation::Put => (
                serde_json::from_slice::<Vec<String>>(&e.value).unwrap_or_default(),
                Some(e.revision),
            ),
            Some(e) => (Vec::new(), Some(e.revision)),
            None => (Vec::new(), None),
        };
        if seen.iter().any(|r| r == reference) {
            return Ok(true);
        }
        if seen.len() >= max_per_hour as usize {
            return Ok(false);
        }
        seen.push(reference.to_owned());
        let value = serde_json::to_vec(&seen).unwrap_or_default().into();
        // `Err(None)`: another process wrote first; read again.
        let written = match revision {
            Some(revision) => store
                .update(&key, value, revision)
                .await
                .map(|_| ())
                .map_err(|e| (e.kind() != kv::UpdateErrorKind::WrongLastRevision).then(|| e.to_string())),
            None => store
                .create(&key, value)
                .await
                .map(|_| ())
                .map_err(|e| (e.kind() != kv::CreateErrorKind::AlreadyExists).then(|| e.to_string())),
        };
        match written {
            Ok(()) => return Ok(true),
            Err(None) => {}
            Err(Some(e)) => return Err(NotifyError::jetstream("updating the rate counter", e)),
        }
    }
    Err(NotifyError::jetstream(
        "updating the rate counter",
        "too many concurrent updates",
    ))
}
