//! The request lifecycle through the whole gateway (`guichet::run` with
//! web, router and requests): a web submission reaches a service's queue,
//! a tonic client plays the back-office (take, request documents), the
//! usager answers by web citing the reference (the router resumes the
//! request), the agent answers and closes; GetRequest shows the whole
//! history and the journal holds each transition once.
#![allow(clippy::unwrap_used)]

use std::{collections::BTreeMap, time::Duration};

use guichet::{Config, Listeners, ServiceName};
use guichet_core::{
    proto::v1::{
        DeadlineAlert, GetRequestRequest, Outcome, RequestEvent, RequestStatus, RequestView, Transition,
        UpdateRequestRequest, requests_client::RequestsClient,
    },
    secret::Secret,
};
use guichet_e2e::Gateway;
use guichet_harness::Nats;
use guichet_requests::{ClientConfig, RequestsConfig};
use guichet_web::WebConfig;
use prost::Message;
use tonic::{Code, Request, transport::Channel};

const SECRET: &str = "e2e-secret-0123456789abcdef";
const TOKEN: &str = "back-office-0123456789abcdef0123";

fn web_config() -> WebConfig {
    guichet_e2e::signed_contact_form(SECRET)
}

async fn submit(url: &str, message: &str) -> serde_json::Value {
    guichet_e2e::submit_contact(url, SECRET, "usager@example.fr", message).await
}

fn authed<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    request
}

/// Polls GetRequest until `ready` holds (bounded: the router works in the
/// background on a loaded machine).
async fn wait_for(
    client: &mut RequestsClient<Channel>,
    reference: &str,
    ready: impl Fn(&RequestView) -> bool,
) -> RequestView {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match client
            .get_request(authed(GetRequestRequest {
                reference: reference.into(),
            }))
            .await
        {
            Ok(answer) => {
                let view = answer.into_inner().request.unwrap();
                if ready(&view) {
                    return view;
                }
            }
            Err(status) => assert_eq!(status.code(), Code::NotFound, "{status:?}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "request {reference} never got there"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_web_request_lives_its_whole_life_through_the_gateway() {
    let nats = Nats::start().await;
    let service = guichet_router::RouterConfig::default().fallback_service;
    let requests_listener = guichet_e2e::loopback();
    let mut config = Config {
        nats: nats.nats_config(),
        web: web_config(),
        requests: RequestsConfig {
            listen: requests_listener.local_addr().unwrap(),
            clients: BTreeMap::from([(
                "back-office".to_owned(),
                ClientConfig {
                    token: Secret::Inline(TOKEN.into()),
                    services: vec![service.clone()],
                },
            )]),
            ..RequestsConfig::default()
        },
        privacy: guichet_harness::privacy_config(),
        ..Config::default()
    };
    config.admin.listen = "127.0.0.1:0".parse().unwrap();
    let services = vec![ServiceName::Web, ServiceName::Router, ServiceName::Requests];
    let mut listeners = Listeners::bind(&config, &[ServiceName::Web]).unwrap();
    listeners.requests = Some(requests_listener);
    let web_url = format!(
        "http://{}/v1/forms/contact/submissions",
        listeners.web.as_ref().unwrap().local_addr().unwrap()
    );
    let grpc = format!("http://{}", listeners.requests.as_ref().unwrap().local_addr().unwrap());
    let gateway = Gateway::start(config, services, listeners).await;

    let first = submit(&web_url, "Bonjour, un nid-de-poule rue des Lilas.").await;
    let reference = first["reference"].as_str().unwrap().to_owned();
    let mut client = RequestsClient::connect(grpc).await.unwrap();
    let opened = wait_for(&mut client, &reference, |_| true).await;
    assert_eq!(opened.service, service);
    assert_eq!(opened.status(), RequestStatus::Open);

    let updater = client.clone();
    let update = |transition: Transition, id: &str, version: u64| {
        let mut client = updater.clone();
        let call = UpdateRequestRequest {
            reference: reference.clone(),
            transition: transition.into(),
            agent_id: "agent-12".into(),
            note: format!("{id}: see the file"),
            expected_version: Some(version),
            client_request_id: id.into(),
            outcome: if transition == Transition::Close {
                Outcome::Granted.into()
            } else {
                Outcome::Unspecified.into()
            },
            ..Default::default()
        };
        async move { client.update_request(authed(call)).await.unwrap().into_inner() }
    };
    update(Transition::Take, "take", 1).await;
    update(Transition::RequestDocuments, "docs", 2).await;

    // The usager answers by web, citing the reference.
    submit(&web_url, &format!("Voici la photo demandée, dossier {reference}.")).await;
    let resumed = wait_for(&mut client, &reference, |v| v.status() == RequestStatus::Taken).await;
    assert_eq!(resumed.version, 4);
    assert_eq!(resumed.contacts.len(), 2, "the answer joined the request");
    let resume = resumed.history.last().unwrap();
    assert_eq!(resume.transition(), Transition::Resume);
    assert_eq!(resume.agent_id, "guichet");

    update(Transition::Answer, "answer", 4).await;
    let closed = update(Transition::Close, "close", 5).await;
    assert_eq!(closed.version, 6);

    let view = wait_for(&mut client, &reference, |_| true).await;
    let history: Vec<(Transition, &str)> = view
        .history
        .iter()
        .map(|h| (h.transition(), h.agent_id.as_str()))
        .collect();
    assert_eq!(
        history,
        [
            (Transition::Open, "guichet"),
            (Transition::Take, "agent-12"),
            (Transition::RequestDocuments, "agent-12"),
            (Transition::Resume, "guichet"),
            (Transition::Answer, "agent-12"),
            (Transition::Close, "agent-12"),
        ]
    );
    assert_eq!(view.status(), RequestStatus::Closed);
    assert_eq!(view.outcome(), Outcome::Granted);
    assert!(view.first_answered_at.is_some());

    // The journal: each transition once, in order.
    let js = nats.jetstream().await;
    let events: Vec<RequestEvent> = guichet_harness::streams::read_all(&js, "EVENTS", Duration::from_secs(20))
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.subject.starts_with("guichet.events.request."))
        .map(|m| RequestEvent::decode(m.payload.as_slice()).unwrap())
        .filter(|e| e.alert() == DeadlineAlert::Unspecified)
        .collect();
    let journal: Vec<(u64, Transition)> = events.iter().map(|e| (e.version, e.transition())).collect();
    assert_eq!(
        journal,
        [
            (1, Transition::Open),
            (2, Transition::Take),
            (3, Transition::RequestDocuments),
            (4, Transition::Resume),
            (5, Transition::Answer),
            (6, Transition::Close),
        ]
    );
    assert!(events.iter().all(|e| e.reference == reference && e.service == service));
    gateway.stop().await;
}
