//! What the requests tests share: a real nats-server (harness), the
//! requests service on a loopback port, a real tonic client, requests
//! seeded the way the router opens them, and readers of the journal.
#![allow(dead_code, clippy::unwrap_used)]

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use guichet_core::{
    Bus, ServiceContext,
    admin::Health,
    bus::subjects,
    proto::v1::{RequestEvent, UpdateRequestRequest, requests_client::RequestsClient},
    request::{RequestRecord, request_key},
    secret::Secret,
};
use guichet_harness::Nats;
use guichet_requests::{ClientConfig, RequestsConfig, RequestsError};
use prost::Message;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::{Request, transport::Channel};

pub const VOIRIE_TOKEN: &str = "voirie-0123456789abcdef0123456789";
pub const URBA_TOKEN: &str = "urba-0123456789abcdef0123456789ab";

/// Two back-office clients: voirie (voirie, proprete) and urbanisme.
pub fn config() -> RequestsConfig {
    RequestsConfig {
        listen: "127.0.0.1:50052".parse().unwrap(),
        clients: BTreeMap::from([
            (
                "voirie-app".to_owned(),
                ClientConfig {
                    token: Secret::Inline(VOIRIE_TOKEN.into()),
                    services: vec!["voirie".into(), "proprete".into()],
                },
            ),
            (
                "urba-app".to_owned(),
                ClientConfig {
                    token: Secret::Inline(URBA_TOKEN.into()),
                    services: vec!["urbanisme".into()],
                },
            ),
        ]),
        max_note_length: 200,
        ..RequestsConfig::default()
    }
}

/// The requests service on a loopback port.
pub struct TestRequests {
    pub addr: SocketAddr,
    pub bus: Bus,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), RequestsError>>,
    pub health: Health,
}

impl TestRequests {
    pub async fn start(bus: &Bus, config: RequestsConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let health = Health::default();
        health.set_bus(bus.clone());
        // Declared unready until the service says it serves.
        health.set_ready("requests", false);
        let ctx = ServiceContext {
            bus: bus.clone(),
            health: health.clone(),
            instance: "test-instance".into(),
            privacy: guichet_harness::pseudonymizer().clone(),
        };
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(guichet_requests::run(ctx, config, listener, shutdown.clone()));
        let this = Self {
            addr,
            bus: bus.clone(),
            shutdown,
            task,
            health,
        };
        // Serving once ready (the start-up repair runs first).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !this.health.check().0 {
            assert!(tokio::time::Instant::now() < deadline, "requests did not become ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        this
    }

    pub async fn client(&self) -> RequestsClient<Channel> {
        RequestsClient::connect(format!("http://{}", self.addr)).await.unwrap()
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let outcome = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("requests stops on shutdown")
            .unwrap();
        assert!(outcome.is_ok(), "{outcome:?}");
    }
}

pub async fn bus(nats: &Nats) -> Bus {
    nats.bus().await
}

/// `message` with `authorization: Bearer <token>`.
pub fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// A request as the router opens it (version 1, open), with deadlines.
pub fn record(reference: &str, service: &str) -> RequestRecord {
    RequestRecord {
        reference: reference.into(),
        service: service.into(),
        usager_id: "U01JTESTUSAGER".into(),
        typology: "nid-de-poule".into(),
        due_at: "2026-03-06T16:59:59Z".into(),
        due_date: "2026-03-06".into(),
        status: "open".into(),
        opened_by: format!("C-{reference}"),
        opened_at: "2026-03-02T09:00:00Z".into(),
        rule_id: "voirie-trous".into(),
        rules_revision: 3,
        contacts: vec![format!("C-{reference}")],
        channel: "web".into(),
        version: 1,
        ..Default::default()
    }
}

/// Stores `record` under its key, as the router does.
pub async fn seed(bus: &Bus, record: &RequestRecord) {
    bus.stores()
        .requests
        .create(
            request_key(&record.reference),
            serde_json::to_vec(record).unwrap().into(),
        )
        .await
        .unwrap();
}

/// The stored record and its KV revision.
pub async fn stored(bus: &Bus, reference: &str) -> (RequestRecord, u64) {
    let entry = bus
        .stores()
        .requests
        .entry(request_key(reference))
        .await
        .unwrap()
        .unwrap();
    (serde_json::from_slice(&entry.value).unwrap(), entry.revision)
}

/// The transition events of the journal (the sweeper's deadline alerts
/// left out: they come when they come), as (subject, event).
pub async fn journal(bus: &Bus) -> Vec<(String, RequestEvent)> {
    request_events(bus)
        .await
        .into_iter()
        .filter(|(_, e)| e.alert() == guichet_core::proto::v1::DeadlineAlert::Unspecified)
        .collect()
}

/// Every request event of the journal, alerts included.
pub async fn request_events(bus: &Bus) -> Vec<(String, RequestEvent)> {
    guichet_harness::streams::read_all(bus.jetstream(), subjects::EVENTS_STREAM, Duration::from_secs(20))
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.subject.starts_with("guichet.events.request."))
        .map(|m| (m.subject.clone(), RequestEvent::decode(m.payload.as_slice()).unwrap()))
        .collect()
}

/// An update with the fields every call needs.
pub fn update(reference: &str, transition: guichet_core::proto::v1::Transition, id: &str) -> UpdateRequestRequest {
    UpdateRequestRequest {
        reference: reference.into(),
        transition: transition.into(),
        agent_id: "agent-7".into(),
        note: format!("note of {id}"),
        client_request_id: id.into(),
        ..Default::default()
    }
}

/// The field paths of an INVALID_ARGUMENT's BadRequest detail.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|f| f.field.clone()).collect())
        .unwrap_or_default()
}
