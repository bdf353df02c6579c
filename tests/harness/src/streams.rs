//! Every message a JetStream stream holds, read back as a test's evidence.
//!
//! Tests that judge "stored exactly once" must look at what the server
//! kept, not at what clients were told: [`read_all`] reads a whole stream
//! with an ordered consumer (one pass, no per-message request) up to the
//! last sequence the stream had when the read began.

use std::time::{Duration, SystemTime};

use async_nats::jetstream::{
    self,
    consumer::{DeliverPolicy, pull::OrderedConfig},
};
use futures::StreamExt;

/// One message as the stream stores it.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub sequence: u64,
    pub subject: String,
    pub payload: Vec<u8>,
    /// When the server stored it.
    pub published: SystemTime,
}

/// Reads every message of `stream` (an empty list if the stream does not
/// exist), giving up with an error after `within`.
pub async fn read_all(js: &jetstream::Context, stream: &str, within: Duration) -> Result<Vec<StoredMessage>, String> {
    tokio::time::timeout(within, read(js, stream))
        .await
        .map_err(|_| format!("reading stream {stream} took more than {within:?}"))?
}

async fn read(js: &jetstream::Context, name: &str) -> Result<Vec<StoredMessage>, String> {
    let mut stream = match js.get_stream(name).await {
        Ok(stream) => stream,
        Err(e) if e.to_string().contains("not found") => return Ok(Vec::new()),
        Err(e) => return Err(format!("stream {name}: {e}")),
    };
    let state = stream
        .info()
        .await
        .map_err(|e| format!("stream {name} info: {e}"))?
        .state
        .clone();
    let mut out = Vec::with_capacity(usize::try_from(state.messages).unwrap_or_default());
    if state.messages == 0 {
        return Ok(out);
    }
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_policy: DeliverPolicy::All,
            ..OrderedConfig::default()
        })
        .await
        .map_err(|e| format!("ordered consumer on {name}: {e}"))?;
    let mut messages = consumer.messages().await.map_err(|e| format!("reading {name}: {e}"))?;
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| format!("reading {name}: {e}"))?;
        let info = message.info().map_err(|e| format!("reading {name}: {e}"))?;
        let sequence = info.stream_sequence;
        let nanos = u64::try_from(info.published.unix_timestamp_nanos()).unwrap_or_default();
        out.push(StoredMessage {
            sequence,
            subject: message.subject.to_string(),
            payload: message.payload.to_vec(),
            published: SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos),
        });
        // The last sequence can be gone (deleted or purged since): nothing
        // pending is the end too.
        if sequence >= state.last_sequence || info.pending == 0 {
            return Ok(out);
        }
    }
    Err(format!("stream {name} ended before sequence {}", state.last_sequence))
}
