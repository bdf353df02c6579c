//! RecordContact over loopback against a real nats-server: what reaches
//! INTAKE, idempotent retries, attachments, every status code, the routing
//! wait, deadlines, health and reflection.
// Test helpers outside #[test] functions unwrap too: a failure is the test's.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use guichet_core::{
    bus::subjects,
    proto::{
        self,
        v1::{
            CallDetails, CallDirection, Channel as ContactChannel, Decision, DeskAttachment, IdentityLevel,
            PostalDetails, RoutingStatus, contact, record_contact_request,
        },
    },
};
use guichet_harness::Nats;
use prost::Message;
use tonic::Code;

#[tokio::test]
async fn a_counter_visit_becomes_one_contact_on_intake() {
    let nats = Nats::start().await;
    let desk = TestDesk::start(&nats, config()).await;
    let mut client = desk.client().await;
    let js = nats.jetstream().await;

    let response = client
        .record_contact(authed(counter_visit("req-1"), NORD_TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.contact_id.len(), 26, "a ULID: {}", response.contact_id);
    assert!(
        guichet_core::ids::parse_reference(&response.reference).as_deref() == Some(response.reference.as_str()),
        "{}",
        response.reference
    );
    assert!(!response.duplicate);
    assert_eq!(response.routing_status, RoutingStatus::NotRequested as i32);
    assert!(response.received_at.is_some());

    let stored = intake(&js).await;
    assert_eq!(stored.len(), 1);
    let (subject, msg_id, contact) = &stored[0];
    // One subject per source request: JetStream itself refuses a second copy.
    assert_eq!(
        *subject,
        subjects::intake_keyed(ContactChannel::Counter, "desk:mairie-nord:counter:req-1")
    );
    assert_eq!(msg_id.as_deref(), Some("desk:mairie-nord:counter:req-1"));
    assert_eq!(contact.id, response.contact_id);
    assert_eq!(contact.reference, response.reference);
    assert_eq!(contact.idempotency_key, "desk:mairie-nord:counter:req-1");
    assert_eq!(contact.channel, ContactChannel::Counter as i32);
    let source = contact.source.as_ref().unwrap();
    assert_eq!(
        (
            source.name.as_str(),
            source.agent_id.as_str(),
            source.adapter_instance.as_str()
        ),
        ("mairie-nord", "agent-42", "test-instance")
    );
    assert_eq!(contact.subject, "Demande de carte d'identité");
    assert_eq!(contact.body, "Vient pour un renouvellement, pièces incomplètes.");
    let claims = contact.claims.as_ref().unwrap();
    assert_eq!(claims.email, "Jeanne.Martin@example.fr", "claims are kept as given");
    assert!(matches!(
        contact.details,
        Some(contact::Details::Counter(ref c)) if c.wait_seconds == 300 && c.service_seconds == 420
    ));
    assert_eq!(contact.received_at, response.received_at);
    desk.stop().await;
}

/// Issue 17: a site whose agents check identity documents records the
/// usager's identifiers as verified; any other site as declared, whatever
/// level the calling software sends.
#[tokio::test]
async fn identity_levels_come_from_the_site_configuration_not_the_caller() {
    let nats = Nats::start().await;
    let mut config = config();
    if let Some(nord) = config.sites.get_mut(NORD) {
        nord.checks_identity_documents = true;
    }
    let desk = TestDesk::start(&nats, config).await;
    let mut client = desk.client().await;
    let js = nats.jetstream().await;

    let mut at_nord = counter_visit("levels-nord");
    let mut at_sud = counter_visit("levels-sud");
    at_sud.site = SUD.into();
    for request in [&mut at_nord, &mut at_sud] {
        if let Some(claims) = request.usager.as_mut() {
            claims.email_level = IdentityLevel::Certified as i32;
        }
    }
    client.record_contact(authed(at_nord, NORD_TOKEN)).await.unwrap();
    client.record_contact(authed(at_sud, SUD_TOKEN)).await.unwrap();

    let stored = intake(&js).await;
    let levels: Vec<(i32, i32, i32)> = stored
        .iter()
        .map(|(_, _, c)| {
            let claims = c.claims.as_ref().unwrap();
            (claims.email_level, claims.phone_level, claims.account_level)
        })
        .collect();
    let verified = IdentityLevel::Verified as i32;
    let declared = IdentityLevel::Declared as i32;
    assert_eq!(levels, [(verified, verified, verified), (declared, declared, declared)]);
    desk.stop().await;
}

#[tokio::test]
async fn phone_and_postal_contacts_go_to_their_subjects() {
    let nats = Nats::start().await;
    let desk = TestDesk::start(&nats, config()).await;
    let mut client = desk.client().await;
    let js = nats.jetstream().await;

    let mut call = counter_visit("call-1");
    call.channel = ContactChannel::Phone as i32;
    call.details = Some(record_contact_request::Details::Call(CallDetails {
        direction: CallDirection::Inbound as i32,
        duration_seconds: 185,
        line: "standard".into(),
    }));
    client.record_contact(authed(call, NORD_TOKEN)).await.unwrap();

    let mut letter = counter_visit("letter-1");
    letter.channel = ContactChannel::Postal as i32;
    letter.usager = None;
    letter.details = Some(record_contact_request::Details::Postal(PostalDetails {
        dated: "2026-03-02".into(),
        registered_number: "1A 234 567 8901 2".into(),
    }));
    client.record_contact(authed(letter, NORD_TOKEN)).await.unwrap();

    let stored = intake(&js).await;
    let channels: Vec<Option<&str>> = stored.iter().map(|(s, _, _)| subjects::intake_channel(s)).collect();
    assert_eq!(channels, [Some("phone"), Some("postal")]);
    assert!(matches!(stored[0].2.details, Some(contact::Details::Call(ref c)) if c.duration_seconds == 185));
    assert!(stored[1].2.claims.is_none(), "an anonymous letter stays anonymous");
}

#[tokio::test]
async fn a_retry_returns_the_first_answer_and_records_nothing_new() {
    let nats = Nats::start().await;
    let desk = TestDesk::start(&nats, config()).await;
    let mut client = desk.client().await;
    let js = nats.jetstream().await;

    let first = client
        .record_contact(authed(counter_visit("same-id"), NORD_TOKEN))
        .await
        .unwrap()
        .into_inner();
    // The retry may even differ (the agent edited the notes): the first wins.
    let mut changed = counter_visit("same-id");
    changed.notes = "edited".into();
    for _ in 0..3 {
        let again = client
            .record_contact(authed(changed.clone(), NORD_TOKEN))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(again.contact_id, first.contact_id);
        assert_eq!(again.reference, first.reference);
        assert!(again.duplicate);
    }
    let stored = intake(&js).await;
    assert_eq!(stored.len(), 1, "the stream holds one message");
    assert_eq!(stored[0].2.body, counter_visit("x").notes);

    // The same client_request_id at another site is another contact.
    let mut other_site = counter_visit("same-id");
    other_site.site = SUD.into();
    let other = client
        .record_contact(authed(other_site, SUD_TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(other.contact_id, first.contact_id);
    assert!(!other.duplicate);
    assert_eq!(intake(&js).await.len(), 2);

    // And so is the same id on another channel: ids are scoped per site
    // and channel, whatever the delay between the two calls.
    let mut by_phone = counter_visit("same-id");
    by_phone.channel = ContactChannel::Phone as i32;
    by_phone.details = None;
    let phoned = client
        .record_contact(authed(by_phone, NORD_TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(phoned.contact_id, first.contact_id);
    assert!(!phoned.duplicate);
    assert_eq!(intake(&js).await.len(), 3);
}

#[tokio::test]
async fn a_scanned_letter_is_stored_in_the_object_store() {
    let nats = Nats::start().await;
    let desk = TestDesk::start(&nats, config()).await;
    let mut client = desk.client().await;
    let js = nats.jetstream().await;

    let scan: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    let mut letter = counter_visit("scan-1");
    letter.channel = ContactChannel::Postal as i32;
    letter.details = None;
    letter.attachments = vec![DeskAttachment {
        file_name: "C:\\scans\\courrier.pdf".into(),
        media_type: "application/pdf".into(),
        content: scan.clone(),
    }];
    let first = client
        .record_contact(authed(letter.clone(), NORD_TOKEN))
        .await
        .unwrap()
        .into_inner();
    let stored = intake(&js).await;
    let attachment = &stored[0].2.attachments[0];
    assert_eq!(attachment.file_name, "courrier.pdf");
    assert_eq!(attachment.media_type, "application/pdf");
    assert_eq!(attachment.size, 50_000);
    assert_eq!(desk.bus.get_attachment(&attachment.key).await.unwrap(), scan);

    // The retry answers before uploading again; nothing new anywhere.
    let again = client
        .record_contact(authed(letter, NORD_TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert!(again.duplicate);
    assert_eq!(again.contact_id, first.contact_id);
    assert_eq!(intake(&js).await.len(), 1);
    assert_eq!(attachment_count(&js).await, 1);
}

#[tokio::test]
async fn bad_input_is_invalid_argument_naming_the_field_and_records_nothing() {
    let nats = Nats::start().await;
    let desk = TestDesk::start(&nats, config()).await;
    let mut client = desk.client().await;
    let js = nats.jetstream().await;

    type Edit = fn(&mut guichet_core::proto::v1::RecordContactRequest);
    let cases: Vec<(&str, Edit)> = vec![
        ("channel", |r| r.channel = 99),
        ("channel", |r| r.channel = 0),
        ("channel", |r| r.channel = ContactChannel::Email as i32),
        ("subject", |r| r.subject = "   ".into()),
        ("subject", |r| r.subject = "two\nlines".into()),
        ("subject", |r| r.subject = "x".repeat(301)),
        ("client_request_id", |r| r.client_request_id = String::new()),
        ("client_request_id", |r| r.client_request_id = "has spaces".into()),
        ("agent_id", |r| r.agent_id = String::new()),
        ("usager.phone", |r| r.usager.as_mut().unwrap().phone = "06 12".into()),
        ("usager.email", |r| {
            r.usager.as_mut().unwrap().email = "jeanne at example".into()
        }),
        // Issue 11: two `@` used to pass and become the usager's identity.
        ("usager.email", |r| {
            r.usager.as_mut().unwrap().email = "jeanne@martin@example.fr".into()
        }),
        ("usager.email", |r| {
            r.usager.as_mut().unwrap().email = "jeanne@example..fr".into()
        }),
        ("usager.account_id", |r| {
            r.usager.as_mut().unwrap().account_id = "sub".into()
        }),
        ("notes", |r| r.notes = "x".repeat(70_000)),
        ("language", |r| r.language = "fr FR".into()),
        ("call", |r| {
            r.details = Some(record_contact_request::Details::Call(Default::default()));
        }),
        ("postal.dated", |r| {
            r.channel = ContactChannel::Postal as i32;
            r.details = Some(record_contact_request::Details::Postal(PostalDetails {
                dated: "02/03/2026".into(),
                ..Default::default()
            }));
        }),
        ("attachments[0].content", |r| {
            r.attachments = vec![DeskAttachment {
                file_name: "big.pdf".into(),
                media_type: "application/pdf".into(),
                content: vec![0u8; 64 * 1024 + 1],
            }];
        }),
        ("attachments[0].content", |r| {
            r.attachments = vec![DeskAttachment::default()];
        }),
        ("attachments[0].media_type", |r| {
            r.attachments = vec![DeskAttachment {
                media_type: "pdf".into(),
                content: vec![1u8],
                ..Default::default()
            }];
        }),
        ("routing_timeout", |r| {
            r.wait_for_routing = true;
            r.routing_timeout = Some(pbjson_types::Duration { seconds: 60, nanos: 0 });
        }),
        ("site", |r| r.site = String::new()),
    ];
    for (field, edit) in cases {
        let mut request = counter_visit("bad-1");
        edit(&mut request);
        let status = client.record_contact(authed(request, NORD_TOKEN)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert_eq!(violated_fields(&status), [field], "{status:?}");
        assert!(status.message().contains(field), "{field}: {}", status.message());
    }
    // Several mistakes are reported together.
    let mut request = counter_visit("");
    request.subject = String::new();
    let status = client.record_contact(authed(request, NORD_TOKEN)).await.unwrap_err();
    assert_eq!(violated_fields(&status), ["client_request_id", "subject"]);
    // The phone number is not echoed back.
    let mut request = counter_visit("bad-2");
    request.usager.as_mut().unwrap().phone = "0999".into();
    let status = client.record_contact(authed(request, NORD_TOKEN)).await.unwrap_err();
    assert!(!status.message().contains("0999"), "{}", status.message());
    // Two `@`: the field is named, the reason is precise, the address is
    // not echoed.
    let mut request = counter_visit("bad-3");
    request.usager.as_mut().unwrap().email = "jeanne@martin@example.fr".into();
    let status = client.record_contact(authed(request, NORD_TOKEN)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("usager.email") && status.message().contains("more than one @"),
        "{}",
        status.message()
    );
    assert!(!status.message().contains("jeanne"), "{}", status.message());

    assert!(intake(&js).await.is_empty(), "nothing was published");
    assert_eq!(attachment_count(&js).await, 0, "nothing was stored");
}

#[tokio::test]
async fn a_request_over_the_message_size_is_refused_without_internal_error() {
    let nats = Nats::start().await;
    let desk = TestDesk::start(&nats, config()).await;
    let mut client = desk.client().await;
    let js = nats.jetstream().await;
    let mut request = counter_visit("huge");
    request.attachments = vec![DeskAttachment {
        content: vec![7u8; 300 * 1024],
        ..Default::default()
    }];
    let status = client.record_contact(authed(request, NORD_TOKEN)).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(intake(&js).await.is_empty());
}

#[tokio::test]
async fn tokens_are_checked_and_bound_to_their_site() {
    let nats = Nats::start().await;
    let desk = TestDesk::start(&nats, config()).await;
    let mut client = desk.client().await;
    let js = nats.jetstream().await;

    let status = client
        .record_contact(tonic::Request::new(counter_visit("a-1")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "no token: {status:?}");
    let status = client
        .record_contact(authed(counter_visit("a-1"), "not-a-configured-token-at-all"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "wrong token: {status:?}");
    let mut basic = tonic::Request::new(counter_visit("a-1"));
    basic
        .metadata_mut()
        .insert("authorization", format!("Basic {NORD_TOKEN}").parse().unwrap());
    assert_eq!(
        client.record_contact(basic).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    // SUD's token for a NORD contact.
    let status = client
        .record_contact(authed(counter_visit("a-1"), SUD_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("mairie-sud"), "{}", status.message());
    // Unauthenticated even when the body is also invalid: auth comes first.
    let mut bad = counter_visit("");
    bad.channel = 42;
    assert_eq!(
        client
            .record_contact(tonic::Request::new(bad))
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );

    let history = guichet_core::proto::v1::GetUsagerHistoryRequest {
        site: NORD.into(),
        usager: Some(guichet_core::proto::v1::get_usager_history_request::Usager::UsagerId(
            "U1".into(),
        )),
        ..Default::default()
    };
    assert_eq!(
        client
            .get_usager_history(tonic::Request::new(history.clone()))
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    assert_eq!(
        client
            .get_usager_history(authed(history, SUD_TOKEN))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    assert!(intake(&js).await.is_empty());
}

/// The router's stand-in: reads the contact from INTAKE and answers on
/// `guichet.decided.<contact id>`, as the router does.
async fn stand_in_router(nats: &Nats, delay: Duration) -> tokio::task::JoinHandle<()> {
    use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
    use futures::StreamExt;
    let js = nats.jetstream().await;
    let client = nats.client().await;
    let stream = js.get_stream(subjects::INTAKE_STREAM).await.unwrap();
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_policy: DeliverPolicy::New,
            ..Default::default()
        })
        .await
        .unwrap();
    tokio::spawn(async move {
        let mut messages = consumer.messages().await.unwrap();
        while let Some(Ok(message)) = messages.next().await {
            let contact = guichet_core::proto::v1::Contact::decode(message.payload.clone()).unwrap();
            tokio::time::sleep(delay).await;
            let decision = Decision {
                contact_id: contact.id.clone(),
                reference: contact.reference.clone(),
                usager_id: "U01TESTUSAGER".into(),
                service: "etat-civil".into(),
                typology: "titres-identite".into(),
                due_at: Some(proto::timestamp(chrono::Utc::now() + chrono::Duration::days(14))),
                due_date: "2026-03-16".into(),
                follow_up: false,
                ..Default::default()
            };
            client
                .publish(subjects::decided(&contact.id), decision.encode_to_vec().into())
                .await
                .unwrap();
            client.flush().await.unwrap();
        }
    })
}

#[tokio::test]
async fn wait_for_routing_returns_the_decision() {
    let nats = Nats::start().await;
    let desk = TestDesk::start(&nats, config()).await;
    let mut client = desk.client().await;
    let router = stand_in_router(&nats, Duration::from_millis(100)).await;

    let mut request = counter_visit("wait-1");
    request.wait_for_routing = true;
    let response = client
        .record_contact(authed(request, NORD_TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.routing_status, RoutingStatus::Decided as i32);
    let decision = response.decision.unwrap();
    assert_eq!(decision.contact_id, response.contact_id);
    assert_eq!(decision.reference, response.reference);
    assert_eq!(decision.service, "etat-civil");
    assert_eq!(decision.due_date, "2026-03-16");
    router.abort();
}

#[tokio::test]
async fn a_retry_asking_for_routing_gets_a_decision_made_long_before() {
    let nats = Nats::start().await;
    let desk = TestDesk::start(&nats, config()).await;
    let mut client = desk.client().await;
    let bus = nats.bus().await;

    let first = client
        .record_contact(authed(counter_visit("routed-long-ago"), NORD_TOKEN))
        .await
        .unwrap()
        .into_inner();
    // The test plays the router: the Routed envelope on ROUTED, then the
    // contact index; its decision event went out when nobody listened.
    let stored = intake(&nats.jetstream().await).await;
    let contact = stored[0].2.clone();
    let routed = guichet_core::proto::v1::Routed {
        contact: Some(contact.clone()),
        usager_id: "U01TESTUSAGER".into(),
        reference: contact.reference.clone(),
        qualification: Some(guichet_core::proto::v1::Qualification {
            service: "etat-civil".into(),
            typology: "titres-identite".into(),
            due_date: "2026-03-16".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let subject = subjects::routed("etat-civil", "U01TESTUSAGER");
    let published = bus
        .publish(subject.clone(), &contact.id, routed.encode_to_vec().into())
        .await
        .unwrap();
    bus.put_routed_index(
        &contact.id,
        &guichet_core::bus::routing::RoutedIndex {
            stream: published.stream,
            sequence: published.sequence,
            subject,
            reference: contact.reference.clone(),
        },
    )
    .await
    .unwrap();

    let mut retry = counter_visit("routed-long-ago");
    retry.wait_for_routing = true;
    let started = std::time::Instant::now();
    let again = client
        .record_contact(authed(retry, NORD_TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert!(again.duplicate);
    assert_eq!(again.contact_id, first.contact_id);
    assert_eq!(again.routing_status, RoutingStatus::Decided as i32);
    let decision = again.decision.unwrap();
    assert_eq!(decision.contact_id, first.contact_id);
    assert_eq!(decision.reference, first.reference);
    assert_eq!(decision.service, "etat-civil");
    assert_eq!(decision.due_date, "2026-03-16");
    // Read from the index, not waited for: before the 2 s wait would end.
    assert!(
        started.elapsed() < Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(intake(&nats.jetstream().await).await.len(), 1);
}

#[tokio::test]
async fn wait_for_routing_times_out_without_error() {
    let nats = Nats::start().await;
    let desk = TestDesk::start(&nats, config()).await;
    let mut client = desk.client().await;
    let js = nats.jetstream().await;

    // No router at all: the asked wait bounds the call.
    let mut request = counter_visit("wait-2");
    request.wait_for_routing = true;
    request.routing_timeout = Some(pbjson_types::Duration {
        seconds: 0,
        nanos: 300_000_000,
    });
    let started = std::time::Instant::now();
    let response = client
        .record_contact(authed(request, NORD_TOKEN))
        .await
        .unwrap()
        .into_inner();
    let took = started.elapsed();
    assert_eq!(response.routing_status, RoutingStatus::Pending as i32);
    assert!(response.decision.is_none());
    assert!(!response.contact_id.is_empty());
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    assert_eq!(intake(&js).await.len(), 1, "the contact is recorded all the same");

    // A wait longer than the caller's deadline is cut short by it: the
    // answer comes before the deadline (a tenth of it kept as margin),
    // OK and PENDING, not DEADLINE_EXCEEDED.
    let mut request = counter_visit("wait-3");
    request.wait_for_routing = true;
    request.routing_timeout = Some(pbjson_types::Duration { seconds: 10, nanos: 0 });
    let mut request = authed(request, NORD_TOKEN);
    request.set_timeout(Duration::from_secs(3));
    let started = std::time::Instant::now();
    let response = client.record_contact(request).await.unwrap().into_inner();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_secs(3),
        "answered at {took:?}, before the 3 s deadline and after the wait it allowed"
    );
    assert_eq!(response.routing_status, RoutingStatus::Pending as i32);

    // A router slower than the wait: PENDING, then the decision is ignored.
    use futures::StreamExt;
    let mut decisions = nats.client().await.subscribe(subjects::decided("*")).await.unwrap();
    let router = stand_in_router(&nats, Duration::from_millis(600)).await;
    let mut request = counter_visit("wait-4");
    request.wait_for_routing = true;
    request.routing_timeout = Some(pbjson_types::Duration {
        seconds: 0,
        nanos: 200_000_000,
    });
    let response = client
        .record_contact(authed(request, NORD_TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.routing_status, RoutingStatus::Pending as i32);
    assert!(response.decision.is_none());
    // The decision does come, after the answer: the call did not take it.
    let late = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(message) = decisions.next().await {
            if message.subject.as_str() == subjects::decided(&response.contact_id) {
                return Some(Decision::decode(message.payload).unwrap());
            }
        }
        None
    })
    .await
    .expect("the stand-in router decides within 5 s")
    .expect("a decision for the contact");
    assert_eq!(late.contact_id, response.contact_id);
    // Ignoring it is harmless: the next call is answered as usual.
    let next = client
        .record_contact(authed(counter_visit("wait-5"), NORD_TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next.routing_status, RoutingStatus::NotRequested as i32);
    assert!(next.decision.is_none());
    router.abort();
}

#[tokio::test]
async fn health_and_reflection_are_served() {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };

    let nats = Nats::start().await;
    let desk = TestDesk::start(&nats, config()).await;
    let channel = desk.channel().await;

    let mut health = HealthClient::new(channel.clone());
    let mut serving = None;
    for _ in 0..40 {
        let answer = health
            .check(HealthCheckRequest {
                service: "guichet.v1.Desk".into(),
            })
            .await;
        if let Ok(a) = answer {
            serving = Some(a.into_inner().status);
            if serving == Some(ServingStatus::Serving as i32) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(serving, Some(ServingStatus::Serving as i32));
    assert_eq!(desk.health.check().1, Vec::<String>::new(), "desk reported ready");

    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(futures::stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("{answer:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"guichet.v1.Desk".to_owned()), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health".to_owned()), "{names:?}");
    desk.stop().await;
}
