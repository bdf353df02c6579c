//! The journal's repair after a crash between the record and its event,
//! ListRequests, and both clocks across a suspension.
#![allow(clippy::unwrap_used)]

mod common;

use chrono::{DateTime, Utc};
use common::*;
use futures::StreamExt;
use guichet_core::{
    proto::v1::{ListOrder, ListRequestsRequest, RequestStatus, Transition, list_requests_response::Item},
    request::{HistoryRecord, request_key},
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

/// Opened Monday 29 December 2025, engagement due Wednesday 31 December,
/// legal decision (acceptance) 2 months from receipt. Documents asked on
/// 30 December, received on 31 December: the engagement deadline gets the
/// day waited back (1 January, a public holiday: the wall-clock time is
/// added, see docs/requests.md), the legal one restarts from RESUME in
/// calendar months and ends on the last day of the shorter February.
#[tokio::test]
async fn both_clocks_across_a_suspension_and_a_month_end() {
    let nats = Nats::start().await;
    let bus = bus(&nats).await;
    let stream = events::events_stream(&bus).await.unwrap();
    let reference = "2026-CLOC-0001";
    let mut r = record(reference, "urbanisme");
    r.opened_at = "2025-12-29T09:00:00Z".into();
    r.due_at = "2025-12-31T16:59:59Z".into();
    r.due_date = "2025-12-31".into();
    r.implicit_decision = "acceptance".into();
    r.legal_delay = "2 months".into();
    r.legal_due_at = "2026-02-28T09:00:00Z".into();
    seed(&bus, &r).await;
    let allow = |_: &str| Ok(());
    let change = |transition, id: &str| store::Change {
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
    };
    let run = |c: store::Change, now: &str| {
        let (bus, stream) = (bus.clone(), stream.clone());
        let now = at(now);
        async move {
            store::update(&bus, &stream, reference, &c, &allow, now)
                .await
                .unwrap()
                .unwrap()
        }
    };
    run(change(Transition::Take, "t"), "2025-12-29T10:00:00Z").await;
    // Suspended on 30 December at 10:00, resumed on 31 December 2025 at
    // 10:00 (one day, across the year's end and before the 1 January holiday).
    run(change(Transition::RequestDocuments, "d"), "2025-12-30T10:00:00Z").await;
    let (waiting, _) = stored(&bus, reference).await;
    assert_eq!(waiting.suspended_since, "2025-12-30T10:00:00Z");
    assert_eq!(waiting.due_at, "2025-12-31T16:59:59Z", "unchanged while waiting");
    let resumed = run(change(Transition::Resume, "r"), "2025-12-31T10:00:00Z")
        .await
        .record;
    assert_eq!(resumed.suspended_since, "");
    assert_eq!(resumed.suspended_seconds, 86_400);
    assert_eq!(resumed.due_at, "2026-01-01T16:59:59Z", "the day waited is added back");
    assert_eq!(resumed.due_date, "2026-01-01");
    // CRPA L114-5: the legal delay starts again from the pieces' receipt:
    // 31 December + 2 months = 28 February (no 31 February).
    assert_eq!(resumed.legal_due_at, "2026-02-28T10:00:00Z");
    let event = resumed.event();
    assert_eq!(event.transition(), Transition::Resume);
    let deadlines = event.deadlines.unwrap();
    assert_eq!(
        deadlines.legal_due_at.unwrap().seconds,
        at("2026-02-28T10:00:00Z").timestamp()
    );
    assert_eq!(deadlines.suspended.unwrap().seconds, 86_400);
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
