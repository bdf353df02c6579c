//! Start-up checks name the configuration key; a broker outage is
//! UNAVAILABLE (retry) and nothing is half-written.
#![allow(clippy::unwrap_used)]

mod common;

use std::{collections::BTreeMap, time::Duration};

use common::*;
use guichet_core::{proto::v1::Transition, secret::Secret};
use guichet_harness::Nats;
use guichet_requests::{ClientConfig, RequestsTlsConfig};

#[test]
fn configuration_errors_name_the_key() {
    let check = |config| guichet_requests::check(&config).unwrap_err().to_string();
    let mut none = config();
    none.clients = BTreeMap::new();
    assert!(check(none).contains("`requests.clients`"));
    let mut short = config();
    short.clients.insert(
        "x".into(),
        ClientConfig {
            token: Secret::Inline("short".into()),
            services: vec!["voirie".into()],
        },
    );
    assert!(check(short).contains("`requests.clients.x.token`"));
    let mut same = config();
    same.clients.insert(
        "twin".into(),
        ClientConfig {
            token: Secret::Inline(VOIRIE_TOKEN.into()),
            services: vec!["voirie".into()],
        },
    );
    assert!(check(same).contains("each client needs its own"));
    let mut no_service = config();
    no_service.clients.get_mut("urba-app").unwrap().services.clear();
    assert!(check(no_service).contains("`requests.clients.urba-app.services`"));
    let mut bad_service = config();
    bad_service.clients.get_mut("urba-app").unwrap().services = vec!["a.b".into()];
    assert!(check(bad_service).contains("`requests.clients.urba-app.services`"));
    let mut tls = config();
    tls.tls = Some(RequestsTlsConfig {
        cert_file: "/nonexistent/requests.crt".into(),
        key_file: "/nonexistent/requests.key".into(),
        client_ca_file: None,
    });
    assert!(check(tls).contains("`requests.tls.cert_file`"));
    let mut interval = config();
    interval.sweep_interval = Duration::from_millis(1);
    assert!(check(interval).contains("`requests.sweep_interval`"));
    assert!(guichet_requests::check(&config()).is_ok());
}

#[tokio::test]
async fn with_the_broker_away_an_update_is_unavailable_and_changes_nothing() {
    let mut nats = Nats::start().await;
    let bus = bus(&nats).await;
    let reference = "2026-AAAA-0009";
    seed(&bus, &record(reference, "voirie")).await;
    let service = TestRequests::start(&bus, config()).await;
    let mut client = service.client().await;
    nats.stop().await;
    let call = update(reference, Transition::Take, "t-outage");
    let status = tokio::time::timeout(
        Duration::from_secs(30),
        client.update_request(authed(call.clone(), VOIRIE_TOKEN)),
    )
    .await
    .expect("an answer, not a hang")
    .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("retry"), "{}", status.message());
    nats.restart().await;
    // Nothing was written: the record is still at version 1, and the
    // retry with the same id applies the change once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let answer = loop {
        match client.update_request(authed(call.clone(), VOIRIE_TOKEN)).await {
            Ok(answer) => break answer.into_inner(),
            Err(s) if s.code() == tonic::Code::Unavailable && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(s) => panic!("{s:?}"),
        }
    };
    assert_eq!((answer.version, answer.duplicate), (2, false));
    let (stored, _) = stored(&bus, reference).await;
    assert_eq!(stored.history.len(), 1);
    service.stop().await;
}
