//! What an erasure removes from OUTBOX, notify's queue of messages to the
//! usagers: each notification holds the usager's e-mail address and is
//! kept 30 days after it is sent. Here rather than in notify so that the
//! router's `usager forget` needs no dependency on the notify crate.

use async_nats::jetstream::{self, context::GetStreamErrorKind};

use super::{Bus, subjects};
use crate::Error;

impl Bus {
    /// Purges every notification to `usager_id` from OUTBOX; the number
    /// purged. OUTBOX missing (notify never ran) is nothing to purge.
    pub async fn purge_outbox_of(&self, usager_id: &str) -> Result<u64, Error> {
        let stream = match self.jetstream().get_stream(subjects::OUTBOX_STREAM).await {
            Ok(stream) => stream,
            Err(e)
                if matches!(
                    e.kind(),
                    GetStreamErrorKind::JetStream(ref js) if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
                ) =>
            {
                return Ok(0);
            }
            Err(e) => return Err(Error::Unavailable(format!("opening OUTBOX: {e}"))),
        };
        let purged = stream
            .purge()
            .filter(subjects::outbox_of_usager(usager_id))
            .await
            .map_err(|e| Error::Unavailable(format!("purging the notifications of a usager from OUTBOX: {e}")))?;
        Ok(purged.purged)
    }
}
