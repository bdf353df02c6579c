//! The stream of pull requests on INTAKE, re-opened at once when it stalls.
//!
//! async-nats's pull stream reports `no responders` (the consumer has no
//! leader yet: routers started together on an R3 cluster, or a leader
//! election) and a missed idle heartbeat (the server dropped the pull
//! request) as errors, but it sends its next pull request only when the
//! previous one expires: a router could sit idle for half a minute while
//! its peers route. Here every such error drops the stream and opens a
//! new one — a new pull request — after a short backoff (200 ms doubling
//! to 3 s), and a deleted consumer is created again ([`ensure_intake_consumer`]
//! holds its configuration).

use std::time::Duration;

use async_nats::jetstream::{
    Message,
    consumer::{
        AckPolicy, DeliverPolicy, PullConsumer,
        pull::{self, MessagesErrorKind, Stream},
    },
};
use futures::StreamExt;
use guichet_core::{Bus, bus::subjects};
use tokio::time::Instant;

use crate::{RouterConfig, RouterError};

/// The idle heartbeat asked of the server: a pull request it lost is
/// noticed after two of them (2 s), not after the request's expiry.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long one pull request waits at the server for messages.
const EXPIRES: Duration = Duration::from_secs(10);
/// The first wait before pulling again after a failure, doubled on each
/// failure in a row up to [`REPULL_MAX`].
const REPULL_FIRST: Duration = Duration::from_millis(200);
const REPULL_MAX: Duration = Duration::from_secs(3);
/// Failures in a row without a single message before the router gives up
/// (its supervisor starts it again): about a minute of a broker that
/// answers nothing.
const MAX_FAILURES: u32 = 30;

/// The INTAKE consumer every router process shares.
pub fn intake_config(config: &RouterConfig) -> pull::Config {
    pull::Config {
        durable_name: Some(config.consumer.clone()),
        description: Some("guichet: the routers, sharing the intake".into()),
        filter_subject: subjects::INTAKE_ALL.to_owned(),
        ack_policy: AckPolicy::Explicit,
        deliver_policy: DeliverPolicy::All,
        ack_wait: config.ack_wait,
        max_deliver: i64::from(config.max_deliveries) + 1,
        max_ack_pending: 20_000,
        ..Default::default()
    }
}

/// Creates the consumer, or brings an existing one to the configuration.
pub async fn ensure_intake_consumer(bus: &Bus, config: &RouterConfig) -> Result<PullConsumer, RouterError> {
    let stream = bus
        .jetstream()
        .get_stream(subjects::INTAKE_STREAM)
        .await
        .map_err(|e| RouterError::jetstream("opening INTAKE", e))?;
    stream
        .create_consumer(intake_config(config))
        .await
        .map_err(|e| RouterError::jetstream(format!("creating the INTAKE consumer `{}`", config.consumer), e))
}

/// Pulls from the INTAKE consumer, opening a new pull request whenever
/// the current one fails.
///
/// [`Puller::next`] is cancel-safe (the consume loop drops it whenever a
/// routing finishes first): a failure is counted and its retry time set
/// before anything is awaited, and the wait is for that fixed instant.
pub struct Puller {
    bus: Bus,
    config: RouterConfig,
    consumer: PullConsumer,
    messages: Option<Stream>,
    /// When to open the next pull, while `messages` is `None`.
    retry_at: Instant,
    /// The consumer was deleted: create it again before pulling.
    recreate: bool,
    failures: u32,
}

impl Puller {
    /// Opens the first pull request.
    pub async fn open(bus: Bus, config: RouterConfig, consumer: PullConsumer) -> Result<Self, RouterError> {
        let messages = open_stream(&consumer, &config).await?;
        Ok(Self {
            bus,
            config,
            consumer,
            messages: Some(messages),
            retry_at: Instant::now(),
            recreate: false,
            failures: 0,
        })
    }

    /// The consumer, for reading its lag.
    pub fn consumer(&self) -> PullConsumer {
        self.consumer.clone()
    }

    /// The next message. Errors only after [`MAX_FAILURES`] failures in a
    /// row without a message.
    pub async fn next(&mut self) -> Result<Message, RouterError> {
        loop {
            let Some(messages) = self.messages.as_mut() else {
                tokio::time::sleep_until(self.retry_at).await;
                if self.recreate {
                    match ensure_intake_consumer(&self.bus, &self.config).await {
                        Ok(consumer) => {
                            self.consumer = consumer;
                            self.recreate = false;
                        }
                        Err(e) => {
                            self.failed("consumer_deleted", &e.to_string())?;
                            continue;
                        }
                    }
                }
                match open_stream(&self.consumer, &self.config).await {
                    Ok(messages) => self.messages = Some(messages),
                    Err(e) => self.failed("other", &e.to_string())?,
                }
                continue;
            };
            match messages.next().await {
                Some(Ok(message)) => {
                    self.failures = 0;
                    return Ok(message);
                }
                Some(Err(e)) => {
                    // Whatever the server still sends to the dropped
                    // request's inbox comes back after ack_wait; there is
                    // none on these errors (nothing arrived, not even a
                    // heartbeat).
                    self.messages = None;
                    self.recreate |= e.kind() == MessagesErrorKind::ConsumerDeleted;
                    self.failed(reason(e.kind()), &e.to_string())?;
                }
                None => {
                    self.messages = None;
                    self.failed("ended", "the message stream ended")?;
                }
            }
        }
    }

    /// Counts a failure and sets the time of the next pull; an error once
    /// there were too many in a row.
    fn failed(&mut self, reason: &'static str, detail: &str) -> Result<(), RouterError> {
        self.failures += 1;
        metrics::counter!("guichet_router_repulls_total", "reason" => reason).increment(1);
        if self.failures >= MAX_FAILURES {
            return Err(RouterError::jetstream(
                "pulling from INTAKE",
                format!("{detail} ({MAX_FAILURES} failures in a row)"),
            ));
        }
        let delay = repull_delay(self.failures);
        self.retry_at = Instant::now() + delay;
        tracing::warn!(error = %detail, failures = self.failures, retry_in = ?delay, "pulling from INTAKE failed; pulling again");
        Ok(())
    }
}

fn reason(kind: MessagesErrorKind) -> &'static str {
    match kind {
        MessagesErrorKind::NoResponders => "no_responders",
        MessagesErrorKind::MissingHeartbeat => "missed_heartbeat",
        MessagesErrorKind::ConsumerDeleted => "consumer_deleted",
        MessagesErrorKind::Pull => "pull_failed",
        _ => "other",
    }
}

/// The wait before the `failures`-th new pull in a row.
fn repull_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(8);
    (REPULL_FIRST * 2u32.pow(doublings)).min(REPULL_MAX)
}

async fn open_stream(consumer: &PullConsumer, config: &RouterConfig) -> Result<Stream, RouterError> {
    consumer
        .stream()
        .max_messages_per_batch(config.batch_size)
        .heartbeat(HEARTBEAT)
        .expires(EXPIRES)
        .messages()
        .await
        .map_err(|e| RouterError::jetstream("pulling from INTAKE", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_pull_follows_within_hundreds_of_milliseconds_then_backs_off() {
        assert_eq!(repull_delay(1), Duration::from_millis(200));
        assert_eq!(repull_delay(2), Duration::from_millis(400));
        assert_eq!(repull_delay(4), Duration::from_millis(1600));
        assert_eq!(repull_delay(5), REPULL_MAX);
        assert_eq!(repull_delay(MAX_FAILURES), REPULL_MAX);
    }
}
