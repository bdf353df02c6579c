//! Due-soon and overdue alerts, exactly once, and the gauges.
//!
//! Every requests process sweeps every `requests.sweep_interval`: for each
//! request whose clocks run (OPEN or TAKEN) and each of its deadlines, a
//! `due_soon` alert once its service's `due_soon` (rules file, counted on
//! the rules' calendar: "2 business days") or else `requests.due_soon`
//! before it, and an `overdue` alert once it has passed. Exactly once across processes and restarts,
//! without a leader: the alert is published with
//! `Nats-Msg-Id = <reference>:<kind>:<due_at>:<alert>` (two processes
//! sweeping at once: JetStream keeps one), then a marker
//! `alert.<reference>.<kind>.<alert>.<due_at>` is created in
//! `guichet_requests`; a sweep skips an alert whose marker exists, so a
//! sweep after the duplicate window publishes nothing again. A process
//! dying between the publish and the marker leaves the alert to the next
//! sweep, which is deduplicated if it comes within the duplicate window.
//! A deadline that moves (time waited added back, legal clock restarted)
//! is a new deadline, with alerts of its own.

use std::{collections::BTreeSet, time::Duration};

use async_nats::jetstream::kv::CreateErrorKind;
use chrono::{DateTime, Utc};
use guichet_core::{
    Bus, Error,
    proto::v1::{DeadlineAlert, DeadlineKind, RequestStatus},
    request::{RequestRecord, alert_token, event_subject, status_token},
};
use prost::Message;
use tokio_util::sync::CancellationToken;

use crate::{RequestsError, clock, list};

/// What one sweep found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    pub requests: usize,
    pub overdue: usize,
    /// Alerts this sweep published (deduplicated ones included).
    pub published: usize,
}

/// The marker key of one alert.
pub fn marker_key(reference: &str, kind: DeadlineKind, alert: DeadlineAlert, due: DateTime<Utc>) -> String {
    format!(
        "alert.{reference}.{}.{}.{}",
        kind_token(kind),
        alert_token(alert),
        due.timestamp()
    )
}

fn kind_token(kind: DeadlineKind) -> &'static str {
    match kind {
        DeadlineKind::Legal => "legal",
        _ => "engagement",
    }
}

/// One sweep over every request at `now`.
pub async fn sweep_once(
    bus: &Bus,
    due_soon: Duration,
    rules: clock::Rules<'_>,
    now: DateTime<Utc>,
) -> Result<Swept, RequestsError> {
    let rules = rules.resolve(bus).await?;
    let records = list::all_records(bus).await?;
    let mut swept = Swept {
        requests: records.len(),
        ..Default::default()
    };
    let due_soon = chrono::Duration::from_std(due_soon).unwrap_or(chrono::TimeDelta::MAX);
    let mut open: std::collections::BTreeMap<(String, &'static str), u64> = Default::default();
    let mut overdue: std::collections::BTreeMap<String, u64> = Default::default();
    for record in &records {
        let status = record.status();
        if status != RequestStatus::Closed {
            *open.entry((record.service.clone(), status_token(status))).or_default() += 1;
        }
        if !matches!(status, RequestStatus::Open | RequestStatus::Taken) {
            continue;
        }
        let mut late = false;
        for (kind, due) in [
            (DeadlineKind::Engagement, &record.due_at),
            (DeadlineKind::Legal, &record.legal_due_at),
        ] {
            let Some(due) = clock::parse(due) else { continue };
            if due <= now {
                late = true;
                if alert(bus, record, kind, DeadlineAlert::Overdue, due, now).await? {
                    swept.published += 1;
                }
            } else {
                let soon_from = match rules.due_soon_of(&record.service) {
                    Some(lead) => rules.calendar().before(due, lead),
                    None => due.checked_sub_signed(due_soon).unwrap_or(DateTime::<Utc>::MIN_UTC),
                };
                if soon_from <= now && alert(bus, record, kind, DeadlineAlert::DueSoon, due, now).await? {
                    swept.published += 1;
                }
            }
        }
        if late {
            swept.overdue += 1;
            *overdue.entry(record.service.clone()).or_default() += 1;
        }
    }
    publish_gauges(&open, &overdue);
    Ok(swept)
}

/// Publishes one alert unless its marker says it was; `true` when published.
async fn alert(
    bus: &Bus,
    record: &RequestRecord,
    kind: DeadlineKind,
    which: DeadlineAlert,
    due: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<bool, RequestsError> {
    let kv = &bus.stores().requests;
    let key = marker_key(&record.reference, kind, which, due);
    let unavailable = |e: &dyn std::fmt::Display| RequestsError::Core(Error::Unavailable(format!("alert marker: {e}")));
    if kv.get(key.as_str()).await.map_err(|e| unavailable(&e))?.is_some() {
        return Ok(false);
    }
    let event = record.alert(which, kind, now);
    let msg_id = format!(
        "{}:{}:{}:{}",
        record.reference,
        kind_token(kind),
        due.timestamp(),
        alert_token(which)
    );
    bus.publish(
        event_subject(alert_token(which), &record.reference),
        &msg_id,
        event.encode_to_vec().into(),
    )
    .await?;
    match kv.create(key.as_str(), bytes::Bytes::from_static(b"1")).await {
        Ok(_) => {}
        Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {}
        Err(e) => return Err(unavailable(&e)),
    }
    metrics::counter!("guichet_requests_alerts_total", "alert" => alert_token(which)).increment(1);
    Ok(true)
}

/// `guichet_requests_open{service,status}` and
/// `guichet_requests_overdue{service}`; labels seen before and absent now
/// go to 0.
fn publish_gauges(
    open: &std::collections::BTreeMap<(String, &'static str), u64>,
    overdue: &std::collections::BTreeMap<String, u64>,
) {
    static SEEN: std::sync::Mutex<BTreeSet<(String, &'static str)>> = std::sync::Mutex::new(BTreeSet::new());
    let Ok(mut seen) = SEEN.lock() else { return };
    for (service, status) in seen.iter() {
        if !open.contains_key(&(service.clone(), *status)) {
            metrics::gauge!("guichet_requests_open", "service" => service.clone(), "status" => *status).set(0.0);
        }
        if !overdue.contains_key(service) {
            metrics::gauge!("guichet_requests_overdue", "service" => service.clone()).set(0.0);
        }
    }
    for ((service, status), n) in open {
        metrics::gauge!("guichet_requests_open", "service" => service.clone(), "status" => *status).set(*n as f64);
        seen.insert((service.clone(), status));
    }
    for (service, n) in overdue {
        metrics::gauge!("guichet_requests_overdue", "service" => service.clone()).set(*n as f64);
    }
}

/// Sweeps every `interval` until `shutdown`; a failed sweep is logged and
/// tried again at the next tick.
/// `rules`: the rules in force and their key (`requests.rules_key`).
pub async fn run(
    bus: Bus,
    interval: Duration,
    due_soon: Duration,
    (rules, key): (guichet_rules::InForce, String),
    shutdown: CancellationToken,
) {
    loop {
        let in_force = clock::Rules::InForce {
            rules: &rules,
            key: &key,
        };
        match sweep_once(&bus, due_soon, in_force, Utc::now()).await {
            Ok(swept) => tracing::debug!(?swept, "request deadlines swept"),
            Err(e) => tracing::warn!(error = %e, "sweeping request deadlines failed; trying again at the next tick"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}
