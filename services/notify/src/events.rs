//! What notify records on `guichet.events.<kind>` for review and the
//! indicators: suppressions (with their reason), permanent failures
//! ("unreachable by e-mail") and sends (with receipt → 250). No personal
//! data: references and usager ids only.

use bytes::Bytes;
use chrono::Utc;
use guichet_core::{Bus, bus::subjects};

use crate::NotifyError;

/// Publishes one event, deduplicated by `msg_id`.
pub async fn record(bus: &Bus, kind: &str, msg_id: &str, mut body: serde_json::Value) -> Result<(), NotifyError> {
    if let Some(map) = body.as_object_mut() {
        map.insert("kind".into(), kind.into());
        map.insert(
            "at".into(),
            Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true).into(),
        );
    }
    bus.publish(subjects::event(kind), msg_id, Bytes::from(body.to_string()))
        .await?;
    Ok(())
}
