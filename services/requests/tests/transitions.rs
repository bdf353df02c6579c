//! Every transition through the gRPC API against a real nats-server, and
//! what the record and the journal hold afterwards.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use guichet_core::proto::v1::{GetRequestRequest, Outcome, RequestStatus, Transition};
use guichet_harness::Nats;

#[tokio::test]
async fn a_request_goes_through_its_whole_life_and_the_journal_holds_each_version_once() {
    let nats = Nats::start().await;
    let bus = bus(&nats).await;
    let reference = "2026-AAAA-0001";
    seed(&bus, &record(reference, "voirie")).await;
    let service = TestRequests::start(&bus, config()).await;
    let mut client = service.client().await;

    let steps = [
        (Transition::Take, RequestStatus::Taken, "take-1"),
        (Transition::RequestDocuments, RequestStatus::WaitingUsager, "docs-1"),
        (Transition::Resume, RequestStatus::Taken, "resume-1"),
        (Transition::Answer, RequestStatus::Answered, "answer-1"),
        (Transition::RequestDocuments, RequestStatus::WaitingUsager, "docs-2"),
        (Transition::Close, RequestStatus::Closed, "close-1"),
        (Transition::Reopen, RequestStatus::Open, "reopen-1"),
        (Transition::Transfer, RequestStatus::Open, "transfer-1"),
        (Transition::Take, RequestStatus::Taken, "take-2"),
        (Transition::Transfer, RequestStatus::Open, "transfer-2"),
    ];
    for (i, (transition, to, id)) in steps.iter().enumerate() {
        let mut call = update(reference, *transition, id);
        call.expected_version = Some(i as u64 + 1);
        match transition {
            Transition::Close => call.outcome = Outcome::Withdrawn.into(),
            Transition::Transfer if *id == "transfer-1" => call.to_service = "proprete".into(),
            Transition::Transfer => call.to_service = "voirie".into(),
            _ => {}
        }
        let answer = client
            .update_request(authed(call, VOIRIE_TOKEN))
            .await
            .unwrap_or_else(|s| panic!("{id}: {s:?}"))
            .into_inner();
        assert_eq!(answer.version, i as u64 + 2, "{id}");
        assert!(!answer.duplicate);
        let view = answer.request.unwrap();
        assert_eq!(view.status(), *to, "{id}");
        assert_eq!(view.version, i as u64 + 2);
    }

    let (stored, _) = stored(&bus, reference).await;
    assert_eq!(stored.version, 11);
    assert_eq!(stored.status, "open");
    assert_eq!(stored.service, "voirie");
    assert_eq!(stored.outcome, "", "REOPEN clears the outcome");
    assert!(!stored.first_answered_at.is_empty());

    // GetRequest: the opening and every transition, with the notes.
    let view = client
        .get_request(authed(
            GetRequestRequest {
                reference: "2026 aaaa 0001".into(),
            },
            VOIRIE_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    assert_eq!(view.history.len(), 11);
    assert_eq!(view.history[0].transition(), Transition::Open);
    assert_eq!(view.history[6].outcome(), Outcome::Withdrawn);
    assert_eq!(view.history[8].to_service, "proprete");
    assert_eq!(view.history[8].from_service, "voirie");
    assert_eq!(view.history[3].note, "note of resume-1");
    assert!(
        view.history
            .iter()
            .skip(1)
            .all(|h| h.agent_id == "agent-7" && h.client == "voirie-app")
    );

    // The journal: the opening (repaired before the first change) and each
    // transition, once, in version order, without the notes.
    let journal = journal(&bus).await;
    let versions: Vec<u64> = journal.iter().map(|(_, e)| e.version).collect();
    assert_eq!(versions, (1..=11).collect::<Vec<_>>(), "{journal:#?}");
    let kinds: Vec<&str> = journal
        .iter()
        .map(|(s, _)| {
            s.trim_start_matches("guichet.events.request.")
                .split('.')
                .next()
                .unwrap()
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "open",
            "take",
            "request_documents",
            "resume",
            "answer",
            "request_documents",
            "close",
            "reopen",
            "transfer",
            "take",
            "transfer"
        ]
    );
    assert!(journal.iter().all(|(s, _)| s.ends_with(reference)));
    let (_, close) = &journal[6];
    assert_eq!(close.outcome(), Outcome::Withdrawn);
    assert_eq!(close.from_status(), RequestStatus::WaitingUsager);
    assert_eq!(close.to_status(), RequestStatus::Closed);
    assert_eq!(close.agent_id, "agent-7");
    let (_, transfer) = &journal[8];
    assert_eq!(
        (transfer.from_service.as_str(), transfer.service.as_str()),
        ("voirie", "proprete")
    );
    for (_, event) in &journal {
        let bytes = prost::Message::encode_to_vec(event);
        assert!(
            !String::from_utf8_lossy(&bytes).contains("note of"),
            "a note leaked into the journal: {event:?}"
        );
    }

    // Each transfer put the request in the new service's queue.
    let routed = guichet_harness::streams::read_all(bus.jetstream(), "ROUTED", std::time::Duration::from_secs(20))
        .await
        .unwrap();
    let subjects: Vec<&str> = routed.iter().map(|m| m.subject.as_str()).collect();
    assert_eq!(
        subjects,
        [
            "guichet.routed.proprete.U01JTESTUSAGER",
            "guichet.routed.voirie.U01JTESTUSAGER"
        ]
    );
    service.stop().await;
}
