//! The desk service through `guichet::run`, as `guichet run --services desk`
//! starts it: a counter application records a contact over gRPC and it is
//! on INTAKE; a bad site token stops the start, naming the key.
#![allow(clippy::unwrap_used)]

use guichet_e2e::{Gateway, loopback};
use std::{collections::BTreeMap, time::Duration};

use guichet::{Config, Listeners, RunError, ServiceName};
use guichet_core::{
    bus::subjects,
    proto::v1::{Channel, Contact, RecordContactRequest, desk_client::DeskClient},
    secret::Secret,
};
use guichet_desk::{DeskConfig, SiteConfig};
use guichet_harness::Nats;
use prost::Message;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "e2e-token-0123456789abcdef";

fn desk_config(token: &str) -> DeskConfig {
    DeskConfig {
        sites: BTreeMap::from([("accueil".to_owned(), SiteConfig::new(Secret::Inline(token.into())))]),
        ..DeskConfig::default()
    }
}

#[tokio::test]
async fn a_counter_contact_recorded_through_the_gateway_is_on_intake() {
    let nats = Nats::start().await;
    let config = Config {
        nats: nats.nats_config(),
        desk: desk_config(TOKEN),
        privacy: guichet_harness::privacy_config(),
        ..Config::default()
    };
    let grpc = loopback();
    let grpc_addr = grpc.local_addr().unwrap();
    let listeners = Listeners {
        grpc: Some(grpc),
        ..Listeners::default()
    };
    let gateway = Gateway::start(config, vec![ServiceName::Desk], listeners).await;

    let mut client = DeskClient::connect(format!("http://{grpc_addr}")).await.unwrap();
    let mut request = tonic::Request::new(RecordContactRequest {
        client_request_id: "e2e-1".into(),
        channel: Channel::Phone as i32,
        site: "accueil".into(),
        agent_id: "agent-7".into(),
        subject: "Signalement d'un lampadaire en panne".into(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let response = client.record_contact(request).await.unwrap().into_inner();

    let js = nats.jetstream().await;
    let mut stream = js.get_stream(subjects::INTAKE_STREAM).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 1);
    let stored = stream.direct_get(1).await.unwrap();
    assert_eq!(
        stored.subject.as_str(),
        subjects::intake_keyed(Channel::Phone, "desk:accueil:phone:e2e-1")
    );
    let contact = Contact::decode(stored.payload).unwrap();
    assert_eq!(contact.id, response.contact_id);
    assert_eq!(contact.reference, response.reference);
    assert_eq!(contact.idempotency_key, "desk:accueil:phone:e2e-1");

    gateway.stop().await;
    assert!(
        DeskClient::connect(format!("http://{grpc_addr}")).await.is_err(),
        "gRPC port closed after shutdown"
    );
}

#[tokio::test]
async fn a_bad_site_token_stops_the_start_naming_the_key() {
    let nats = Nats::start().await;
    let config = Config {
        nats: nats.nats_config(),
        desk: desk_config("short"),
        privacy: guichet_harness::privacy_config(),
        ..Config::default()
    };
    let listeners = Listeners {
        admin: Some(loopback()),
        grpc: Some(loopback()),
        ..Listeners::default()
    };
    let err = tokio::time::timeout(
        Duration::from_secs(30),
        guichet::run(config, vec![ServiceName::Desk], listeners, CancellationToken::new()),
    )
    .await
    .expect("the start fails at once")
    .unwrap_err();
    assert!(matches!(err, RunError::Service { service: "desk", .. }), "{err}");
    assert!(err.to_string().contains("desk.sites.accueil.token"), "{err}");
}
