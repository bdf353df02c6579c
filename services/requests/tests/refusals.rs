//! Every refusal of UpdateRequest/GetRequest/ListRequests names what is
//! wrong and changes nothing: the tests read the record's KV revision and
//! the journal before and after.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use guichet_core::{
    Bus,
    proto::v1::{GetRequestRequest, ListRequestsRequest, Outcome, Transition, UpdateRequestRequest},
};
use guichet_harness::Nats;
use tonic::Code;

/// Calls `call`, expects `code`, and checks nothing changed.
async fn refused(
    bus: &Bus,
    client: &mut guichet_core::proto::v1::requests_client::RequestsClient<tonic::transport::Channel>,
    token: &str,
    call: UpdateRequestRequest,
    code: Code,
) -> tonic::Status {
    let reference = call.reference.clone();
    let before = (stored(bus, "2026-AAAA-0002").await, journal(bus).await.len());
    let status = client.update_request(authed(call, token)).await.unwrap_err();
    assert_eq!(status.code(), code, "{status:?}");
    let after = (stored(bus, "2026-AAAA-0002").await, journal(bus).await.len());
    assert_eq!(before, after, "a refused call on {reference} changed something");
    status
}

#[tokio::test]
async fn refusals_name_the_problem_and_change_nothing() {
    let nats = Nats::start().await;
    let bus = bus(&nats).await;
    let reference = "2026-AAAA-0002";
    seed(&bus, &record(reference, "voirie")).await;
    let service = TestRequests::start(&bus, config()).await;
    let mut client = service.client().await;

    // Take it first (version 2), so the journal has events to compare.
    client
        .update_request(authed(update(reference, Transition::Take, "t1"), VOIRIE_TOKEN))
        .await
        .unwrap();
    assert_eq!(journal(&bus).await.len(), 2);

    // Impossible transition: the message names the current status.
    let status = refused(
        &bus,
        &mut client,
        VOIRIE_TOKEN,
        update(reference, Transition::Reopen, "r1"),
        Code::FailedPrecondition,
    )
    .await;
    assert!(
        status.message().contains("while the request is taken"),
        "{}",
        status.message()
    );
    assert!(status.message().contains("ANSWER"), "{}", status.message());
    let status = refused(
        &bus,
        &mut client,
        VOIRIE_TOKEN,
        update(reference, Transition::Take, "t2"),
        Code::FailedPrecondition,
    )
    .await;
    assert!(status.message().contains("taken"), "{}", status.message());

    // Stale version.
    let mut stale = update(reference, Transition::Answer, "a1");
    stale.expected_version = Some(1);
    let status = refused(&bus, &mut client, VOIRIE_TOKEN, stale, Code::Aborted).await;
    assert!(status.message().contains("version 2, not 1"), "{}", status.message());

    // Another service's client.
    let status = refused(
        &bus,
        &mut client,
        URBA_TOKEN,
        update(reference, Transition::Answer, "a2"),
        Code::PermissionDenied,
    )
    .await;
    assert!(status.message().contains("voirie"), "{}", status.message());
    let denied = client
        .get_request(authed(
            GetRequestRequest {
                reference: reference.into(),
            },
            URBA_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let denied = client
        .list_requests(authed(
            ListRequestsRequest {
                service: "voirie".into(),
                ..Default::default()
            },
            URBA_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    // No token, a wrong token.
    let status = client
        .update_request(tonic::Request::new(update(reference, Transition::Answer, "a3")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    refused(
        &bus,
        &mut client,
        "not-a-token-0123456789",
        update(reference, Transition::Answer, "a3"),
        Code::Unauthenticated,
    )
    .await;

    // Unknown reference, malformed reference.
    let missing = update("2026-ZZZZ-9999", Transition::Answer, "a4");
    let status = refused(&bus, &mut client, VOIRIE_TOKEN, missing, Code::NotFound).await;
    assert!(status.message().contains("2026-ZZZZ-9999"));
    let status = refused(
        &bus,
        &mut client,
        VOIRIE_TOKEN,
        update("nope", Transition::Answer, "a5"),
        Code::InvalidArgument,
    )
    .await;
    assert_eq!(violated_fields(&status), ["reference"]);

    // Field by field.
    let mut empty_agent = update(reference, Transition::Answer, "a6");
    empty_agent.agent_id = "  ".into();
    let status = refused(&bus, &mut client, VOIRIE_TOKEN, empty_agent, Code::InvalidArgument).await;
    assert_eq!(violated_fields(&status), ["agent_id"]);
    let mut gateway = update(reference, Transition::Answer, "a6b");
    gateway.agent_id = "guichet".into();
    let status = refused(&bus, &mut client, VOIRIE_TOKEN, gateway, Code::InvalidArgument).await;
    assert_eq!(violated_fields(&status), ["agent_id"]);
    let mut long_note = update(reference, Transition::Answer, "a7");
    long_note.note = "é".repeat(201);
    let status = refused(&bus, &mut client, VOIRIE_TOKEN, long_note, Code::InvalidArgument).await;
    assert_eq!(violated_fields(&status), ["note"]);
    assert!(
        status.message().contains("201 characters, over the limit of 200"),
        "{}",
        status.message()
    );
    let mut unknown_outcome = update(reference, Transition::Close, "c1");
    unknown_outcome.outcome = 42;
    let status = refused(&bus, &mut client, VOIRIE_TOKEN, unknown_outcome, Code::InvalidArgument).await;
    assert_eq!(violated_fields(&status), ["outcome"]);
    let no_outcome = update(reference, Transition::Close, "c2");
    let status = refused(&bus, &mut client, VOIRIE_TOKEN, no_outcome, Code::InvalidArgument).await;
    assert_eq!(violated_fields(&status), ["outcome"]);
    let mut unknown_service = update(reference, Transition::Transfer, "x1");
    unknown_service.to_service = "piscine".into();
    let status = refused(&bus, &mut client, VOIRIE_TOKEN, unknown_service, Code::InvalidArgument).await;
    assert_eq!(violated_fields(&status), ["to_service"]);
    let mut same_service = update(reference, Transition::Transfer, "x2");
    same_service.to_service = "voirie".into();
    let status = refused(&bus, &mut client, VOIRIE_TOKEN, same_service, Code::InvalidArgument).await;
    assert_eq!(violated_fields(&status), ["to_service"]);
    let mut unknown_transition = update(reference, Transition::Answer, "u1");
    unknown_transition.transition = 99;
    let status = refused(
        &bus,
        &mut client,
        VOIRIE_TOKEN,
        unknown_transition,
        Code::InvalidArgument,
    )
    .await;
    assert_eq!(violated_fields(&status), ["transition"]);
    let opening = update(reference, Transition::Open, "u2");
    let status = refused(&bus, &mut client, VOIRIE_TOKEN, opening, Code::InvalidArgument).await;
    assert_eq!(violated_fields(&status), ["transition"]);
    let no_id = update(reference, Transition::Answer, "");
    let status = refused(&bus, &mut client, VOIRIE_TOKEN, no_id, Code::InvalidArgument).await;
    assert_eq!(violated_fields(&status), ["client_request_id"]);
    // Status messages: only where there is one to send, documents only
    // when asking for them, a bounded list.
    let mut told_resume = update(reference, Transition::Resume, "n1");
    told_resume.notify_usager = true;
    let status = refused(&bus, &mut client, VOIRIE_TOKEN, told_resume, Code::InvalidArgument).await;
    assert_eq!(violated_fields(&status), ["notify_usager"]);
    let mut documents_on_answer = update(reference, Transition::Answer, "n2");
    documents_on_answer.documents = vec!["Plan de situation".into()];
    let status = refused(
        &bus,
        &mut client,
        VOIRIE_TOKEN,
        documents_on_answer,
        Code::InvalidArgument,
    )
    .await;
    assert_eq!(violated_fields(&status), ["documents"]);
    let mut too_many = update(reference, Transition::RequestDocuments, "n3");
    too_many.documents = (0..21).map(|i| format!("pièce {i}")).collect();
    let status = refused(&bus, &mut client, VOIRIE_TOKEN, too_many, Code::InvalidArgument).await;
    assert_eq!(violated_fields(&status), ["documents"]);
    assert!(
        status.message().contains("21 documents, over the limit of 20"),
        "{}",
        status.message()
    );
    let mut blank = update(reference, Transition::RequestDocuments, "n4");
    blank.documents = vec!["Plan de situation".into(), "  ".into()];
    let status = refused(&bus, &mut client, VOIRIE_TOKEN, blank, Code::InvalidArgument).await;
    assert!(status.message().contains("documents[1]"), "{}", status.message());

    // A retry with the same client_request_id: the first answer, nothing new.
    let first = client
        .update_request(authed(update(reference, Transition::Answer, "a-final"), VOIRIE_TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((first.version, first.duplicate), (3, false));
    let before = (stored(&bus, reference).await, journal(&bus).await.len());
    let retry = client
        .update_request(authed(update(reference, Transition::Answer, "a-final"), VOIRIE_TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((retry.version, retry.duplicate), (3, true));
    assert_eq!(retry.request.unwrap().status, first.request.unwrap().status);
    assert_eq!(before, (stored(&bus, reference).await, journal(&bus).await.len()));
    // The same id for another change is a mistake, not a retry.
    let mut reused = update(reference, Transition::Close, "a-final");
    reused.outcome = Outcome::Granted.into();
    let status = refused(&bus, &mut client, VOIRIE_TOKEN, reused, Code::InvalidArgument).await;
    assert_eq!(violated_fields(&status), ["client_request_id"]);
    service.stop().await;
}

#[tokio::test]
async fn two_agents_racing_on_one_request_one_wins_the_other_is_aborted() {
    let nats = Nats::start().await;
    let bus = bus(&nats).await;
    let service = TestRequests::start(&bus, config()).await;
    for round in 0..5 {
        let reference = format!("2026-RACE-000{round}");
        seed(&bus, &record(&reference, "voirie")).await;
        let mut calls = Vec::new();
        for agent in ["agent-a", "agent-b"] {
            let mut client = service.client().await;
            let mut call = update(&reference, Transition::Take, &format!("{agent}-{round}"));
            call.agent_id = agent.into();
            call.expected_version = Some(1);
            calls.push(tokio::spawn(async move {
                client.update_request(authed(call, VOIRIE_TOKEN)).await
            }));
        }
        let mut won = Vec::new();
        let mut aborted = 0;
        for call in calls {
            match call.await.unwrap() {
                Ok(answer) => won.push(answer.into_inner().request.unwrap().assigned_to),
                Err(status) => {
                    assert_eq!(status.code(), Code::Aborted, "{status:?}");
                    aborted += 1;
                }
            }
        }
        assert_eq!((won.len(), aborted), (1, 1), "round {round}");
        let (record, _) = stored(&bus, &reference).await;
        assert_eq!(record.version, 2);
        assert_eq!(record.assigned_to, won[0], "the winner's take is the one stored");
        assert_eq!(record.history.len(), 1);
    }
    // The journal: per request, the opening and the winner's take.
    let journal = journal(&bus).await;
    assert_eq!(journal.len(), 10, "{journal:#?}");
    service.stop().await;
}
