//! The request lifecycle through the whole gateway (`guichet::run` with
//! web, router and requests): a web submission reaches a service's queue,
//! a tonic client plays the back-office (take, request documents), the
//! usager answers by web citing the reference (the router resumes the
//! request), the agent answers and closes; GetRequest shows the whole
//! history and the journal holds each transition once.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use guichet::{Config, Listeners, ServiceName};
use guichet_core::proto::v1::{DeadlineAlert, Outcome, RequestEvent, RequestStatus, Transition};
use guichet_e2e::{BackOffice, Gateway};
use guichet_harness::Nats;
use guichet_web::WebConfig;
use prost::Message;

const SECRET: &str = "e2e-secret-0123456789abcdef";
const TOKEN: &str = "back-office-0123456789abcdef0123";

fn web_config() -> WebConfig {
    guichet_e2e::signed_contact_form(SECRET)
}

async fn submit(url: &str, message: &str) -> serde_json::Value {
    guichet_e2e::submit_contact(url, SECRET, "usager@example.fr", message).await
}

#[tokio::test]
async fn a_web_request_lives_its_whole_life_through_the_gateway() {
    let nats = Nats::start().await;
    let service = guichet_router::RouterConfig::default().fallback_service;
    let requests_listener = guichet_e2e::loopback();
    let mut config = Config {
        nats: nats.nats_config(),
        web: web_config(),
        requests: guichet_e2e::requests_config(requests_listener.local_addr().unwrap(), TOKEN, vec![service.clone()]),
        privacy: guichet_harness::privacy_config(),
        ..Config::default()
    };
    config.admin.listen = "127.0.0.1:0".parse().unwrap();
    let services = vec![ServiceName::Web, ServiceName::Router, ServiceName::Requests];
    let mut listeners = Listeners::bind(&config, &[ServiceName::Web]).unwrap();
    listeners.requests = Some(requests_listener);
    let web_url = guichet_e2e::contact_form_url(&listeners);
    let grpc = listeners.requests.as_ref().unwrap().local_addr().unwrap();
    let gateway = Gateway::start(config, services, listeners).await;

    let first = submit(&web_url, "Bonjour, un nid-de-poule rue des Lilas.").await;
    let reference = first["reference"].as_str().unwrap().to_owned();
    let mut back_office = BackOffice::connect(grpc, TOKEN).await.as_agent("agent-12");
    let opened = back_office.wait_for(&reference, |_| true).await;
    assert_eq!(opened.service, service);
    assert_eq!(opened.status(), RequestStatus::Open);

    back_office.update(&reference, Transition::Take, 1).await;
    back_office.update(&reference, Transition::RequestDocuments, 2).await;

    // The usager answers by web, citing the reference.
    submit(&web_url, &format!("Voici la photo demandée, dossier {reference}.")).await;
    let resumed = back_office
        .wait_for(&reference, |v| v.status() == RequestStatus::Taken)
        .await;
    assert_eq!(resumed.version, 4);
    assert_eq!(resumed.contacts.len(), 2, "the answer joined the request");
    let resume = resumed.history.last().unwrap();
    assert_eq!(resume.transition(), Transition::Resume);
    assert_eq!(resume.agent_id, "guichet");

    back_office.update(&reference, Transition::Answer, 4).await;
    let closed = back_office.update(&reference, Transition::Close, 5).await;
    assert_eq!(closed.version, 6);

    let view = back_office.wait_for(&reference, |_| true).await;
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
