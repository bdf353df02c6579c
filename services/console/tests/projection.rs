//! The read model against known traffic: a scripted set of requests (each
//! contact, transition, acknowledgment, transfer, re-contact and reopening
//! at a chosen instant) is published to a real nats-server as the router,
//! requests and notify publish them; the projection runs on SQLite and on
//! PostgreSQL; every indicator is compared with the value computed here
//! from the script, with this file's own calendar. The projection is
//! aborted mid-batch and resumed, and a rebuild gives identical tables.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::BTreeSet, time::Duration};

use chrono::{DateTime, Datelike, Duration as Span, NaiveDate, TimeZone, Utc, Weekday};
use chrono_tz::Europe::Paris;
use guichet_console::{
    Console, Filter, Granularity, Projector, Store,
    indicators::{Overview, Point},
    store::TABLES,
};
use guichet_core::{
    Bus,
    proto::{
        timestamp,
        v1::{
            Channel, Contact, DeadLetter, Deadlines, Outcome, Qualification, RequestEvent, RequestStatus, Routed,
            Source, Transition,
        },
    },
};
use guichet_harness::{Nats, Postgres};
use prost::Message;

/// One scripted step of a request's life.
#[derive(Debug, Clone)]
struct Step {
    transition: Transition,
    at: DateTime<Utc>,
    outcome: Outcome,
    to_service: Option<&'static str>,
}

/// One scripted request.
#[derive(Debug, Clone)]
struct Req {
    reference: String,
    service: &'static str,
    channel: Channel,
    typology: &'static str,
    site: &'static str,
    manual: bool,
    opened: DateTime<Utc>,
    engagement_due: Option<DateTime<Utc>>,
    legal_due: Option<DateTime<Utc>>,
    steps: Vec<Step>,
    follow_ups: Vec<DateTime<Utc>>,
    acked: Option<DateTime<Utc>>,
}

const SERVICES: [&str; 3] = ["voirie", "etat-civil", "urbanisme"];
const TYPOLOGIES: [&str; 4] = ["nid-de-poule", "acte-naissance", "permis", "eclairage"];

fn paris(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
    Paris
        .with_ymd_and_hms(y, m, d, h, 0, 0)
        .single()
        .unwrap()
        .with_timezone(&Utc)
}

fn step(transition: Transition, at: DateTime<Utc>) -> Step {
    Step {
        transition,
        at,
        outcome: Outcome::Unspecified,
        to_service: None,
    }
}

/// The traffic: 36 requests over three weeks from Monday 30 March 2026
/// (Easter Monday 6 April is a holiday).
fn script() -> Vec<Req> {
    let start = paris(2026, 3, 30, 8);
    (0..36usize)
        .map(|i| {
            let opened = start + Span::hours(17 * i as i64);
            let service = SERVICES[i % 3];
            let mut steps = Vec::new();
            let mut at = opened;
            if i % 8 == 3 {
                at += Span::hours(1);
                let to = if service == "urbanisme" { "voirie" } else { "urbanisme" };
                steps.push(Step {
                    to_service: Some(to),
                    ..step(Transition::Transfer, at)
                });
            }
            if i % 6 != 5 {
                at = opened + Span::hours(3 + (i % 4) as i64 * 5);
                steps.push(step(Transition::Take, at));
            }
            let (steps, _) = (move || {
                match i % 6 {
                    0..=2 => {
                        at = opened + Span::hours(20 + 3 * i as i64);
                        steps.push(step(Transition::Answer, at));
                        if i % 6 < 2 {
                            at += Span::hours(10);
                            steps.push(Step {
                                outcome: Outcome::Granted,
                                ..step(Transition::Close, at)
                            });
                            if i % 10 == 0 {
                                at += Span::hours(5);
                                steps.push(step(Transition::Reopen, at));
                                at += Span::hours(30);
                                steps.push(Step {
                                    outcome: Outcome::Informed,
                                    ..step(Transition::Close, at)
                                });
                            }
                        }
                    }
                    3 => {
                        at += Span::hours(2);
                        steps.push(Step {
                            outcome: Outcome::Withdrawn,
                            ..step(Transition::Close, at)
                        });
                    }
                    4 => {
                        at += Span::hours(1);
                        steps.push(step(Transition::RequestDocuments, at));
                        if i % 12 == 10 {
                            // Still waiting for the usager.
                            return (steps, at);
                        }
                        at += Span::hours(30);
                        steps.push(step(Transition::Resume, at));
                        at += Span::hours(50);
                        steps.push(Step {
                            outcome: Outcome::Refused,
                            ..step(Transition::Close, at)
                        });
                    }
                    _ => {}
                }
                (steps, at)
            })();
            Req {
                reference: format!("2026-T{i:03}"),
                service,
                channel: [Channel::Web, Channel::Email, Channel::Counter][(i / 2) % 3],
                typology: TYPOLOGIES[(i * 7) % 4],
                site: ["centre", "annexe-nord"][i % 2],
                manual: i % 5 == 0,
                opened,
                engagement_due: (i % 7 != 0).then(|| opened + Span::days(2)),
                legal_due: (i % 4 == 0).then(|| opened + Span::days(30)),
                steps,
                follow_ups: if i % 4 == 1 {
                    vec![opened + Span::hours(26)]
                } else {
                    Vec::new()
                },
                acked: (i % 3 != 2).then(|| opened + Span::minutes(11 * 60 * (i % 3) as i64 + 5)),
            }
        })
        .collect()
}

fn status_after(t: Transition) -> RequestStatus {
    match t {
        Transition::Take | Transition::Resume => RequestStatus::Taken,
        Transition::RequestDocuments => RequestStatus::WaitingUsager,
        Transition::Answer => RequestStatus::Answered,
        Transition::Close => RequestStatus::Closed,
        _ => RequestStatus::Open,
    }
}

fn kind(t: Transition) -> &'static str {
    match t {
        Transition::Take => "take",
        Transition::RequestDocuments => "request_documents",
        Transition::Resume => "resume",
        Transition::Answer => "answer",
        Transition::Close => "close",
        Transition::Reopen => "reopen",
        Transition::Transfer => "transfer",
        _ => "open",
    }
}

fn routed(r: &Req, contact_id: &str, received: DateTime<Utc>, follow_up: bool, service: &str) -> Routed {
    Routed {
        contact: Some(Contact {
            id: contact_id.to_owned(),
            received_at: Some(timestamp(received)),
            channel: r.channel.into(),
            source: Some(Source {
                name: r.site.to_owned(),
                ..Source::default()
            }),
            reference: r.reference.clone(),
            ..Contact::default()
        }),
        usager_id: "U01TESTUSAGER".into(),
        reference: r.reference.clone(),
        qualification: Some(Qualification {
            typology: r.typology.to_owned(),
            service: service.to_owned(),
            rule_id: if r.manual {
                String::new()
            } else {
                format!("rule-{}", r.typology)
            },
            due_at: r.engagement_due.map(timestamp),
            legal_due_at: r.legal_due.map(timestamp),
            ..Qualification::default()
        }),
        follow_up_of: if follow_up { r.reference.clone() } else { String::new() },
        routed_at: Some(timestamp(received)),
        ..Routed::default()
    }
}

/// Publishes the script as the gateway would: each request's `open` event
/// before its first `Routed`, transitions in order, a transfer's
/// republished `Routed`, follow-ups, notify's `notify_sent`; one dead
/// letter and one identity conflict.
async fn publish(bus: &Bus, reqs: &[Req]) {
    let js = bus.jetstream();
    let mut acks = Vec::new();
    for r in reqs {
        let mut service = r.service.to_owned();
        let deadlines = Deadlines {
            engagement_due_at: r.engagement_due.map(timestamp),
            legal_due_at: r.legal_due.map(timestamp),
            ..Deadlines::default()
        };
        let mut status = RequestStatus::Open;
        let mut event =
            |t: Transition, at: DateTime<Utc>, version: u64, service: &str, from_service: &str, outcome: Outcome| {
                let to = status_after(t);
                let e = RequestEvent {
                    reference: r.reference.clone(),
                    service: service.to_owned(),
                    typology: r.typology.to_owned(),
                    channel: r.channel.into(),
                    usager_id: "U01TESTUSAGER".into(),
                    transition: t.into(),
                    from_status: status.into(),
                    to_status: if t == Transition::Transfer {
                        status.into()
                    } else {
                        to.into()
                    },
                    agent_id: "agent-1".into(),
                    occurred_at: Some(timestamp(at)),
                    opened_at: Some(timestamp(r.opened)),
                    deadlines: Some(deadlines.clone()),
                    version,
                    outcome: outcome.into(),
                    from_service: from_service.to_owned(),
                    ..RequestEvent::default()
                };
                if t != Transition::Transfer {
                    status = to;
                }
                (
                    format!("guichet.events.request.{}.{}", kind(t), r.reference),
                    e.encode_to_vec(),
                )
            };
        let mut messages = vec![event(Transition::Open, r.opened, 1, &service, "", Outcome::Unspecified)];
        messages.push((
            format!("guichet.routed.{service}.U01TESTUSAGER"),
            routed(r, &format!("C-{}-0", r.reference), r.opened, false, &service).encode_to_vec(),
        ));
        if let Some(at) = r.acked {
            let body = serde_json::json!({"kind": "notify_sent", "reference": r.reference, "notification": "ack",
                "at": at.to_rfc3339()});
            messages.push(("guichet.events.notify_sent".into(), body.to_string().into_bytes()));
        }
        for (n, at) in r.follow_ups.iter().enumerate() {
            messages.push((
                format!("guichet.routed.{service}.U01TESTUSAGER"),
                routed(r, &format!("C-{}-{}", r.reference, n + 1), *at, true, &service).encode_to_vec(),
            ));
        }
        for (v, s) in r.steps.iter().enumerate() {
            let from = service.clone();
            if let Some(to) = s.to_service {
                service = to.to_owned();
            }
            let from_service = if s.to_service.is_some() { from.as_str() } else { "" };
            messages.push(event(
                s.transition,
                s.at,
                v as u64 + 2,
                &service,
                from_service,
                s.outcome,
            ));
            if s.to_service.is_some() {
                // The transfer puts the first contact in the new queue again.
                messages.push((
                    format!("guichet.routed.{service}.U01TESTUSAGER"),
                    routed(r, &format!("C-{}-0", r.reference), r.opened, false, &service).encode_to_vec(),
                ));
            }
        }
        for (subject, payload) in messages {
            acks.push(js.publish(subject, payload.into()).await.unwrap());
        }
    }
    let letter = DeadLetter {
        original_subject: "guichet.intake.web".into(),
        original_stream: "INTAKE".into(),
        original_sequence: 7,
        reason: "not a Contact".into(),
        ..DeadLetter::default()
    };
    acks.push(
        js.publish("guichet.deadletter.router", letter.encode_to_vec().into())
            .await
            .unwrap(),
    );
    let conflict = serde_json::json!({"kind": "identity_conflict", "contact_id": "C-conflict",
        "kept": {"usager_id": "U01KEPT", "matched_by": ["email"]},
        "others": [{"usager_id": "U01OTHER", "matched_by": ["phone"]}], "at": "2026-04-02T10:00:00Z"});
    acks.push(
        js.publish("guichet.events.identity_conflict", conflict.to_string().into())
            .await
            .unwrap(),
    );
    for ack in acks {
        ack.await.unwrap();
    }
}

// ---- The expected values, from the script alone. ----

fn holidays() -> BTreeSet<NaiveDate> {
    [(4, 6), (5, 1), (5, 8), (5, 14), (5, 25)]
        .into_iter()
        .map(|(m, d)| NaiveDate::from_ymd_opt(2026, m, d).unwrap())
        .collect()
}

fn day(at: DateTime<Utc>) -> NaiveDate {
    at.with_timezone(&Paris).date_naive()
}

fn business_days(a: DateTime<Utc>, b: DateTime<Utc>) -> i64 {
    let (mut d, end, off) = (day(a), day(b), holidays());
    let mut n = 0;
    while d < end {
        d = d.succ_opt().unwrap();
        if !matches!(d.weekday(), Weekday::Sat | Weekday::Sun) && !off.contains(&d) {
            n += 1;
        }
    }
    n
}

fn nearest_rank(mut v: Vec<i64>, q: f64) -> Option<i64> {
    if v.is_empty() {
        return None;
    }
    v.sort();
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

/// One delay: milestone, requests, median and p90 in hours, then in business days.
type DelayRow = (String, i64, Option<i64>, Option<i64>, Option<i64>, Option<i64>);

/// What the overview must say for `reqs` filtered by `keep` (on the
/// service the request has at each moment, and its other dimensions).
#[derive(Debug, Default, PartialEq)]
struct Expected {
    received: i64,
    closed: i64,
    answered: i64,
    recontacts: i64,
    transfers_in: i64,
    transfers_out: i64,
    reopenings: i64,
    manual: i64,
    within_engagement: (i64, i64),
    within_legal: (i64, i64),
    /// milestone → (count, median h, p90 h, median bd, p90 bd)
    delays: Vec<DelayRow>,
    channels: Vec<(String, i64)>,
    open: i64,
    waiting: i64,
    overdue: i64,
}

fn expected(reqs: &[Req], keep: &dyn Fn(&str, Channel) -> bool) -> Expected {
    expected_in(reqs, keep, NaiveDate::MIN..=NaiveDate::MAX)
}

/// As [`expected`], with the delays of milestones reached in `days` only.
fn expected_in(
    reqs: &[Req],
    keep: &dyn Fn(&str, Channel) -> bool,
    days: std::ops::RangeInclusive<NaiveDate>,
) -> Expected {
    let mut e = Expected::default();
    let mut delays: Vec<(&str, Vec<(i64, i64)>)> = ["acknowledgment", "take", "first_answer", "closure"]
        .iter()
        .map(|m| (*m, Vec::new()))
        .collect();
    let mut channels = std::collections::BTreeMap::new();
    let now = Utc::now();
    for r in reqs {
        let mut service = r.service;
        let measure = |v: &mut Vec<(&str, Vec<(i64, i64)>)>, m: &str, end: DateTime<Utc>| {
            if !days.contains(&day(end)) {
                return;
            }
            let slot = v.iter_mut().find(|(k, _)| *k == m).unwrap();
            slot.1
                .push(((end - r.opened).num_hours(), business_days(r.opened, end)));
        };
        if keep(service, r.channel) {
            e.received += 1;
            e.manual += i64::from(r.manual);
            *channels.entry(format!("{:?}", r.channel).to_lowercase()).or_insert(0) += 1;
        }
        let mut answered = false;
        let mut closed_once = false;
        let mut status = RequestStatus::Open;
        let mut taken = false;
        // Follow-ups and acknowledgment count under the service of the
        // moment; the script has them before any transfer's effect only
        // when no transfer happens (transfers are at +1h, follow-ups +26h).
        let final_service = r
            .steps
            .iter()
            .filter_map(|s| s.to_service)
            .next_back()
            .unwrap_or(r.service);
        if !r.follow_ups.is_empty() && keep(final_service, r.channel) {
            e.recontacts += r.follow_ups.len() as i64;
        }
        if let Some(at) = r.acked {
            // notify_sent is published before any transfer: the first service.
            if keep(r.service, r.channel) {
                measure(&mut delays, "acknowledgment", at);
            }
        }
        for s in &r.steps {
            if let Some(to) = s.to_service {
                if keep(service, r.channel) {
                    e.transfers_out += 1;
                }
                service = to;
                if keep(service, r.channel) {
                    e.transfers_in += 1;
                }
                continue;
            }
            let k = keep(service, r.channel);
            match s.transition {
                Transition::Take if !taken => {
                    taken = true;
                    if k {
                        measure(&mut delays, "take", s.at);
                    }
                }
                Transition::Answer if !answered => {
                    answered = true;
                    if k {
                        e.answered += 1;
                        count_deadlines(&mut e, r, s.at);
                        measure(&mut delays, "first_answer", s.at);
                    }
                }
                Transition::Close => {
                    if k {
                        e.closed += 1;
                    }
                    if !answered && s.outcome != Outcome::Withdrawn {
                        answered = true;
                        if k {
                            e.answered += 1;
                            count_deadlines(&mut e, r, s.at);
                            measure(&mut delays, "first_answer", s.at);
                        }
                    }
                    if !closed_once {
                        closed_once = true;
                        if k {
                            measure(&mut delays, "closure", s.at);
                        }
                    }
                }
                Transition::Reopen if k => e.reopenings += 1,
                _ => {}
            }
            status = status_after(s.transition);
        }
        if keep(service, r.channel) {
            match status {
                RequestStatus::Closed => {}
                RequestStatus::WaitingUsager => e.waiting += 1,
                _ => e.open += 1,
            }
            let late = |d: Option<DateTime<Utc>>| d.is_some_and(|d| d < now);
            if matches!(status, RequestStatus::Open | RequestStatus::Taken)
                && (late(r.engagement_due) || late(r.legal_due))
            {
                e.overdue += 1;
            }
        }
    }
    e.delays = delays
        .into_iter()
        .map(|(m, v)| {
            let h: Vec<i64> = v.iter().map(|x| x.0).collect();
            let bd: Vec<i64> = v.iter().map(|x| x.1).collect();
            (
                m.to_owned(),
                v.len() as i64,
                nearest_rank(h.clone(), 0.5),
                nearest_rank(h, 0.9),
                nearest_rank(bd.clone(), 0.5),
                nearest_rank(bd, 0.9),
            )
        })
        .collect();
    let mut channels: Vec<(String, i64)> = channels.into_iter().collect();
    channels.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    e.channels = channels;
    e
}

fn count_deadlines(e: &mut Expected, r: &Req, at: DateTime<Utc>) {
    if let Some(d) = r.engagement_due {
        e.within_engagement.1 += 1;
        e.within_engagement.0 += i64::from(at <= d);
    }
    if let Some(d) = r.legal_due {
        e.within_legal.1 += 1;
        e.within_legal.0 += i64::from(at <= d);
    }
}

fn actual(o: &Overview) -> Expected {
    Expected {
        received: o.volumes.received,
        closed: o.volumes.closed,
        answered: o.volumes.answered,
        recontacts: o.volumes.recontacts,
        transfers_in: o.volumes.transfers_in,
        transfers_out: o.volumes.transfers_out,
        reopenings: o.volumes.reopenings,
        manual: o.volumes.manual,
        within_engagement: (o.within_engagement.count, o.within_engagement.of),
        within_legal: (o.within_legal.count, o.within_legal.of),
        delays: o
            .delays
            .iter()
            .map(|d| {
                (
                    d.milestone.clone(),
                    d.count,
                    d.median_hours,
                    d.p90_hours,
                    d.median_business_days,
                    d.p90_business_days,
                )
            })
            .collect(),
        channels: o.channels.iter().map(|c| (c.key.clone(), c.count)).collect(),
        open: o.backlog.open,
        waiting: o.backlog.waiting_usager,
        overdue: o.backlog.overdue,
    }
}

fn filter(from: NaiveDate, to: NaiveDate, granularity: Granularity) -> Filter {
    Filter {
        from,
        to,
        granularity,
        service: None,
        channel: None,
        typology: None,
        site: None,
    }
}

fn date(m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, m, d).unwrap()
}

/// The weekly backlog, unfiltered: requests opened by the end of each
/// week whose last close/reopen before it is not a close.
fn weekly_backlog(reqs: &[Req], from: NaiveDate, to: NaiveDate) -> Vec<(NaiveDate, i64, i64, i64)> {
    let mut out = Vec::new();
    let mut start = from;
    while start <= to {
        let end = (start + Span::days(6)).min(to);
        let in_week = |at: DateTime<Utc>| (start..=end).contains(&day(at));
        let received = reqs.iter().filter(|r| in_week(r.opened)).count() as i64;
        let closed = reqs
            .iter()
            .flat_map(|r| &r.steps)
            .filter(|s| s.transition == Transition::Close && in_week(s.at))
            .count() as i64;
        let backlog = reqs
            .iter()
            .filter(|r| day(r.opened) <= end)
            .filter(|r| {
                r.steps
                    .iter()
                    .rfind(|s| matches!(s.transition, Transition::Close | Transition::Reopen) && day(s.at) <= end)
                    .is_none_or(|s| s.transition != Transition::Close)
            })
            .count() as i64;
        out.push((start, received, closed, backlog));
        start += Span::days(7);
    }
    out
}

/// Checks every indicator of the store against the script.
async fn check(store: &Store, reqs: &[Req]) {
    let console = Console::new(store.clone());
    let (from, to) = (date(3, 30), date(6, 28));
    let all = console.overview(&filter(from, to, Granularity::Week)).await.unwrap();
    let everything = expected(reqs, &|_, _| true);
    // The script exercises every indicator (a zero would prove nothing).
    assert!(everything.closed > 0 && everything.recontacts > 0 && everything.transfers_in > 0);
    assert!(everything.reopenings > 0 && everything.manual > 0 && everything.waiting > 0 && everything.overdue > 0);
    assert!(everything.within_engagement.0 > 0 && everything.within_engagement.0 < everything.within_engagement.1);
    assert!(everything.within_legal.1 > 0);
    assert!(
        everything.delays.iter().all(|d| d.1 > 0 && d.4 != d.5),
        "{:?}",
        everything.delays
    );
    assert_eq!(actual(&all), everything, "no filter");
    let series: Vec<(NaiveDate, i64, i64, i64)> = all
        .series
        .iter()
        .map(|p: &Point| (p.start, p.received, p.closed, p.backlog))
        .collect();
    assert_eq!(series, weekly_backlog(reqs, from, to), "weekly series");
    assert_eq!(all.manual.count, reqs.iter().filter(|r| r.manual).count() as i64);
    assert_eq!(all.manual.of, reqs.len() as i64);

    let voirie = console
        .service(&filter(from, to, Granularity::Month), "voirie")
        .await
        .unwrap();
    assert_eq!(actual(&voirie), expected(reqs, &|s, _| s == "voirie"), "service voirie");
    let web = Filter {
        channel: Some("web".into()),
        ..filter(from, to, Granularity::Day)
    };
    let web = console.overview(&web).await.unwrap();
    assert_eq!(actual(&web), expected(reqs, &|_, c| c == Channel::Web), "channel web");
    assert_eq!(web.series.len(), 91, "one point per day, empty days too");
    // Two dimensions: read from the tables per combination, not the roll-ups.
    let voirie_web = Filter {
        service: Some("voirie".into()),
        channel: Some("web".into()),
        ..filter(from, to, Granularity::Week)
    };
    let voirie_web = console.overview(&voirie_web).await.unwrap();
    assert_eq!(
        actual(&voirie_web),
        expected(reqs, &|s, c| s == "voirie" && c == Channel::Web),
        "service voirie, channel web"
    );
    // Whole months only (the monthly roll-ups, no day around them), with
    // and without a filter.
    let (april, may) = (date(4, 1), date(5, 31));
    let months = console.overview(&filter(april, may, Granularity::Month)).await.unwrap();
    let want = expected_in(reqs, &|_, _| true, april..=may).delays;
    assert!(want.iter().any(|d| d.1 > 0));
    assert_eq!(actual(&months).delays, want, "delays of April and May");
    let web_months = Filter {
        channel: Some("web".into()),
        ..filter(april, may, Granularity::Month)
    };
    let web_months = console.overview(&web_months).await.unwrap();
    assert_eq!(
        actual(&web_months).delays,
        expected_in(reqs, &|_, c| c == Channel::Web, april..=may).delays,
        "web delays of April and May"
    );

    // A narrower period: only what happened in it.
    let week = console
        .overview(&filter(date(4, 6), date(4, 12), Granularity::Day))
        .await
        .unwrap();
    let opened_that_week = reqs
        .iter()
        .filter(|r| (date(4, 6)..=date(4, 12)).contains(&day(r.opened)))
        .count() as i64;
    assert_eq!(week.volumes.received, opened_that_week);

    // Each delay on the day its milestone was reached, day by day.
    let mut day_ = from;
    let mut measured = 0;
    while day_ <= to {
        let one = console.overview(&filter(day_, day_, Granularity::Day)).await.unwrap();
        let want = expected_in(reqs, &|_, _| true, day_..=day_).delays;
        assert_eq!(actual(&one).delays, want, "delays of {day_}");
        measured += want.iter().map(|d| d.1).sum::<i64>();
        day_ = day_.succ_opt().unwrap();
    }
    assert_eq!(measured, everything.delays.iter().map(|d| d.1).sum::<i64>());

    // Typologies and sites as filters and mixes.
    let typology = console
        .typology(&filter(from, to, Granularity::Week), "permis")
        .await
        .unwrap();
    assert_eq!(
        typology.volumes.received,
        reqs.iter().filter(|r| r.typology == "permis").count() as i64
    );
    let site = Filter {
        site: Some("annexe-nord".into()),
        ..filter(from, to, Granularity::Week)
    };
    assert_eq!(
        console.overview(&site).await.unwrap().volumes.received,
        reqs.iter().filter(|r| r.site == "annexe-nord").count() as i64
    );
    let typologies: i64 = all.typologies.iter().map(|m| m.count).sum();
    assert_eq!(typologies, reqs.len() as i64);

    // The overdue list: references, due dates, status.
    let overdue = console.overdue(&filter(from, to, Granularity::Week)).await.unwrap();
    let expected_overdue: BTreeSet<String> = reqs
        .iter()
        .filter(|r| {
            let last = r.steps.iter().rfind(|s| s.to_service.is_none()).map(|s| s.transition);
            matches!(
                last.map(status_after).unwrap_or(RequestStatus::Open),
                RequestStatus::Open | RequestStatus::Taken
            ) && (r.engagement_due.is_some() || r.legal_due.is_some())
        })
        .map(|r| r.reference.clone())
        .collect();
    assert_eq!(
        overdue.iter().map(|o| o.reference.clone()).collect::<BTreeSet<_>>(),
        expected_overdue
    );
    assert!(overdue.iter().all(|o| o.status == "open" || o.status == "taken"));

    let letters = console.dead_letters().await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].original_stream, "INTAKE");
    assert_eq!(letters[0].reason, "not a Contact");
    let conflicts = console.identity_conflicts().await.unwrap();
    assert_eq!(conflicts.len(), 1);
    assert_eq!(
        (conflicts[0].kept.as_str(), conflicts[0].others.as_str()),
        ("U01KEPT", "U01OTHER")
    );

    // Bad input: a clear error, nothing read.
    let backwards = console.overview(&filter(to, from, Granularity::Day)).await.unwrap_err();
    assert!(backwards.to_string().contains("is after"), "{backwards}");
    assert!(!backwards.is_retryable());
}

async fn dump(store: &Store) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for table in TABLES {
        out.push(store.dump(table).await.unwrap());
    }
    out
}

/// Projects the traffic with a run aborted mid-way, checks, rebuilds, compares.
async fn scenario(url: &str) {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let reqs = script();
    publish(&bus, &reqs).await;
    let store = Store::open(url).await.unwrap();

    // A run with small batches, aborted as soon as it has committed some.
    let mut projector = Projector::start(&bus, store.clone(), "console", 7).await.unwrap();
    let token = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(async move { projector.run(Duration::from_millis(20), &token).await });
    tokio::time::timeout(Duration::from_secs(30), async {
        while store.position("EVENTS").await.unwrap() == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("the projection started");
    run.abort();
    let _ = run.await;
    let partial = store.position("EVENTS").await.unwrap();

    // A new start resumes from the positions in SQL.
    let mut projector = Projector::start(&bus, store.clone(), "console", 7).await.unwrap();
    let progress = tokio::time::timeout(Duration::from_secs(60), projector.catch_up())
        .await
        .expect("caught up in time")
        .unwrap();
    let events_total = nats
        .jetstream()
        .await
        .get_stream("EVENTS")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages;
    assert_eq!(
        partial + progress.events,
        events_total,
        "every event projected once across the abort"
    );
    check(&store, &reqs).await;

    // Projecting again changes nothing; a rebuild gives the same tables.
    let before = dump(&store).await;
    let mut again = Projector::start(&bus, store.clone(), "console", 500).await.unwrap();
    assert_eq!(again.catch_up().await.unwrap().total(), 0);
    store.clear().await.unwrap();
    let mut rebuilt = Projector::start(&bus, store.clone(), "console", 500).await.unwrap();
    rebuilt.catch_up().await.unwrap();
    assert_eq!(dump(&store).await, before, "a rebuild gives identical tables");
    check(&store, &reqs).await;
    store.close().await;
}

#[tokio::test]
async fn indicators_match_the_traffic_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    scenario(&format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("console.sqlite").display()
    ))
    .await;
}

#[tokio::test]
async fn indicators_match_the_traffic_on_postgres() {
    let db = Postgres::create("console");
    scenario(&db.url()).await;
}
