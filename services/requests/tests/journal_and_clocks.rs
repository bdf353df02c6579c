//! The journal's repair after a crash between the record and its event,
//! ListRequests, and both clocks across a suspension.
#![allow(clippy::unwrap_used)]

mod common;

use chrono::{DateTime, Utc};
use common::*;
use futures::StreamExt;
use guichet_core::{
    Bus,
    proto::v1::{ListOrder, ListRequestsRequest, RequestStatus, Transition, list_requests_response::Item},
    request::{HistoryRecord, RequestRecord, request_key},
};
use guichet_harness::Nats;
use guichet_requests::{events, store};

#[tokio::test]
async fn an_event_lost_between_the_record_and_the_journal_is_published_at_start() {
    let nats = Nats::start().await;
    let bus = bus(&nats).await;
    // As if a process had written version 2 and died before publishing.
    let mut taken = record("2026-AAAA-0003", "voirie");
    taken.status = "taken".into();
    taken.version = 2;
    taken.assigned_to = "agent-9".into();
    taken.history.push(HistoryRecord {
        version: 2,
        transition: "take".into(),
        from_status: "open".into(),
        to_status: "taken".into(),
        agent_id: "agent-9".into(),
        client: "voirie-app".into(),
        client_request_id: "t-crash".into(),
        occurred_at: "2026-03-02T10:00:00Z".into(),
        ..Default::default()
    });
    seed(&bus, &taken).await;
    seed(&bus, &record("2026-AAAA-0004", "voirie")).await;
    assert!(journal(&bus).await.is_empty());

    let service = TestRequests::start(&bus, config()).await;
    let journal_now = journal(&bus).await;
    let mut seen: Vec<(String, u64)> = journal_now
        .iter()
        .map(|(_, e)| (e.reference.clone(), e.version))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [("2026-AAAA-0003".to_owned(), 2), ("2026-AAAA-0004".to_owned(), 1)],
        "the last version of each request is on the journal"
    );
    service.stop().await;
    // A second start finds nothing to repair.
    let service = TestRequests::start(&bus, config()).await;
    assert_eq!(journal(&bus).await.len(), 2);
    let stream = events::events_stream(&bus).await.unwrap();
    let (record, _) = stored(&bus, "2026-AAAA-0003").await;
    assert!(events::is_published(&stream, &record).await.unwrap());
    service.stop().await;
}

#[tokio::test]
async fn list_filters_orders_and_pages() {
    let nats = Nats::start().await;
    let bus = bus(&nats).await;
    for (i, due) in [
        "2026-03-09T16:59:59Z",
        "2026-03-04T16:59:59Z",
        "2099-01-01T16:59:59Z",
        "",
    ]
    .iter()
    .enumerate()
    {
        let mut r = record(&format!("2026-LIST-000{i}"), "voirie");
        r.due_at = (*due).into();
        r.opened_at = format!("2026-03-0{}T09:00:00Z", i + 1);
        seed(&bus, &r).await;
    }
    let mut closed = record("2026-LIST-0009", "voirie");
    closed.status = "closed".into();
    seed(&bus, &closed).await;
    seed(&bus, &record("2026-LIST-0008", "urbanisme")).await;
    let service = TestRequests::start(&bus, config()).await;
    let mut client = service.client().await;
    let list = |request: ListRequestsRequest| {
        let mut client = client.clone();
        async move {
            let mut stream = client
                .list_requests(authed(request, VOIRIE_TOKEN))
                .await
                .unwrap()
                .into_inner();
            let mut refs = Vec::new();
            let mut next = None;
            while let Some(item) = stream.next().await {
                match item.unwrap().item.unwrap() {
                    Item::Request(r) => refs.push(r.reference),
                    Item::End(end) => next = Some(end.next_page_token),
                }
            }
            (refs, next.expect("an end message"))
        }
    };
    let by_due = ListRequestsRequest {
        service: "voirie".into(),
        page_size: 2,
        ..Default::default()
    };
    let (first, token) = list(by_due.clone()).await;
    assert_eq!(first, ["2026-LIST-0001", "2026-LIST-0000"]);
    let (second, last) = list(ListRequestsRequest {
        page_token: token,
        ..by_due.clone()
    })
    .await;
    assert_eq!(second, ["2026-LIST-0002", "2026-LIST-0003"], "without a deadline: last");
    assert_eq!(last, "");
    let (overdue, _) = list(ListRequestsRequest {
        service: "voirie".into(),
        overdue_only: true,
        order: ListOrder::Opened.into(),
        ..Default::default()
    })
    .await;
    assert_eq!(overdue, ["2026-LIST-0000", "2026-LIST-0001"]);
    let (closed, _) = list(ListRequestsRequest {
        service: "voirie".into(),
        statuses: vec![RequestStatus::Closed.into()],
        ..Default::default()
    })
    .await;
    assert_eq!(closed, ["2026-LIST-0009"]);
    let bad = client
        .list_requests(authed(
            ListRequestsRequest {
                service: "voirie".into(),
                page_token: "garbage".into(),
                ..Default::default()
            },
            VOIRIE_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&bad), ["page_token"]);
    service.stop().await;
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// A change by agent-1 of urba-app.
fn change(transition: Transition, id: &str) -> store::Change {
    store::Change {
        transition,
        agent_id: "agent-1".into(),
        client: "urba-app".into(),
        client_request_id: id.into(),
        note: String::new(),
        expected_version: None,
        outcome: Default::default(),
        to_service: String::new(),
        notify_usager: false,
        documents: Vec::new(),
    }
}

/// Applies `change` to `reference` at `now`, with the rules in force in
/// the config bucket (none: the built-in calendar); the record after it.
async fn apply(bus: &Bus, reference: &str, change: &store::Change, now: &str) -> RequestRecord {
    let stream = events::events_stream(bus).await.unwrap();
    let in_force = guichet_rules::InForce::default();
    let rules = guichet_requests::clock::Rules::InForce {
        rules: &in_force,
        key: "rules",
    };
    let allow = |_: &str| Ok(());
    store::update(bus, &stream, reference, change, &allow, rules, at(now))
        .await
        .unwrap()
        .unwrap()
        .record
}

/// Takes `reference` on Monday 29 December 2025, asks for documents on
/// the 30th and resumes it on Monday 5 January 2026; the record then.
async fn wait_for_documents_until_5_january(bus: &Bus, reference: &str) -> RequestRecord {
    apply(bus, reference, &change(Transition::Take, "c0"), "2025-12-29T10:00:00Z").await;
    apply(
        bus,
        reference,
        &change(Transition::RequestDocuments, "c1"),
        "2025-12-30T10:00:00Z",
    )
    .await;
    apply(
        bus,
        reference,
        &change(Transition::Resume, "c2"),
        "2026-01-05T10:00:00Z",
    )
    .await
}

/// The rules in force: a town hall closed on Friday 2 January 2026 (the
/// bridge after New Year's Day), building permits promised in 15 business
/// days, silence worth acceptance after 1 month.
const RULES: &str = r#"
manual_service = "accueil"

[[services]]
name = "accueil"
deadline = "5 business days"

[[services]]
name = "urbanisme"
deadline = "1 business day"

[calendar]
closures = ["2026-01-02"]

[[rules]]
id = "permis"
when.keywords = ["permis"]
service = "urbanisme"
typology = "permis-de-construire"
deadline = "15 business days"
implicit_decision = { kind = "acceptance", delay = "1 month" }
"#;

/// Received Monday 29 December 2025 at 10:00 (Paris). Business days after
/// it, on the rules' calendar (1 January a holiday, 2 January closed):
/// 30, 31 Dec; 5-9 Jan; 12-16 Jan; 19, 20, 21 Jan: the 15th is Wednesday
/// 21 January 2026, due 17:00 Paris = 16:00 UTC. Legal: 29 January.
///
/// First wait: documents asked Tuesday 30 December, received Monday
/// 5 January. Business days waited, (30 Dec, 5 Jan]: 31 December and
/// 5 January (1 January a holiday, 2 January closed, 3-4 a weekend) = 2:
/// due Wednesday 21 → Friday 23 January. (The built-in calendar, without
/// the closure, would give 3 days, Monday 26; adding the 6 calendar days
/// waited, Tuesday 27 at 17:00.) Legal restarts: 5 January 11:00 Paris
/// + 1 month = 5 February.
///
/// Second wait, across the month end: asked Thursday 22 January, received
/// Saturday 31 January. Waited (22, 31 Jan]: 23, 26, 27, 28, 29, 30 = 6
/// business days: Friday 23 January → Monday 2 February. Legal restarts:
/// 31 January + 1 month = 28 February (no 31 February), a Saturday: a
/// legal deadline stays where the law puts it.
#[tokio::test]
async fn both_clocks_across_a_suspension_a_holiday_and_month_ends() {
    let nats = Nats::start().await;
    let bus = bus(&nats).await;
    bus.stores()
        .config
        .put("rules", bytes::Bytes::from_static(RULES.as_bytes()))
        .await
        .unwrap();
    let rules = guichet_rules::RuleSet::parse(RULES, "test").unwrap();
    // The hand count above is the rules' own count.
    let received = at("2025-12-29T09:00:00Z");
    let due = rules.due(received, rules.deadline_of("permis").unwrap());
    assert_eq!(guichet_requests::clock::rfc3339(due.at), "2026-01-21T16:00:00Z");
    let reference = "2026-CLOC-0001";
    let mut r = record(reference, "urbanisme");
    r.rule_id = "permis".into();
    r.opened_at = "2025-12-29T09:00:00Z".into();
    r.due_at = "2026-01-21T16:00:00Z".into();
    r.due_date = "2026-01-21".into();
    r.implicit_decision = "acceptance".into();
    r.legal_delay = "1 month".into();
    r.legal_due_at = "2026-01-29T09:00:00Z".into();
    seed(&bus, &r).await;
    apply(&bus, reference, &change(Transition::Take, "t"), "2025-12-29T10:00:00Z").await;
    apply(
        &bus,
        reference,
        &change(Transition::RequestDocuments, "d1"),
        "2025-12-30T10:00:00Z",
    )
    .await;
    let (waiting, _) = stored(&bus, reference).await;
    assert_eq!(waiting.suspended_since, "2025-12-30T10:00:00Z");
    assert_eq!(waiting.due_at, "2026-01-21T16:00:00Z", "unchanged while waiting");
    assert_eq!(waiting.legal_due_at, "2026-01-29T09:00:00Z", "unchanged while waiting");

    let resumed = apply(
        &bus,
        reference,
        &change(Transition::Resume, "r1"),
        "2026-01-05T10:00:00Z",
    )
    .await;
    assert_eq!(resumed.suspended_since, "");
    assert_eq!(resumed.suspended_seconds, 6 * 86_400);
    assert_eq!(
        (resumed.due_at.as_str(), resumed.due_date.as_str()),
        ("2026-01-23T16:00:00Z", "2026-01-23"),
        "two business days waited, on the rules' calendar"
    );
    assert_eq!(
        resumed.legal_due_at, "2026-02-05T10:00:00Z",
        "CRPA L114-5: 1 month from the pieces"
    );

    apply(
        &bus,
        reference,
        &change(Transition::RequestDocuments, "d2"),
        "2026-01-22T10:00:00Z",
    )
    .await;
    let resumed = apply(
        &bus,
        reference,
        &change(Transition::Resume, "r2"),
        "2026-01-31T10:00:00Z",
    )
    .await;
    assert_eq!(resumed.suspended_seconds, 15 * 86_400);
    assert_eq!(
        (resumed.due_at.as_str(), resumed.due_date.as_str()),
        ("2026-02-02T16:00:00Z", "2026-02-02"),
        "six business days waited across the month end"
    );
    assert_eq!(
        resumed.legal_due_at, "2026-02-28T10:00:00Z",
        "31 January + 1 month, on a Saturday"
    );

    let event = resumed.event();
    assert_eq!(event.transition(), Transition::Resume);
    let deadlines = event.deadlines.unwrap();
    assert_eq!(
        deadlines.engagement_due_at.unwrap().seconds,
        at("2026-02-02T16:00:00Z").timestamp()
    );
    assert_eq!(
        deadlines.legal_due_at.unwrap().seconds,
        at("2026-02-28T10:00:00Z").timestamp()
    );
    assert_eq!(deadlines.suspended.unwrap().seconds, 15 * 86_400);
    assert_eq!(
        deadlines.implicit_decision(),
        guichet_core::proto::v1::ImplicitDecision::Acceptance
    );
    // The record in the bucket is what was returned.
    let entry = bus
        .stores()
        .requests
        .get(request_key(reference))
        .await
        .unwrap()
        .unwrap();
    let kept: guichet_core::request::RequestRecord = serde_json::from_slice(&entry).unwrap();
    assert_eq!(kept, resumed);
}

/// Without rules in force the clocks count on the built-in calendar:
/// the same first wait gives back 3 business days (31 December, 2 and
/// 5 January), and a deadline in hours gets the exact time waited.
#[tokio::test]
async fn without_rules_the_builtin_calendar_counts() {
    let nats = Nats::start().await;
    let bus = bus(&nats).await;
    let mut days = record("2026-CLOC-0002", "urbanisme");
    days.due_at = "2026-01-21T16:00:00Z".into();
    let mut hours = record("2026-CLOC-0003", "urbanisme");
    hours.due_at = "2025-12-31T12:30:00Z".into();
    seed(&bus, &days).await;
    seed(&bus, &hours).await;
    let mut last = Vec::new();
    for reference in ["2026-CLOC-0002", "2026-CLOC-0003"] {
        wait_for_documents_until_5_january(&bus, reference).await;
        last.push(stored(&bus, reference).await.0.due_at);
    }
    // Wednesday 21 + 3 business days = Monday 26 January; an instant that
    // is not the end of a business day is an hours deadline: + 6 days.
    assert_eq!(last, ["2026-01-26T16:00:00Z", "2026-01-06T12:30:00Z"]);
}

/// The unit of a deadline is the one recorded when the request opened:
/// a 48-hour deadline that happens to end at 17:00 on a business day gets
/// the exact time waited back (6 days) although its rule is no longer in
/// the rules in force, where a record without the unit (older) has it
/// inferred from the due time, as business days (31 December and
/// 5 January, 2 January being closed: 2).
#[tokio::test]
async fn a_recorded_hours_deadline_resumes_exactly_once_its_rule_is_gone() {
    let nats = Nats::start().await;
    let bus = bus(&nats).await;
    bus.stores()
        .config
        .put("rules", bytes::Bytes::from_static(RULES.as_bytes()))
        .await
        .unwrap();
    let rules = guichet_rules::RuleSet::parse(RULES, "test").unwrap();
    assert!(rules.deadline_of("urgence-retiree").is_none(), "the rule is gone");
    let mut recorded = record("2026-CLOC-0004", "urbanisme");
    let mut inferred = record("2026-CLOC-0005", "urbanisme");
    for r in [&mut recorded, &mut inferred] {
        r.rule_id = "urgence-retiree".into();
        // Wednesday 7 January, 17:00 in Paris: the end of a business day.
        r.due_at = "2026-01-07T16:00:00Z".into();
        r.due_date = "2026-01-07".into();
    }
    recorded.deadline = "48 hours".into();
    seed(&bus, &recorded).await;
    seed(&bus, &inferred).await;
    let mut resumed = Vec::new();
    for reference in ["2026-CLOC-0004", "2026-CLOC-0005"] {
        wait_for_documents_until_5_january(&bus, reference).await;
        let (record, _) = stored(&bus, reference).await;
        resumed.push((record.due_at, record.due_date));
    }
    assert_eq!(
        resumed[0],
        ("2026-01-13T16:00:00Z".to_owned(), "2026-01-13".to_owned()),
        "48 hours: the 6 days waited, exactly"
    );
    assert_eq!(
        resumed[1],
        ("2026-01-09T16:00:00Z".to_owned(), "2026-01-09".to_owned()),
        "without the recorded unit it is inferred, as business days"
    );
}

/// The rules the clocks count with: none before a push, then the newest
/// revision that validates; a refused revision leaves the previous one in
/// force, for a reader that saw it and for one that starts after it.
#[tokio::test]
async fn the_clocks_use_the_newest_valid_rules_revision() {
    let nats = Nats::start().await;
    let bus = bus(&nats).await;
    let seen = guichet_rules::InForce::default();
    assert!(
        seen.current(&bus, "rules").await.unwrap().is_none(),
        "nothing pushed yet"
    );
    let config = &bus.stores().config;
    let valid = config
        .put("rules", bytes::Bytes::from_static(RULES.as_bytes()))
        .await
        .unwrap();
    let compiled = seen.current(&bus, "rules").await.unwrap().unwrap();
    assert_eq!(compiled.revision, valid);
    assert!(
        compiled
            .rules
            .calendar()
            .closures
            .contains(&"2026-01-02".parse().unwrap())
    );
    let refused = config
        .put("rules", bytes::Bytes::from_static(b"manual_service = \"nowhere\"\n"))
        .await
        .unwrap();
    assert!(refused > valid);
    let fresh = guichet_rules::InForce::default();
    for reader in [&seen, &fresh] {
        let compiled = reader.current(&bus, "rules").await.unwrap().unwrap();
        assert_eq!(
            compiled.revision, valid,
            "the refused revision {refused} is not in force"
        );
    }
}
