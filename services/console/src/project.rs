//! The projection loop: ROUTED, EVENTS and DEADLETTER into the read model.
//!
//! The position of each stream lives in SQL (`positions`) and moves in the
//! same transaction as the rows of the messages up to it; the durable
//! consumers are recreated at each start from that position. A crash
//! between the commit and anything after it replays nothing twice; a
//! crash before the commit replays the whole batch, which the database
//! never saw. A second console process projecting at the same time makes
//! one of the two transactions fail its position check and roll back
//! ([`ConsoleError::Moved`]).
//!
//! ROUTED is read before EVENTS: a request's row (its site, whether a
//! rule qualified it) comes from its first contact, which the router
//! publishes after the request's `open` event. An event of a request not
//! yet known waits until ROUTED has nothing more to give and
//! [`ROUTED_GRACE`] has passed since the event was published.

use std::{collections::VecDeque, time::Duration};

use async_nats::jetstream::{
    self, AckKind, Message,
    consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull},
};
use futures::StreamExt;
use guichet_core::{
    Bus,
    bus::subjects,
    proto::v1::{DeadLetter, RequestEvent, Routed},
};
use guichet_rules::Calendar;
use prost::Message as _;
use sqlx::Row;
use tokio_util::sync::CancellationToken;

use crate::{
    ConsoleError,
    apply::{self, Applied},
    rollup::Aggregates,
    store::Store,
};

/// How long a request event waits for its request's first contact on
/// ROUTED (the router publishes the `open` event just before it) before
/// the request is created from the event alone (its contact is gone).
pub const ROUTED_GRACE: Duration = Duration::from_secs(30);

/// The streams projected, and the suffix of their consumer's name.
pub const STREAMS: [(&str, &str); 3] = [
    (subjects::ROUTED_STREAM, "routed"),
    (subjects::EVENTS_STREAM, "events"),
    (subjects::DEADLETTER_STREAM, "deadletter"),
];

/// Messages projected by one pass.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub routed: u64,
    pub events: u64,
    pub dead_letters: u64,
}

impl Progress {
    pub fn total(&self) -> u64 {
        self.routed + self.events + self.dead_letters
    }
}

/// One stream's consumer and what was fetched but not yet applied.
struct Source {
    stream: &'static str,
    consumer: PullConsumer,
    held: VecDeque<Message>,
}

/// Projects the journal into a store.
pub struct Projector {
    store: Store,
    calendar: Calendar,
    batch: usize,
    sources: Vec<Source>,
}

impl Projector {
    /// Creates (again) the durable consumers `<prefix>-routed`, `-events`
    /// and `-deadletter`, each starting after the stored position.
    pub async fn start(bus: &Bus, store: Store, prefix: &str, batch: usize) -> Result<Self, ConsoleError> {
        let mut sources = Vec::new();
        for (stream, suffix) in STREAMS {
            let position = store.position(stream).await?;
            sqlx::query("INSERT INTO positions (stream, seq) VALUES ($1, 0) ON CONFLICT (stream) DO NOTHING")
                .bind(stream)
                .execute(store.pool())
                .await
                .map_err(|e| ConsoleError::db("recording a position", e))?;
            let consumer = consumer(bus, stream, &format!("{prefix}-{suffix}"), position).await?;
            sources.push(Source {
                stream,
                consumer,
                held: VecDeque::new(),
            });
        }
        Ok(Self {
            store,
            calendar: Calendar::default(),
            batch: batch.max(1),
            sources,
        })
    }

    /// Projects until `shutdown`, sleeping `idle` when nothing is new.
    pub async fn run(&mut self, idle: Duration, shutdown: &CancellationToken) -> Result<(), ConsoleError> {
        while !shutdown.is_cancelled() {
            let progress = self.pass().await?;
            metrics::counter!("guichet_console_projected_total").increment(progress.total());
            if progress.total() == 0 {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(idle) => {}
                }
            }
        }
        Ok(())
    }

    /// Projects until every stream has nothing more (a rebuild, tests).
    pub async fn catch_up(&mut self) -> Result<Progress, ConsoleError> {
        let mut all = Progress::default();
        loop {
            let p = self.pass().await?;
            if p.total() == 0 {
                if self.sources.iter().all(|s| s.held.is_empty()) {
                    return Ok(all);
                }
                // An event waits for its first contact (ROUTED_GRACE).
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            all.routed += p.routed;
            all.events += p.events;
            all.dead_letters += p.dead_letters;
        }
    }

    /// One batch of each stream, ROUTED first.
    pub async fn pass(&mut self) -> Result<Progress, ConsoleError> {
        let mut progress = Progress::default();
        let mut routed_drained = false;
        for i in 0..self.sources.len() {
            let (applied, drained) = self.batch_of(i, routed_drained).await?;
            match self.sources.get(i).map(|s| s.stream) {
                Some(subjects::ROUTED_STREAM) => {
                    progress.routed = applied;
                    routed_drained = drained;
                }
                Some(subjects::EVENTS_STREAM) => progress.events = applied,
                _ => progress.dead_letters = applied,
            }
        }
        Ok(progress)
    }

    /// Fetches (without waiting) and applies one batch of source `i` in one
    /// transaction. Returns what was applied, and whether the stream had
    /// nothing more.
    async fn batch_of(&mut self, i: usize, routed_drained: bool) -> Result<(u64, bool), ConsoleError> {
        let Some(source) = self.sources.get_mut(i) else {
            return Ok((0, true));
        };
        let want = self.batch.saturating_sub(source.held.len());
        let mut drained = true;
        if want > 0 {
            let mut fetched = source
                .consumer
                .fetch()
                .max_messages(want)
                .messages()
                .await
                .map_err(|e| ConsoleError::bus(&format!("fetching from {}", source.stream), e))?;
            let mut n = 0;
            while let Some(message) = fetched.next().await {
                let message = message.map_err(|e| ConsoleError::bus(&format!("fetching from {}", source.stream), e))?;
                source.held.push_back(message);
                n += 1;
            }
            drained = n < want;
        }
        if source.held.is_empty() {
            return Ok((0, drained));
        }
        let stream = source.stream;
        let mut tx = self
            .store
            .pool()
            .begin()
            .await
            .map_err(|e| ConsoleError::db("starting a projection batch", e))?;
        let position: i64 = sqlx::query("SELECT seq FROM positions WHERE stream = $1")
            .bind(stream)
            .fetch_one(&mut *tx)
            .await
            .and_then(|row| row.try_get(0))
            .map_err(|e| ConsoleError::db("reading the projection position", e))?;
        let mut last = position;
        let mut applied = 0u64;
        let mut aggregates = Aggregates::default();
        let mut used = 0usize;
        for message in &source.held {
            let Ok(info) = message.info() else {
                used += 1;
                continue;
            };
            let sequence = info.stream_sequence;
            let seq = i64::try_from(sequence).unwrap_or(i64::MAX);
            let published = info.published.unix_timestamp();
            if seq <= last {
                used += 1;
                continue;
            }
            let incoming = Incoming {
                stream,
                sequence,
                message,
                published,
                may_create: routed_drained
                    && chrono::Utc::now().timestamp() - published > ROUTED_GRACE.as_secs() as i64,
            };
            let outcome = apply_one(&mut tx, &mut aggregates, &self.calendar, incoming).await?;
            if outcome == Applied::NeedsRouted {
                break;
            }
            used += 1;
            applied += 1;
            last = seq;
        }
        // The batch's counts, in the same transaction as its rows.
        aggregates.flush(&mut tx).await?;
        if last != position {
            let moved = sqlx::query("UPDATE positions SET seq = $1 WHERE stream = $2 AND seq = $3")
                .bind(last)
                .bind(stream)
                .bind(position)
                .execute(&mut *tx)
                .await
                .map_err(|e| ConsoleError::db("moving the projection position", e))?
                .rows_affected();
            if moved != 1 {
                return Err(ConsoleError::Moved {
                    stream: stream.to_owned(),
                });
            }
        }
        tx.commit()
            .await
            .map_err(|e| ConsoleError::db("committing a projection batch", e))?;
        // Acknowledged after the commit (the database is the position; the
        // ack only lets the server forget what was delivered).
        let done: Vec<Message> = source.held.drain(..used).collect();
        if let Some(last) = done.last()
            && let Err(e) = last.ack_with(AckKind::Ack).await
        {
            tracing::debug!(error = %e, stream, "ack failed; the position in SQL is what counts");
        }
        Ok((applied, drained && source.held.is_empty()))
    }
}

/// One fetched message and where it stands.
struct Incoming<'a> {
    stream: &'a str,
    sequence: u64,
    message: &'a Message,
    /// When the stream stored it (Unix seconds).
    published: i64,
    /// Whether a request event may create its request's row without the
    /// first contact (ROUTED drained and the grace period over).
    may_create: bool,
}

/// What one message does, by stream and subject.
async fn apply_one(
    conn: &mut sqlx::AnyConnection,
    agg: &mut Aggregates,
    calendar: &Calendar,
    incoming: Incoming<'_>,
) -> Result<Applied, ConsoleError> {
    let Incoming {
        stream,
        sequence,
        message,
        published,
        may_create,
    } = incoming;
    let subject = message.subject.as_str();
    // A payload that does not decode is skipped (it is the producer's
    // defect, already dead-lettered or reported there); the position moves on.
    match stream {
        subjects::ROUTED_STREAM => {
            if let Ok(routed) = Routed::decode(message.payload.clone()) {
                apply::routed(conn, agg, calendar, sequence, &routed).await?;
            }
        }
        subjects::DEADLETTER_STREAM => {
            if let Ok(letter) = DeadLetter::decode(message.payload.clone()) {
                apply::dead_letter(conn, sequence, subject, &letter, published).await?;
            }
        }
        _ => {
            let Some(kind) = subject.strip_prefix("guichet.events.") else {
                return Ok(Applied::Done);
            };
            if let Some(rest) = kind.strip_prefix("request.") {
                let transition = rest.split('.').next().unwrap_or_default();
                if let Ok(event) = RequestEvent::decode(message.payload.clone()) {
                    return apply::request_event(conn, agg, calendar, sequence, transition, &event, may_create).await;
                }
            } else if kind == "notify_sent" || kind == "identity_conflict" {
                let Ok(body) = serde_json::from_slice::<serde_json::Value>(&message.payload) else {
                    return Ok(Applied::Done);
                };
                if kind == "notify_sent" {
                    apply::notify_sent(conn, agg, calendar, &body).await?;
                } else {
                    apply::identity_conflict(conn, sequence, &body).await?;
                }
            }
        }
    }
    Ok(Applied::Done)
}

/// (Re)creates the durable consumer `name` on `stream` after `position`.
async fn consumer(bus: &Bus, stream: &str, name: &str, position: u64) -> Result<PullConsumer, ConsoleError> {
    let handle: jetstream::stream::Stream = bus
        .jetstream()
        .get_stream(stream)
        .await
        .map_err(|e| ConsoleError::bus(&format!("opening {stream}"), e))?;
    // Its start is the database's position, not the server's memory of
    // what was acknowledged: remove the old one first.
    match handle.delete_consumer(name).await {
        Ok(_) => {}
        Err(e) if e.to_string().contains("not found") => {}
        Err(e) => return Err(ConsoleError::bus(&format!("removing the consumer {name}"), e)),
    }
    let deliver_policy = if position == 0 {
        DeliverPolicy::All
    } else {
        DeliverPolicy::ByStartSequence {
            start_sequence: position + 1,
        }
    };
    handle
        .create_consumer(pull::Config {
            durable_name: Some(name.to_owned()),
            description: Some("guichet console: the read model's projection".into()),
            deliver_policy,
            ack_policy: AckPolicy::All,
            ack_wait: Duration::from_secs(60),
            max_ack_pending: 100_000,
            ..Default::default()
        })
        .await
        .map_err(|e| ConsoleError::bus(&format!("creating the consumer {name} on {stream}"), e))
}
