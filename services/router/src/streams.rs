//! Reading a stream's messages for the operators' commands: every
//! message on a subject, in memory or one at a time.

use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use bytes::Bytes;
use futures::StreamExt;
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
    scan_messages(bus, stream, filter, |message| {
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
/// rules replay). Forget scans instead ([`scan_messages`]).
pub(crate) async fn read_stored(bus: &Bus, stream: &str, filter: &str) -> Result<Vec<Stored>, RouterError> {
    let mut out = Vec::new();
    scan_messages(bus, stream, filter, |message| {
        out.push(Stored {
            sequence: message.sequence,
            subject: message.subject.to_owned(),
            payload: message.payload.clone(),
        })
    })
    .await?;
    Ok(out)
}

/// One message of a stream, as [`scan_messages`] shows it.
pub(crate) struct Scanned<'a> {
    pub sequence: u64,
    pub subject: &'a str,
    pub payload: &'a Bytes,
}

/// Shows every message on `filter` in `stream` to `visit`, oldest first,
/// one at a time (a whole journal is never held in memory), up to the
/// last one there when the scan began.
pub(crate) async fn scan_messages(
    bus: &Bus,
    stream: &str,
    filter: &str,
    mut visit: impl FnMut(Scanned<'_>),
) -> Result<(), RouterError> {
    let stream = bus
        .jetstream()
        .get_stream(stream)
        .await
        .map_err(|e| RouterError::jetstream(format!("opening {stream}"), e))?;
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: filter.to_owned(),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| RouterError::jetstream(format!("reading {filter}"), e))?;
    let mut consumer = consumer;
    let pending = consumer
        .info()
        .await
        .map_err(|e| RouterError::jetstream(format!("reading {filter}"), e))?
        .num_pending;
    if pending == 0 {
        return Ok(());
    }
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| RouterError::jetstream(format!("reading {filter}"), e))?;
    while let Some(message) = tokio::time::timeout(Duration::from_secs(10), messages.next())
        .await
        .map_err(|_| RouterError::jetstream(format!("reading {filter}"), "timed out"))?
    {
        let message = message.map_err(|e| RouterError::jetstream(format!("reading {filter}"), e))?;
        let (sequence, left) = message
            .info()
            .map(|i| (i.stream_sequence, i.pending))
            .map_err(|e| RouterError::jetstream(format!("reading {filter}"), e))?;
        visit(Scanned {
            sequence,
            subject: message.subject.as_str(),
            payload: &message.payload,
        });
        if left == 0 {
            break;
        }
    }
    Ok(())
}
