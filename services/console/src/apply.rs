//! What each journal message does to the read model, inside the batch's
//! transaction: the request rows, the contacts, the transitions, the
//! daily counts and delay histograms (added to the batch's [`Aggregates`]).

use chrono::{DateTime, Utc};
use guichet_core::proto::{
    to_datetime,
    v1::{Channel, DeadLetter, Outcome, RequestEvent, RequestStatus, Routed, Transition},
};
use guichet_rules::Calendar;
use sqlx::{AnyConnection, Row};

use crate::{
    ConsoleError,
    delays::{business_days, hours, local_day},
    indicators::period::day_number,
    rollup::Aggregates,
};

/// The dimensions every count is filtered by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dims {
    pub service: String,
    pub channel: String,
    pub typology: String,
    pub site: String,
}

/// Increments of one day's counts.
#[derive(Debug, Clone, Copy, Default)]
pub struct Delta {
    pub received: i64,
    pub manual: i64,
    pub closed: i64,
    pub answered: i64,
    pub recontacts: i64,
    pub transfers_in: i64,
    pub transfers_out: i64,
    pub reopenings: i64,
    pub within_engagement: i64,
    pub with_engagement: i64,
    pub within_legal: i64,
    pub with_legal: i64,
}

/// What became of one message.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    Done,
    /// A request event for a request whose first contact is not projected
    /// yet: ROUTED must be read up to it first.
    NeedsRouted,
}

fn db(what: &str) -> impl Fn(sqlx::Error) -> ConsoleError + '_ {
    move |e| ConsoleError::db(what, e)
}

/// `CHANNEL_WEB` → `web`.
pub fn short(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix).unwrap_or(name).to_ascii_lowercase()
}

pub fn channel_name(channel: i32) -> String {
    short(
        Channel::try_from(channel).unwrap_or(Channel::Unspecified).as_str_name(),
        "CHANNEL_",
    )
}

pub fn status_name(status: i32) -> String {
    short(
        RequestStatus::try_from(status)
            .unwrap_or(RequestStatus::Unspecified)
            .as_str_name(),
        "REQUEST_STATUS_",
    )
}

fn seconds(ts: Option<&pbjson_types::Timestamp>) -> Option<i64> {
    ts.map(|t| t.seconds)
}

fn instant(ts: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(ts, 0).unwrap_or_default()
}

/// The earlier of two deadlines (when a request becomes overdue).
fn earlier(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn seq(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// Records one delay (`<milestone>_h` and `<milestone>_bd`) on the day it ended.
fn add_delay(agg: &mut Aggregates, calendar: &Calendar, dims: &Dims, milestone: &str, start: i64, end: i64) {
    let (start, end) = (instant(start), instant(end));
    let day = day_number(local_day(calendar, end));
    agg.add_delay(day, dims, format!("{milestone}_h"), hours(start, end));
    agg.add_delay(
        day,
        dims,
        format!("{milestone}_bd"),
        business_days(calendar, start, end),
    );
}

/// A routed contact: a new request, or a re-contact on an existing one.
pub async fn routed(
    conn: &mut AnyConnection,
    agg: &mut Aggregates,
    calendar: &Calendar,
    sequence: u64,
    routed: &Routed,
) -> Result<(), ConsoleError> {
    let Some(contact) = &routed.contact else { return Ok(()) };
    let q = routed.qualification.clone().unwrap_or_default();
    // Noise and copies (`_noise`, `_copies`) are not requests.
    if q.discarded || q.service.starts_with('_') || routed.reference.is_empty() {
        return Ok(());
    }
    let received_at = seconds(contact.received_at.as_ref()).unwrap_or(0);
    let site = contact.source.as_ref().map(|s| s.name.clone()).unwrap_or_default();
    let channel = channel_name(contact.channel);
    let follow_up = !routed.follow_up_of.is_empty();
    // A transfer republishes the first contact: seen once only.
    let inserted = sqlx::query(
        "INSERT INTO contacts (contact_id, seq, reference, channel, site, received_at, follow_up) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (contact_id) DO NOTHING",
    )
    .bind(&contact.id)
    .bind(seq(sequence))
    .bind(&routed.reference)
    .bind(&channel)
    .bind(&site)
    .bind(received_at)
    .bind(i64::from(follow_up))
    .execute(&mut *conn)
    .await
    .map_err(db("recording a contact"))?
    .rows_affected();
    if inserted == 0 {
        return Ok(());
    }
    let day = day_number(local_day(calendar, instant(received_at)));
    if let Some((dims, _)) = request_dims(conn, &routed.reference).await? {
        if follow_up {
            sqlx::query("UPDATE requests SET recontacts = recontacts + 1 WHERE reference = $1")
                .bind(&routed.reference)
                .execute(&mut *conn)
                .await
                .map_err(db("counting a re-contact"))?;
            let delta = Delta {
                recontacts: 1,
                ..Delta::default()
            };
            agg.add_daily(day, &dims, delta);
        }
        return Ok(());
    }
    let manual = q.rule_id.is_empty();
    let dims = Dims {
        service: q.service.clone(),
        channel,
        typology: q.typology.clone(),
        site,
    };
    sqlx::query(
        "INSERT INTO requests (reference, seq, service, channel, typology, site, manual, opened_at, status, version, \
         engagement_due_at, legal_due_at, overdue_at, recontacts, transfers, reopenings) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'open', 0, $9, $10, $11, 0, 0, 0)",
    )
    .bind(&routed.reference)
    .bind(seq(sequence))
    .bind(&dims.service)
    .bind(&dims.channel)
    .bind(&dims.typology)
    .bind(&dims.site)
    .bind(i64::from(manual))
    .bind(received_at)
    .bind(seconds(q.due_at.as_ref()))
    .bind(seconds(q.legal_due_at.as_ref()))
    .bind(earlier(seconds(q.due_at.as_ref()), seconds(q.legal_due_at.as_ref())))
    .execute(&mut *conn)
    .await
    .map_err(db("recording a request"))?;
    let delta = Delta {
        received: 1,
        manual: i64::from(manual),
        ..Delta::default()
    };
    agg.add_daily(day, &dims, delta);
    Ok(())
}

/// The milestones of a request row.
#[derive(Debug, Default)]
struct Milestones {
    opened_at: i64,
    version: i64,
    acked_at: Option<i64>,
    taken_at: Option<i64>,
    answered_at: Option<i64>,
    closed_at: Option<i64>,
}

async fn request_dims(conn: &mut AnyConnection, reference: &str) -> Result<Option<(Dims, Milestones)>, ConsoleError> {
    let row = sqlx::query(
        "SELECT service, channel, typology, site, opened_at, version, acked_at, taken_at, answered_at, closed_at \
         FROM requests WHERE reference = $1",
    )
    .bind(reference)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db("reading a request"))?;
    let Some(row) = row else { return Ok(None) };
    let get = |e: sqlx::Error| ConsoleError::db("decoding a request row", e);
    Ok(Some((
        Dims {
            service: row.try_get(0).map_err(get)?,
            channel: row.try_get(1).map_err(get)?,
            typology: row.try_get(2).map_err(get)?,
            site: row.try_get(3).map_err(get)?,
        },
        Milestones {
            opened_at: row.try_get(4).map_err(get)?,
            version: row.try_get(5).map_err(get)?,
            acked_at: row.try_get(6).map_err(get)?,
            taken_at: row.try_get(7).map_err(get)?,
            answered_at: row.try_get(8).map_err(get)?,
            closed_at: row.try_get(9).map_err(get)?,
        },
    )))
}

/// A request event. `may_create`: ROUTED has nothing more to give, so an
/// unknown request is created from the event itself (its first contact is
/// gone from ROUTED: site unknown).
pub async fn request_event(
    conn: &mut AnyConnection,
    agg: &mut Aggregates,
    calendar: &Calendar,
    sequence: u64,
    kind: &str,
    event: &RequestEvent,
    may_create: bool,
) -> Result<Applied, ConsoleError> {
    let occurred = seconds(event.occurred_at.as_ref()).unwrap_or(0);
    let (dims, m) = match request_dims(conn, &event.reference).await? {
        Some(found) => found,
        None if !may_create => return Ok(Applied::NeedsRouted),
        None => {
            let opened_at = seconds(event.opened_at.as_ref()).unwrap_or(occurred);
            let dims = Dims {
                service: if event.from_service.is_empty() {
                    event.service.clone()
                } else {
                    event.from_service.clone()
                },
                channel: channel_name(event.channel),
                typology: event.typology.clone(),
                site: String::new(),
            };
            sqlx::query(
                "INSERT INTO requests (reference, seq, service, channel, typology, site, manual, opened_at, status, \
                 version, recontacts, transfers, reopenings) VALUES ($1, $2, $3, $4, $5, '', 0, $6, 'open', 0, 0, 0, 0)",
            )
            .bind(&event.reference)
            .bind(seq(sequence))
            .bind(&dims.service)
            .bind(&dims.channel)
            .bind(&dims.typology)
            .bind(opened_at)
            .execute(&mut *conn)
            .await
            .map_err(db("recording a request from its event"))?;
            let day = day_number(local_day(calendar, instant(opened_at)));
            agg.add_daily(
                day,
                &dims,
                Delta {
                    received: 1,
                    ..Delta::default()
                },
            );
            (
                dims,
                Milestones {
                    opened_at,
                    ..Milestones::default()
                },
            )
        }
    };
    sqlx::query(
        "INSERT INTO transitions (seq, reference, kind, service, from_service, from_status, to_status, occurred_at, version) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (seq) DO NOTHING",
    )
    .bind(seq(sequence))
    .bind(&event.reference)
    .bind(kind)
    .bind(&event.service)
    .bind(&event.from_service)
    .bind(status_name(event.from_status))
    .bind(status_name(event.to_status))
    .bind(occurred)
    .bind(seq(event.version))
    .execute(&mut *conn)
    .await
    .map_err(db("recording a transition"))?;
    let transition = Transition::try_from(event.transition).unwrap_or(Transition::Unspecified);
    // Alerts (due soon, overdue) and replays of old versions change nothing.
    if transition == Transition::Unspecified && kind != "open" {
        return Ok(Applied::Done);
    }
    if seq(event.version) <= m.version && kind != "open" {
        return Ok(Applied::Done);
    }
    let deadlines = event.deadlines.clone().unwrap_or_default();
    let engagement = seconds(deadlines.engagement_due_at.as_ref());
    let legal = seconds(deadlines.legal_due_at.as_ref());
    let day = day_number(local_day(calendar, instant(occurred)));
    let mut delta = Delta::default();
    let mut taken_at = m.taken_at;
    let mut answered_at = m.answered_at;
    let mut closed_at = m.closed_at;
    let mut service = dims.service.clone();
    let mut counters = (0i64, 0i64); // transfers, reopenings
    let first_answer = |delta: &mut Delta| {
        delta.answered += 1;
        if let Some(due) = engagement {
            delta.with_engagement += 1;
            delta.within_engagement += i64::from(occurred <= due);
        }
        if let Some(due) = legal {
            delta.with_legal += 1;
            delta.within_legal += i64::from(occurred <= due);
        }
    };
    match transition {
        Transition::Take if taken_at.is_none() => {
            taken_at = Some(occurred);
            add_delay(agg, calendar, &dims, "take", m.opened_at, occurred);
        }
        Transition::Answer if answered_at.is_none() => {
            answered_at = Some(occurred);
            first_answer(&mut delta);
            add_delay(agg, calendar, &dims, "first_answer", m.opened_at, occurred);
        }
        Transition::Close => {
            delta.closed += 1;
            let withdrawn = event.outcome == Outcome::Withdrawn as i32;
            // A closure with a decision answers a request never answered before.
            if answered_at.is_none() && !withdrawn {
                answered_at = Some(occurred);
                first_answer(&mut delta);
                add_delay(agg, calendar, &dims, "first_answer", m.opened_at, occurred);
            }
            if closed_at.is_none() {
                add_delay(agg, calendar, &dims, "closure", m.opened_at, occurred);
            }
            closed_at = Some(closed_at.unwrap_or(occurred));
        }
        Transition::Reopen => {
            delta.reopenings += 1;
            counters.1 += 1;
        }
        Transition::Transfer => {
            counters.0 += 1;
            agg.add_daily(
                day,
                &dims,
                Delta {
                    transfers_out: 1,
                    ..Delta::default()
                },
            );
            service = event.service.clone();
            delta.transfers_in += 1;
        }
        _ => {}
    }
    let outcome = Outcome::try_from(event.outcome)
        .ok()
        .filter(|o| *o != Outcome::Unspecified)
        .map(|o| short(o.as_str_name(), "OUTCOME_"));
    sqlx::query(
        "UPDATE requests SET service = $2, status = $3, version = $4, engagement_due_at = $5, legal_due_at = $6, overdue_at = $13, \
         taken_at = $7, answered_at = $8, closed_at = $9, outcome = COALESCE($10, outcome), \
         transfers = transfers + $11, reopenings = reopenings + $12 WHERE reference = $1",
    )
    .bind(&event.reference)
    .bind(&service)
    .bind(status_name(event.to_status))
    .bind(seq(event.version).max(m.version))
    .bind(engagement)
    .bind(legal)
    .bind(taken_at)
    .bind(answered_at)
    .bind(closed_at)
    .bind(outcome)
    .bind(counters.0)
    .bind(counters.1)
    .bind(earlier(engagement, legal))
    .execute(&mut *conn)
    .await
    .map_err(db("updating a request"))?;
    let dims = Dims { service, ..dims };
    if delta.received + delta.closed + delta.answered + delta.reopenings + delta.transfers_in > 0 {
        agg.add_daily(day, &dims, delta);
    }
    Ok(Applied::Done)
}

/// notify sent a message about a request: its first one is the
/// acknowledgment (accusé de réception).
pub async fn notify_sent(
    conn: &mut AnyConnection,
    agg: &mut Aggregates,
    calendar: &Calendar,
    body: &serde_json::Value,
) -> Result<(), ConsoleError> {
    let Some(reference) = body.get("reference").and_then(|r| r.as_str()) else {
        return Ok(());
    };
    let at = body
        .get("at")
        .and_then(|a| a.as_str())
        .and_then(|a| DateTime::parse_from_rfc3339(a).ok())
        .map(|a| a.timestamp());
    let Some(at) = at else { return Ok(()) };
    let Some((dims, m)) = request_dims(conn, reference).await? else {
        return Ok(());
    };
    if m.acked_at.is_some() {
        return Ok(());
    }
    sqlx::query("UPDATE requests SET acked_at = $2 WHERE reference = $1")
        .bind(reference)
        .bind(at)
        .execute(&mut *conn)
        .await
        .map_err(db("recording an acknowledgment"))?;
    add_delay(agg, calendar, &dims, "acknowledgment", m.opened_at, at);
    Ok(())
}

/// The router published an identity conflict for review.
pub async fn identity_conflict(
    conn: &mut AnyConnection,
    sequence: u64,
    body: &serde_json::Value,
) -> Result<(), ConsoleError> {
    let text = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).unwrap_or_default().to_owned();
    let others: Vec<String> = body
        .get("others")
        .and_then(|o| o.as_array())
        .map(|o| o.iter().map(|u| text(u.get("usager_id"))).collect())
        .unwrap_or_default();
    let at = body
        .get("at")
        .and_then(|a| a.as_str())
        .and_then(|a| DateTime::parse_from_rfc3339(a).ok())
        .map(|a| a.timestamp())
        .unwrap_or(0);
    sqlx::query(
        "INSERT INTO identity_conflicts (seq, contact_id, kept, others, at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (seq) DO NOTHING",
    )
    .bind(seq(sequence))
    .bind(text(body.get("contact_id")))
    .bind(text(body.get("kept").and_then(|k| k.get("usager_id"))))
    .bind(others.join(" "))
    .bind(at)
    .execute(conn)
    .await
    .map_err(db("recording an identity conflict"))?;
    Ok(())
}

/// A dead letter: where it came from and why (not its payload).
pub async fn dead_letter(
    conn: &mut AnyConnection,
    sequence: u64,
    subject: &str,
    letter: &DeadLetter,
    at: i64,
) -> Result<(), ConsoleError> {
    let reason: String = letter.reason.chars().take(500).collect();
    sqlx::query(
        "INSERT INTO dead_letters (seq, subject, original_subject, original_stream, original_sequence, reason, at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (seq) DO NOTHING",
    )
    .bind(seq(sequence))
    .bind(subject)
    .bind(&letter.original_subject)
    .bind(&letter.original_stream)
    .bind(seq(letter.original_sequence))
    .bind(reason)
    .bind(at)
    .execute(conn)
    .await
    .map_err(db("recording a dead letter"))?;
    Ok(())
}

/// The instant of a protobuf timestamp, for callers outside.
pub fn at(ts: Option<&pbjson_types::Timestamp>) -> Option<DateTime<Utc>> {
    ts.and_then(to_datetime)
}
