//! Reading a stream's messages for the operators' commands: every
//! message on a subject, in memory or one at a time.

use bytes::Bytes;
use guichet_core::Bus;

use crate::RouterError;

/// Every payload on `filter` in `stream`, oldest first.
pub async fn read_subject(bus: &Bus, stream: &str, filter: &str) -> Result<Vec<Bytes>, RouterError> {
    Ok(read_messages(bus, stream, filter)
        .await?
        .into_iter()
        .map(|(_, payload)| payload)
        .collect())
}

/// Every message on `filter` in `stream` as (sequence, payload), oldest first.
pub(crate) async fn read_messages(bus: &Bus, stream: &str, filter: &str) -> Result<Vec<(u64, Bytes)>, RouterError> {
    let mut out = Vec::new();
    bus.scan(stream, filter, |message| {
        out.push((message.sequence, message.payload.clone()))
    })
    .await?;
    Ok(out)
}

/// One message as a stream stores it.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub sequence: u64,
    pub subject: String,
    pub payload: Bytes,
}

/// Every message on `filter` in `stream`, oldest first, in memory: for
/// the operators' commands that show or compare them all (dead letters,
/// rules replay). Forget scans instead ([`Bus::scan`]).
pub(crate) async fn read_stored(bus: &Bus, stream: &str, filter: &str) -> Result<Vec<Stored>, RouterError> {
    let mut out = Vec::new();
    bus.scan(stream, filter, |message| {
        out.push(Stored {
            sequence: message.sequence,
            subject: message.subject.to_owned(),
            payload: message.payload.clone(),
        })
    })
    .await?;
    Ok(out)
}
