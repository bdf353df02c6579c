//! Readiness: would a contact sent now be stored?
//!
//! Being connected is not enough: during a cluster election INTAKE has no
//! leader and every publish fails for seconds while the connection is
//! fine. So readiness follows three signals:
//!
//! - the connection events of the client (a disconnect is seen within
//!   milliseconds; it also fails the publishes waiting for a PubAck, see
//!   [`Readiness::disconnects`]);
//! - a cheap periodic probe, `STREAM.INFO INTAKE` with a short timeout,
//!   which says whether JetStream answers and INTAKE has a leader;
//! - the outcome of the publishes to INTAKE: a few transient failures in a
//!   row mean not ready, a success means ready again.
//!
//! The verdict is one value, read without I/O by `/readyz` and the desk's
//! gRPC health, and logged once per transition, not per request.

use std::{
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use async_nats::jetstream::{self, response::Response};
use tokio::{sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;

use super::{Inner, subjects};

/// How often the monitor probes INTAKE.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a probe waits for JetStream's answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Transient publish failures in a row that make the process not ready.
const FAILURES_BEFORE_NOT_READY: u32 = 3;
/// Once not ready because publishes fail, no traffic may come to prove
/// otherwise (load balancers send it elsewhere): a successful probe this
/// long after the last failure lets traffic try again.
const FAILURES_HOLD: Duration = Duration::from_secs(5);

/// Why a contact sent now would not be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReady {
    /// The connection to every listed server is down (reconnecting).
    Disconnected,
    /// JetStream answers, but INTAKE has no leader.
    NoLeader,
    /// JetStream says INTAKE does not exist.
    NoStream,
    /// JetStream did not answer the probe.
    JetStreamSilent(String),
    /// Publishes to INTAKE failed several times in a row.
    PublishesFailing(String),
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotReady::Disconnected => f.write_str("disconnected from NATS"),
            NotReady::NoLeader => write!(
                f,
                "{} has no leader: cluster election in progress",
                subjects::INTAKE_STREAM
            ),
            NotReady::NoStream => write!(
                f,
                "{} does not exist (is the topology in place? `guichet run` creates it at start)",
                subjects::INTAKE_STREAM
            ),
            NotReady::JetStreamSilent(reason) => write!(f, "JetStream not answering: {reason}"),
            NotReady::PublishesFailing(reason) => {
                write!(f, "publishes to {} failing: {reason}", subjects::INTAKE_STREAM)
            }
        }
    }
}

/// The readiness of one bus. Shared by the client's event callback, the
/// publish path and the monitor.
#[derive(Debug)]
pub(crate) struct Readiness {
    signals: Mutex<Signals>,
    verdict: watch::Sender<Result<(), NotReady>>,
    /// Counts disconnections: a publish waiting for its PubAck watches it.
    disconnects: watch::Sender<u64>,
}

#[derive(Debug)]
struct Signals {
    connected: bool,
    /// The last probe's finding; `None` when it found INTAKE led.
    probe: Option<NotReady>,
    failures: u32,
    last_failure: Option<Instant>,
    last_failure_reason: String,
}

impl Readiness {
    /// Ready: created once the client is connected and INTAKE exists.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            signals: Mutex::new(Signals {
                connected: true,
                probe: None,
                failures: 0,
                last_failure: None,
                last_failure_reason: String::new(),
            }),
            verdict: watch::Sender::new(Ok(())),
            disconnects: watch::Sender::new(0),
        })
    }

    pub(crate) fn current(&self) -> Result<(), NotReady> {
        self.verdict.borrow().clone()
    }

    pub(crate) fn watch(&self) -> watch::Receiver<Result<(), NotReady>> {
        self.verdict.subscribe()
    }

    /// Changes on every disconnection from then on.
    pub(crate) fn disconnects(&self) -> watch::Receiver<u64> {
        self.disconnects.subscribe()
    }

    /// Whether the last probe found that INTAKE does not exist (rather
    /// than existing without a leader).
    pub(crate) fn intake_missing(&self) -> bool {
        self.update(|s| matches!(s.probe, Some(NotReady::NoStream)))
    }

    /// A connection event of the client.
    pub(crate) fn connection(&self, connected: bool) {
        if !connected {
            self.disconnects.send_modify(|n| *n = n.wrapping_add(1));
        }
        // The probe's last finding stands until the next probe (within a
        // second): after a reconnection to a node without a leader for
        // INTAKE, ready at once would be a lie for that second.
        self.update(|s| s.connected = connected);
    }

    /// The outcome of a publish to INTAKE: `Err` only for a transient failure.
    pub(crate) fn publish_outcome(&self, outcome: Result<(), String>) {
        self.update(|s| match outcome {
            Ok(()) => s.failures = 0,
            Err(reason) => {
                s.failures = s.failures.saturating_add(1);
                s.last_failure = Some(Instant::now());
                s.last_failure_reason = reason;
            }
        });
    }

    fn probe_outcome(&self, finding: Option<NotReady>) {
        self.update(|s| {
            if finding.is_none() && s.last_failure.is_none_or(|at| at.elapsed() >= FAILURES_HOLD) {
                s.failures = 0;
            }
            s.probe = finding;
        });
    }

    /// Applies `change`, then publishes and logs the verdict if it changed.
    fn update<T>(&self, change: impl FnOnce(&mut Signals) -> T) -> T {
        let mut signals = match self.signals.lock() {
            Ok(s) => s,
            // A panic elsewhere while holding it: the signals are plain values.
            Err(poisoned) => poisoned.into_inner(),
        };
        let out = change(&mut signals);
        let verdict = signals.verdict();
        // Under the lock, so that two transitions are logged in their order.
        self.verdict.send_if_modified(|current| {
            if *current == verdict {
                return false;
            }
            match (&verdict, &*current) {
                (Err(cause), _) => tracing::warn!(%cause, "not ready: {cause}"),
                (Ok(()), Err(was)) => tracing::info!(was = %was, "ready again: contacts are stored"),
                (Ok(()), Ok(())) => {}
            }
            metrics::gauge!("guichet_ready").set(if verdict.is_ok() { 1.0 } else { 0.0 });
            *current = verdict;
            true
        });
        out
    }
}

impl Signals {
    /// The first cause, in the order an operator should look at them.
    fn verdict(&self) -> Result<(), NotReady> {
        if !self.connected {
            return Err(NotReady::Disconnected);
        }
        if let Some(cause) = &self.probe {
            return Err(cause.clone());
        }
        if self.failures >= FAILURES_BEFORE_NOT_READY {
            return Err(NotReady::PublishesFailing(self.last_failure_reason.clone()));
        }
        Ok(())
    }
}

/// Probes INTAKE every [`PROBE_INTERVAL`] until `cancel` fires or the bus
/// is dropped (the task holds it weakly, so it never keeps a bus alive).
pub(super) async fn monitor(bus: Weak<Inner>, cancel: CancellationToken) {
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(PROBE_INTERVAL) => {}
        }
        let Some(inner) = bus.upgrade() else { return };
        // Disconnected: the event callback has said so already, and a
        // request now would only wait for the reconnection.
        if inner.client.connection_state() != async_nats::connection::State::Connected {
            continue;
        }
        let finding = tokio::select! {
            () = cancel.cancelled() => return,
            finding = probe(&inner.jetstream) => finding,
        };
        inner.readiness.probe_outcome(finding);
    }
}

/// One `STREAM.INFO` of INTAKE: `None` when it has a leader.
async fn probe(jetstream: &jetstream::Context) -> Option<NotReady> {
    let subject = format!("STREAM.INFO.{}", subjects::INTAKE_STREAM);
    let request = jetstream.request::<_, _, Response<jetstream::stream::Info>>(subject, &());
    match tokio::time::timeout(PROBE_TIMEOUT, request).await {
        Err(_) => Some(NotReady::JetStreamSilent(format!("no answer within {PROBE_TIMEOUT:?}"))),
        Ok(Err(e)) => Some(NotReady::JetStreamSilent(e.to_string())),
        Ok(Ok(Response::Err { error })) if error.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND => {
            Some(NotReady::NoStream)
        }
        // 503 "JetStream system temporarily unavailable": no leader to answer.
        Ok(Ok(Response::Err { error })) if error.code() == 503 => Some(NotReady::NoLeader),
        Ok(Ok(Response::Err { error })) => Some(NotReady::JetStreamSilent(error.to_string())),
        // Clustered (a cluster block in the answer) without a leader named.
        Ok(Ok(Response::Ok(info))) => match info.cluster {
            Some(cluster)
                if (cluster.name.is_some() || !cluster.replicas.is_empty())
                    && cluster.leader.as_deref().is_none_or(str::is_empty) =>
            {
                Some(NotReady::NoLeader)
            }
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_failures_in_a_row_make_it_not_ready_and_a_success_ready_again() {
        let readiness = Readiness::new();
        for _ in 1..FAILURES_BEFORE_NOT_READY {
            readiness.publish_outcome(Err("timeout".into()));
        }
        assert_eq!(readiness.current(), Ok(()), "a few failures are not an outage");
        readiness.publish_outcome(Err("timeout".into()));
        assert_eq!(readiness.current(), Err(NotReady::PublishesFailing("timeout".into())));
        // A probe right after the failures does not clear them: JetStream
        // answering STREAM.INFO is not a stored contact.
        readiness.probe_outcome(None);
        assert!(readiness.current().is_err());
        readiness.publish_outcome(Ok(()));
        assert_eq!(readiness.current(), Ok(()));
    }

    #[test]
    fn the_connection_comes_first_and_the_probe_stands_until_the_next_one() {
        let readiness = Readiness::new();
        let mut disconnects = readiness.disconnects();
        readiness.probe_outcome(Some(NotReady::NoLeader));
        assert_eq!(readiness.current(), Err(NotReady::NoLeader));
        assert!(!readiness.intake_missing());
        readiness.connection(false);
        assert_eq!(readiness.current(), Err(NotReady::Disconnected));
        assert!(disconnects.has_changed().unwrap_or(false), "waiting publishes are told");
        disconnects.mark_unchanged();
        readiness.connection(true);
        assert_eq!(readiness.current(), Err(NotReady::NoLeader), "not probed since");
        assert!(
            !disconnects.has_changed().unwrap_or(true),
            "a reconnection is no disconnection"
        );
        readiness.probe_outcome(None);
        assert_eq!(readiness.current(), Ok(()));
        readiness.probe_outcome(Some(NotReady::NoStream));
        assert!(readiness.intake_missing());
        assert!(
            NotReady::NoLeader
                .to_string()
                .contains("INTAKE has no leader: cluster election in progress")
        );
    }
}
