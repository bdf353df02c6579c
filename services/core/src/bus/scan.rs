//! Reading every message of some subjects of a stream once, oldest first:
//! the desk's histories, the router's forget, merge, replay and rekey
//! commands, and (last message per subject) the requests' sweep and list.
//!
//! An ordered consumer (ephemeral, flow-controlled, recreated by the client
//! on a gap) reads the messages one at a time, so a whole journal is never
//! held in memory; the scan stops at the last message there when it began.

use std::{ops::ControlFlow, time::Duration};

use async_nats::{
    HeaderMap,
    jetstream::consumer::{DeliverPolicy, pull::OrderedConfig},
};
use bytes::Bytes;
use futures::StreamExt;

use super::Bus;
use crate::Error;

/// The longest wait for the next message: a stream that stops answering
/// ends the scan with an error rather than holding the caller.
const MESSAGE_WAIT: Duration = Duration::from_secs(10);

/// One message of a stream, as [`Bus::scan`] shows it.
pub struct Scanned<'a> {
    pub sequence: u64,
    pub subject: &'a str,
    pub payload: &'a Bytes,
    /// The message's headers (a KV bucket's `KV-Operation`, for one).
    pub headers: Option<&'a HeaderMap>,
}

impl Bus {
    /// Shows every message on `filter` in `stream` to `visit`, oldest first,
    /// up to the last one there when the scan began.
    pub async fn scan(&self, stream: &str, filter: &str, mut visit: impl FnMut(Scanned<'_>)) -> Result<(), Error> {
        self.scan_until(stream, &[filter.to_owned()], |message| {
            visit(message);
            ControlFlow::Continue(())
        })
        .await
    }

    /// Shows every message on any of `filters` in `stream` to `visit`,
    /// oldest first, up to the last one there when the scan began or until
    /// `visit` breaks.
    pub async fn scan_until(
        &self,
        stream: &str,
        filters: &[String],
        visit: impl FnMut(Scanned<'_>) -> ControlFlow<()>,
    ) -> Result<(), Error> {
        self.scan_with(stream, filters, DeliverPolicy::All, visit).await
    }

    /// Shows the last message of each subject on `filter` in `stream` to
    /// `visit` (a KV bucket's current entries, deletions included: see
    /// [`Scanned::headers`]), in stream order.
    pub async fn scan_last(&self, stream: &str, filter: &str, mut visit: impl FnMut(Scanned<'_>)) -> Result<(), Error> {
        self.scan_with(stream, &[filter.to_owned()], DeliverPolicy::LastPerSubject, |message| {
            visit(message);
            ControlFlow::Continue(())
        })
        .await
    }

    async fn scan_with(
        &self,
        stream: &str,
        filters: &[String],
        deliver_policy: DeliverPolicy,
        mut visit: impl FnMut(Scanned<'_>) -> ControlFlow<()>,
    ) -> Result<(), Error> {
        let what = filters.join(", ");
        let unavailable = |e: &dyn std::fmt::Display| Error::Unavailable(format!("reading {what} in {stream}: {e}"));
        let stream = self
            .jetstream()
            .get_stream_no_info(stream)
            .await
            .map_err(|e| unavailable(&e))?;
        let mut config = OrderedConfig {
            deliver_policy,
            ..Default::default()
        };
        match filters {
            [one] => config.filter_subject = one.clone(),
            _ => config.filter_subjects = filters.to_vec(),
        }
        let consumer = stream.create_consumer(config).await.map_err(|e| unavailable(&e))?;
        let name = consumer.cached_info().name.clone();
        let result = async {
            if consumer.cached_info().num_pending == 0 {
                return Ok(());
            }
            let mut messages = consumer.messages().await.map_err(|e| unavailable(&e))?;
            while let Some(message) = tokio::time::timeout(MESSAGE_WAIT, messages.next())
                .await
                .map_err(|_| unavailable(&format!("no message for {MESSAGE_WAIT:?}")))?
            {
                let message = message.map_err(|e| unavailable(&e))?;
                let (sequence, left) = message
                    .info()
                    .map(|i| (i.stream_sequence, i.pending))
                    .map_err(|e| unavailable(&e))?;
                let seen = visit(Scanned {
                    sequence,
                    subject: message.subject.as_str(),
                    payload: &message.payload,
                    headers: message.headers.as_ref(),
                });
                if seen.is_break() || left == 0 {
                    break;
                }
            }
            Ok(())
        }
        .await;
        // The consumer would expire by itself; deleting it frees the server now.
        tokio::spawn(async move {
            let _ = stream.delete_consumer(&name).await;
        });
        result
    }
}
