//! Follow-ups meet the request lifecycle: a contact on a request waiting
//! for the usager resumes it, on a closed request reopens it within
//! `router.reopen_window`, and after that opens a new request that
//! continues the closed one.

#![allow(clippy::unwrap_used)]

mod common;

use chrono::{Duration, Utc};
use common::*;
use guichet_core::{
    Bus,
    proto::v1::{Outcome, Transition},
};
use guichet_harness::Nats;
use guichet_requests::{events, store};
use guichet_router::requests;

/// Applies a transition as a back-office would, at `now`.
async fn apply(bus: &Bus, reference: &str, transition: Transition, outcome: Outcome, now: chrono::DateTime<Utc>) {
    let stream = events::events_stream(bus).await.unwrap();
    let change = store::Change {
        transition,
        agent_id: "agent-1".into(),
        client: "test".into(),
        client_request_id: format!("{transition:?}-{}", now.timestamp_micros()),
        note: String::new(),
        expected_version: None,
        outcome,
        to_service: String::new(),
        notify_usager: false,
        documents: Vec::new(),
    };
    let allow = |_: &str| Ok(());
    store::update(
        bus,
        &stream,
        reference,
        &change,
        &allow,
        guichet_requests::clock::Rules::Builtin,
        now,
    )
    .await
    .unwrap()
    .unwrap();
}

#[tokio::test]
async fn a_follow_up_resumes_a_waiting_request_and_reopens_a_closed_one() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let router = RunningRouter::start(&nats, config()).await;

    let first = email_contact("a@example.fr", "Encombrants", "passage des encombrants ?");
    publish(&bus, &first).await;
    routed(&bus, &first.id).await;
    let reference = first.reference.clone();
    // The router put the request's first event on the journal.
    let opened = read_all(&bus, "EVENTS", &format!("guichet.events.request.open.{reference}")).await;
    assert_eq!(opened.len(), 1, "the open event, once");
    apply(&bus, &reference, Transition::Take, Outcome::Unspecified, Utc::now()).await;
    apply(
        &bus,
        &reference,
        Transition::RequestDocuments,
        Outcome::Unspecified,
        Utc::now(),
    )
    .await;

    let answer = email_contact("a@example.fr", &format!("Re: {reference}"), "voici la pièce");
    publish(&bus, &answer).await;
    assert_eq!(routed(&bus, &answer.id).await.follow_up_of, reference);
    let request = requests::request(&bus, &reference).await.unwrap().unwrap();
    assert_eq!(request.status, "taken");
    let resume = request.history.last().unwrap();
    assert_eq!(
        (resume.transition.as_str(), resume.agent_id.as_str()),
        ("resume", "guichet")
    );
    assert_eq!(resume.client_request_id, format!("contact:{}", answer.id));
    assert!(request.suspended_since.is_empty());

    // Closed yesterday: the usager's next message reopens it.
    apply(
        &bus,
        &reference,
        Transition::Close,
        Outcome::Granted,
        Utc::now() - Duration::days(1),
    )
    .await;
    let again = email_contact("a@example.fr", &format!("Re: {reference}"), "finalement non");
    publish(&bus, &again).await;
    assert_eq!(routed(&bus, &again.id).await.follow_up_of, reference);
    let request = requests::request(&bus, &reference).await.unwrap().unwrap();
    assert_eq!(request.status, "open");
    assert_eq!(request.history.last().unwrap().transition, "reopen");
    assert_eq!(request.version, 6);

    // Closed 40 days ago (beyond the 30-day window): a new request that
    // continues the closed one, which stays as it was.
    apply(
        &bus,
        &reference,
        Transition::Close,
        Outcome::Informed,
        Utc::now() - Duration::days(40),
    )
    .await;
    let late = email_contact("a@example.fr", &format!("Re: {reference}"), "encore moi");
    publish(&bus, &late).await;
    let late_routed = routed(&bus, &late.id).await;
    assert!(late_routed.follow_up_of.is_empty());
    assert_eq!(late_routed.reference, late.reference);
    let new = requests::request(&bus, &late.reference).await.unwrap().unwrap();
    assert_eq!(new.continues, reference);
    assert_eq!(new.status, "open");
    let old = requests::request(&bus, &reference).await.unwrap().unwrap();
    assert_eq!((old.status.as_str(), old.version), ("closed", 7));
    assert!(!old.contacts.contains(&late.id));
    router.shutdown().await;
}

#[tokio::test]
async fn a_demand_with_an_implicit_decision_carries_its_legal_clock_into_the_request() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let rules = r#"manual_service = "accueil"

[[services]]
name = "accueil"
deadline = "5 business days"

[[services]]
name = "urbanisme"
deadline = "1 business day"
implicit_decision = { kind = "acceptance", delay = "2 months" }

[[rules]]
id = "permis"
when.keywords = "permis"
service = "urbanisme"
"#;
    guichet_router::live::push(&bus, "rules", rules, "t.toml", "t")
        .await
        .unwrap();
    let router = RunningRouter::start(&nats, config()).await;
    let mut contact = email_contact("a@example.fr", "Permis", "demande de permis de construire");
    contact.received_at = Some(guichet_core::proto::timestamp(
        chrono::DateTime::parse_from_rfc3339("2026-01-31T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc),
    ));
    publish(&bus, &contact).await;
    let routed = routed(&bus, &contact.id).await;
    let q = routed.qualification.clone().unwrap();
    assert_eq!(
        q.implicit_decision(),
        guichet_core::proto::v1::ImplicitDecision::Acceptance
    );
    let legal = guichet_core::proto::to_datetime(q.legal_due_at.as_ref().unwrap()).unwrap();
    assert_eq!(
        legal.to_rfc3339(),
        "2026-03-31T09:00:00+00:00",
        "31 January 11:00 CET + 2 months, 11:00 CEST"
    );
    let decision = guichet_core::bus::routing::decision_of(&routed);
    assert_eq!(decision.legal_due_at, q.legal_due_at);
    let request = requests::request(&bus, &routed.reference).await.unwrap().unwrap();
    assert_eq!(request.legal_due_at, "2026-03-31T09:00:00Z");
    assert_eq!(
        (request.implicit_decision.as_str(), request.legal_delay.as_str()),
        ("acceptance", "2 months")
    );
    assert_eq!(
        request.deadline, "1 business day",
        "the engagement deadline's unit, kept for RESUME"
    );
    router.shutdown().await;
}
