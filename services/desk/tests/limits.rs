//! The desk's bounds against a real nats-server: the request bytes being
//! processed by all callers together are budgeted, and a request that does
//! not fit is UNAVAILABLE at once (not queued), then served once room is
//! back.
// Test helpers outside #[test] functions unwrap too: a failure is the test's.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use guichet_core::proto::v1::{Channel as ContactChannel, DeskAttachment, RoutingStatus};
use guichet_harness::Nats;
use tokio::time::Instant;
use tonic::Code;

/// A postal letter with a scan of `size` bytes.
fn letter(id: &str, size: usize) -> guichet_core::proto::v1::RecordContactRequest {
    let mut letter = counter_visit(id);
    letter.channel = ContactChannel::Postal as i32;
    letter.details = None;
    letter.attachments = vec![DeskAttachment {
        file_name: format!("{id}.pdf"),
        media_type: "application/pdf".into(),
        content: (0..size).map(|i| (i % 251) as u8).collect(),
    }];
    letter
}

#[tokio::test]
async fn past_the_byte_budget_a_request_is_unavailable_at_once() {
    let nats = Nats::start().await;
    let desk = TestDesk::start(
        &nats,
        guichet_desk::DeskConfig {
            max_message_size: 128 * 1024,
            max_attachment_size: 100 * 1024,
            max_buffered_bytes: 128 * 1024,
            ..config()
        },
    )
    .await;
    let js = nats.jetstream().await;

    // A letter of 90 KiB that then waits for the router (there is none):
    // it holds its bytes of the budget for the whole wait.
    let mut holder = letter("budget-holder", 90 * 1024);
    holder.wait_for_routing = true;
    holder.routing_timeout = Some(pbjson_types::Duration { seconds: 10, nanos: 0 });
    let mut client = desk.client().await;
    let holding = tokio::spawn(async move { client.record_contact(authed(holder, NORD_TOKEN)).await });
    // It is recorded before it waits.
    let deadline = Instant::now() + Duration::from_secs(10);
    while intake(&js).await.is_empty() {
        assert!(Instant::now() < deadline, "the holder was never recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut client = desk.client().await;
    // A small request still fits beside it: a budget of bytes, not of calls.
    client
        .record_contact(authed(counter_visit("budget-small"), NORD_TOKEN))
        .await
        .unwrap();
    // A 60 KiB letter does not: refused at once, not queued behind the wait.
    let started = Instant::now();
    let status = client
        .record_contact(authed(letter("budget-refused", 60 * 1024), NORD_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    assert!(!holding.is_finished(), "the holder's wait ended before the check");
    assert_eq!(intake(&js).await.len(), 2, "the refused letter was not recorded");

    // Once the holder has its answer, the same letter goes through.
    let held = holding.await.unwrap().unwrap().into_inner();
    assert_eq!(held.routing_status, RoutingStatus::Pending as i32);
    client
        .record_contact(authed(letter("budget-refused", 60 * 1024), NORD_TOKEN))
        .await
        .unwrap();
    assert_eq!(intake(&js).await.len(), 3);
    desk.stop().await;
}
