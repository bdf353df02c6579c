//! What the desk tests share: a real nats-server (harness), the desk
//! service on a loopback port, a real tonic client, and readers of what
//! the streams hold.
#![allow(dead_code)]

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use async_nats::jetstream;
use guichet_core::{
    Bus, ServiceContext,
    admin::Health,
    bus::subjects,
    proto::v1::{
        Channel as ContactChannel, Contact, CounterDetails, IdentityClaims, RecordContactRequest, Routed,
        desk_client::DeskClient, record_contact_request,
    },
    secret::Secret,
};
use guichet_desk::{DeskConfig, DeskError, HistoryScope, SiteConfig};
use guichet_harness::Nats;
use prost::Message;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::{Request, transport::Channel};

pub const NORD: &str = "mairie-nord";
pub const SUD: &str = "mairie-sud";
pub const NORD_TOKEN: &str = "nord-0123456789abcdef0123456789";
pub const SUD_TOKEN: &str = "sud-0123456789abcdef0123456789ab";

/// Two sites (NORD with history scope `all`, SUD `own_site`), small
/// limits so that limits are cheap to test.
pub fn config() -> DeskConfig {
    DeskConfig {
        listen: "127.0.0.1:50051".parse().unwrap(),
        sites: BTreeMap::from([
            (
                NORD.to_owned(),
                // NORD reads every channel's history; SUD has the default scope.
                SiteConfig {
                    history: HistoryScope::All,
                    ..SiteConfig::new(Secret::Inline(NORD_TOKEN.into()))
                },
            ),
            (SUD.to_owned(), SiteConfig::new(Secret::Inline(SUD_TOKEN.into()))),
        ]),
        max_message_size: 256 * 1024,
        max_attachment_size: 64 * 1024,
        ..DeskConfig::default()
    }
}

/// A desk service running on a loopback port.
pub struct TestDesk {
    pub addr: SocketAddr,
    pub bus: Bus,
    pub health: Health,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), DeskError>>,
}

impl TestDesk {
    pub async fn start(nats: &Nats, config: DeskConfig) -> Self {
        let bus = nats.bus().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let health = Health::default();
        health.set_bus(bus.clone());
        let ctx = ServiceContext {
            bus: bus.clone(),
            health: health.clone(),
            instance: "test-instance".into(),
            privacy: guichet_harness::pseudonymizer().clone(),
        };
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(guichet_desk::run(ctx, config, listener, shutdown.clone()));
        Self {
            addr,
            bus,
            health,
            shutdown,
            task,
        }
    }

    pub async fn client(&self) -> DeskClient<Channel> {
        DeskClient::connect(format!("http://{}", self.addr)).await.unwrap()
    }

    pub async fn channel(&self) -> Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let outcome = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("desk stops on shutdown")
            .unwrap();
        assert!(outcome.is_ok(), "{outcome:?}");
    }
}

/// `message` with `authorization: Bearer <token>`.
pub fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// A valid counter visit logged at site NORD.
pub fn counter_visit(client_request_id: &str) -> RecordContactRequest {
    RecordContactRequest {
        client_request_id: client_request_id.into(),
        channel: ContactChannel::Counter as i32,
        site: NORD.into(),
        agent_id: "agent-42".into(),
        usager: Some(IdentityClaims {
            name: "Mme Jeanne Martin".into(),
            email: "Jeanne.Martin@example.fr".into(),
            phone: "06 12 34 56 78".into(),
            ..Default::default()
        }),
        subject: "Demande de carte d'identité".into(),
        notes: "Vient pour un renouvellement, pièces incomplètes.".into(),
        language: "fr".into(),
        details: Some(record_contact_request::Details::Counter(CounterDetails {
            wait_seconds: 300,
            service_seconds: 420,
        })),
        ..Default::default()
    }
}

/// Every message of `stream`, as (subject, Nats-Msg-Id, payload).
pub async fn stream_messages(js: &jetstream::Context, stream: &str) -> Vec<(String, Option<String>, bytes::Bytes)> {
    let mut s = js.get_stream(stream).await.unwrap();
    let state = s.info().await.unwrap().state.clone();
    let mut out = Vec::new();
    if state.messages == 0 {
        return out;
    }
    for seq in state.first_sequence..=state.last_sequence {
        if let Ok(m) = s.direct_get(seq).await {
            let id = m.headers.get("Nats-Msg-Id").map(|v| v.as_str().to_owned());
            out.push((m.subject.to_string(), id, m.payload));
        }
    }
    out
}

/// The contacts INTAKE holds, with their subject and message id.
pub async fn intake(js: &jetstream::Context) -> Vec<(String, Option<String>, Contact)> {
    stream_messages(js, subjects::INTAKE_STREAM)
        .await
        .into_iter()
        .map(|(s, id, p)| (s, id, Contact::decode(p).unwrap()))
        .collect()
}

/// How many objects the attachments store holds.
pub async fn attachment_count(js: &jetstream::Context) -> usize {
    use futures::StreamExt;
    let store = js.get_object_store(subjects::ATTACHMENTS_STORE).await.unwrap();
    let mut list = store.list().await.unwrap();
    let mut n = 0;
    while let Some(item) = list.next().await {
        if !item.unwrap().deleted {
            n += 1;
        }
    }
    n
}

/// The router's part, played by the test: publishes a `Routed` envelope
/// the way the router does (`guichet.routed.<service>.<usager>`, message id
/// = contact id).
pub async fn publish_routed(bus: &Bus, routed: &Routed) {
    let service = &routed.qualification.as_ref().unwrap().service;
    let contact_id = &routed.contact.as_ref().unwrap().id;
    bus.publish(
        subjects::routed(service, &routed.usager_id),
        contact_id,
        routed.encode_to_vec().into(),
    )
    .await
    .unwrap();
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
