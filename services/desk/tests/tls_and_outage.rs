//! TLS (server-only and mutual) with certificates made by the test, the
//! production examples' TLS, bad TLS settings named at start, and a broker outage: UNAVAILABLE while
//! NATS is away, OK again after it comes back, nothing lost or doubled.
// Test helpers outside #[test] functions unwrap too: a failure is the test's.
#![allow(clippy::unwrap_used)]

mod common;

use std::{path::Path, time::Duration};

use common::*;
use guichet_core::proto::v1::{GetUsagerHistoryRequest, desk_client::DeskClient, get_usager_history_request::Usager};
use guichet_desk::{DeskConfig, DeskTlsConfig};
use guichet_harness::Nats;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tonic::{
    Code,
    transport::{Certificate, ClientTlsConfig, Endpoint, Identity},
};

struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
}

fn make_pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "guichet test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names).unwrap().signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    Pki {
        ca: ca_cert.pem(),
        server: leaf(vec!["localhost".into(), "127.0.0.1".into()]),
        client: leaf(vec!["counter-software.mairie-nord".into()]),
    }
}

fn write(dir: &Path, name: &str, content: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

async fn tls_client(
    addr: std::net::SocketAddr,
    tls: ClientTlsConfig,
) -> Result<DeskClient<tonic::transport::Channel>, String> {
    let channel = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(DeskClient::new(channel))
}

#[tokio::test]
async fn tls_and_mutual_tls() {
    let nats = Nats::start().await;
    let js = nats.jetstream().await;
    let pki = make_pki();
    let dir = tempfile::tempdir().unwrap();
    let cert_file = write(dir.path(), "server.pem", &pki.server.0);
    let key_file = write(dir.path(), "server.key", &pki.server.1);
    let ca_file = write(dir.path(), "ca.pem", &pki.ca);

    // Server TLS.
    let desk = TestDesk::start(
        &nats,
        DeskConfig {
            tls: Some(DeskTlsConfig {
                cert_file: cert_file.clone(),
                key_file: key_file.clone(),
                client_ca_file: None,
            }),
            ..config()
        },
    )
    .await;
    let trusting = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca))
        .domain_name("localhost");
    let mut client = tls_client(desk.addr, trusting.clone()).await.unwrap();
    client
        .record_contact(authed(counter_visit("tls-1"), NORD_TOKEN))
        .await
        .unwrap();
    // The token is still required over TLS.
    assert_eq!(
        client
            .record_contact(tonic::Request::new(counter_visit("tls-2")))
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    // A plaintext client gets nowhere.
    let mut plain = desk.client().await;
    assert!(
        plain
            .record_contact(authed(counter_visit("plain-1"), NORD_TOKEN))
            .await
            .is_err()
    );
    // A client that does not trust the CA refuses the server.
    let untrusting = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(make_pki().ca))
        .domain_name("localhost");
    let refused = match tls_client(desk.addr, untrusting).await {
        Err(_) => true,
        Ok(mut c) => c
            .record_contact(authed(counter_visit("x-1"), NORD_TOKEN))
            .await
            .is_err(),
    };
    assert!(refused);
    desk.stop().await;

    // Mutual TLS: a client certificate signed by the configured CA is needed.
    let desk = TestDesk::start(
        &nats,
        DeskConfig {
            tls: Some(DeskTlsConfig {
                cert_file,
                key_file,
                client_ca_file: Some(ca_file),
            }),
            ..config()
        },
    )
    .await;
    let without_cert = match tls_client(desk.addr, trusting.clone()).await {
        Err(_) => true,
        Ok(mut c) => c
            .record_contact(authed(counter_visit("m-0"), NORD_TOKEN))
            .await
            .is_err(),
    };
    assert!(without_cert, "a client without certificate was served");
    let with_cert = trusting.identity(Identity::from_pem(&pki.client.0, &pki.client.1));
    let mut client = tls_client(desk.addr, with_cert).await.unwrap();
    client
        .record_contact(authed(counter_visit("m-1"), NORD_TOKEN))
        .await
        .unwrap();
    desk.stop().await;

    let ids: Vec<String> = intake(&js).await.into_iter().filter_map(|(_, id, _)| id).collect();
    assert_eq!(ids, ["desk:mairie-nord:counter:tls-1", "desk:mairie-nord:counter:m-1"]);
}

#[tokio::test]
async fn bad_tls_and_token_settings_are_named_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let missing = DeskConfig {
        tls: Some(DeskTlsConfig {
            cert_file: dir.path().join("nope.pem"),
            key_file: dir.path().join("nope.key"),
            client_ca_file: None,
        }),
        ..config()
    };
    let err = guichet_desk::check(&missing).unwrap_err().to_string();
    assert!(err.contains("`desk.tls.cert_file`"), "{err}");

    let not_pem = write(dir.path(), "junk.pem", "hello");
    let key = write(dir.path(), "k.pem", "-----BEGIN PRIVATE KEY-----\n");
    let junk = DeskConfig {
        tls: Some(DeskTlsConfig {
            cert_file: not_pem,
            key_file: key,
            client_ca_file: None,
        }),
        ..config()
    };
    let err = guichet_desk::check(&junk).unwrap_err().to_string();
    assert!(
        err.contains("`desk.tls.cert_file`") && err.contains("no PEM certificate"),
        "{err}"
    );

    let mut from_file = config();
    from_file.sites.get_mut(NORD).unwrap().token = guichet_core::secret::Secret::File {
        file: dir.path().join("missing-token"),
    };
    let err = guichet_desk::check(&from_file).unwrap_err().to_string();
    assert!(err.contains("`desk.sites.mairie-nord.token`"), "{err}");

    // A token read from a file (trailing newline dropped) works.
    let token_file = write(dir.path(), "token", &format!("{NORD_TOKEN}\n"));
    from_file.sites.get_mut(NORD).unwrap().token = guichet_core::secret::Secret::File { file: token_file };
    guichet_desk::check(&from_file).unwrap();
    let nats = Nats::start().await;
    let desk = TestDesk::start(&nats, from_file).await;
    desk.client()
        .await
        .record_contact(authed(counter_visit("file-token"), NORD_TOKEN))
        .await
        .unwrap();
    desk.stop().await;
}

#[tokio::test]
async fn nats_away_is_unavailable_then_ok_after_restart() {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

    let mut nats = Nats::start().await;
    let desk = TestDesk::start(&nats, config()).await;
    let mut client = desk.client().await;
    let mut health = HealthClient::new(desk.channel().await);
    let status_of = |health: &mut HealthClient<tonic::transport::Channel>| {
        let mut health = health.clone();
        async move {
            health
                .check(HealthCheckRequest {
                    service: "guichet.v1.Desk".into(),
                })
                .await
                .map(|r| r.into_inner().status)
                .ok()
        }
    };
    client
        .record_contact(authed(counter_visit("before"), NORD_TOKEN))
        .await
        .unwrap();
    // U1's history holds one routed contact, to be read after the outage.
    let before = guichet_core::proto::v1::Routed {
        contact: Some(guichet_core::proto::v1::Contact {
            id: guichet_core::ids::contact_id(),
            ..Default::default()
        }),
        usager_id: "U1".into(),
        qualification: Some(guichet_core::proto::v1::Qualification {
            service: "voirie".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    publish_routed(&nats.bus().await, &before).await;

    nats.stop().await;
    let started = std::time::Instant::now();
    let status = client
        .record_contact(authed(counter_visit("during"), NORD_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    assert!(status.message().contains("retry"), "{}", status.message());
    let history = GetUsagerHistoryRequest {
        site: NORD.into(),
        usager: Some(Usager::UsagerId("U1".into())),
        ..Default::default()
    };
    assert_eq!(
        client
            .get_usager_history(authed(history.clone(), NORD_TOKEN))
            .await
            .unwrap_err()
            .code(),
        Code::Unavailable
    );
    let mut not_serving = false;
    for _ in 0..40 {
        if status_of(&mut health).await == Some(ServingStatus::NotServing as i32) {
            not_serving = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(not_serving, "health still SERVING with the broker away");

    nats.restart().await;
    // The client retries, as a counter application would, with the same id.
    let mut answer = None;
    for _ in 0..100 {
        match client.record_contact(authed(counter_visit("during"), NORD_TOKEN)).await {
            Ok(r) => {
                answer = Some(r.into_inner());
                break;
            }
            Err(s) => assert_eq!(s.code(), Code::Unavailable, "{s:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let answer = answer.expect("OK again after the broker came back");
    assert!(!answer.duplicate, "nothing was recorded during the outage");
    // The history is read again, whole: the routed contact, then the end.
    let mut items = client
        .get_usager_history(authed(history, NORD_TOKEN))
        .await
        .unwrap()
        .into_inner();
    let mut read = Vec::new();
    while let Some(item) = items.message().await.unwrap() {
        read.push(item.item.unwrap());
    }
    use guichet_core::proto::v1::get_usager_history_response::Item;
    match read.as_slice() {
        [Item::Entry(entry), Item::End(end)] => {
            let contact = entry.routed.as_ref().and_then(|r| r.contact.as_ref()).unwrap();
            assert_eq!(contact.id, before.contact.as_ref().unwrap().id);
            assert_eq!((end.usager_id.as_str(), end.entries), ("U1", 1));
            assert!(end.next_page_token.is_empty());
        }
        other => panic!("expected one entry and the end, got {other:?}"),
    }
    let mut serving = false;
    for _ in 0..40 {
        if status_of(&mut health).await == Some(ServingStatus::Serving as i32) {
            serving = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(serving, "health not SERVING again");

    let js = nats.jetstream().await;
    let ids: Vec<String> = intake(&js).await.into_iter().filter_map(|(_, id, _)| id).collect();
    assert_eq!(
        ids,
        ["desk:mairie-nord:counter:before", "desk:mairie-nord:counter:during"]
    );
    desk.stop().await;
}

fn desk_section(toml_text: &str) -> DeskConfig {
    let mut file: toml::Table = toml::from_str(toml_text).unwrap();
    file.remove("desk").unwrap().try_into().unwrap()
}

/// The `[desk]` section of the production example, as shipped.
fn example_desk() -> DeskConfig {
    desk_section(&std::fs::read_to_string(guichet_harness::repo_root().join("deploy/guichet.example.toml")).unwrap())
}

/// The `[desk]` section of the Kubernetes example's `guichet.toml`
/// (the ConfigMap's block, indented by four spaces).
fn kubernetes_desk() -> DeskConfig {
    let yaml = std::fs::read_to_string(guichet_harness::repo_root().join("deploy/kubernetes/guichet.yaml")).unwrap();
    let block: Vec<&str> = yaml
        .lines()
        .skip_while(|l| !l.contains("guichet.toml: |"))
        .skip(1)
        .take_while(|l| l.starts_with("    ") || l.is_empty())
        .map(|l| l.get(4..).unwrap_or(""))
        .collect();
    desk_section(&block.join("\n"))
}

#[tokio::test]
async fn the_production_example_serves_tls_on_the_network() {
    use guichet_core::config::Validate;

    let kubernetes = kubernetes_desk();
    assert!(kubernetes.tls.is_some() && !kubernetes.insecure_plaintext);
    kubernetes.validate().unwrap();
    let example = example_desk();
    assert!(!example.listen.ip().is_loopback(), "{}", example.listen);
    assert!(!example.insecure_plaintext);
    let tls = example.tls.clone().expect("the example has [desk.tls] on");
    example.validate().unwrap();
    // Without its [desk.tls], the example would be refused.
    let err = DeskConfig {
        tls: None,
        ..example.clone()
    }
    .validate()
    .unwrap_err()
    .to_string();
    assert!(err.contains("`desk.tls`"), "{err}");

    // The example with real certificates at its paths and tokens of its
    // sites: a TLS client records a contact.
    let pki = make_pki();
    let dir = tempfile::tempdir().unwrap();
    let name = |p: &Path| p.file_name().unwrap().to_str().unwrap().to_owned();
    let mut config = DeskConfig {
        tls: Some(DeskTlsConfig {
            cert_file: write(dir.path(), &name(&tls.cert_file), &pki.server.0),
            key_file: write(dir.path(), &name(&tls.key_file), &pki.server.1),
            client_ca_file: None,
        }),
        ..example
    };
    let site = config.sites.keys().next().unwrap().clone();
    let token = "example-site-token-0123456789";
    for (i, s) in config.sites.values_mut().enumerate() {
        s.token = guichet_core::secret::Secret::Inline(format!("{token}-{i}"));
    }
    guichet_desk::check(&config).unwrap();
    let nats = Nats::start().await;
    let desk = TestDesk::start(&nats, config).await;
    let trusting = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca))
        .domain_name("localhost");
    let mut client = tls_client(desk.addr, trusting).await.unwrap();
    let mut visit = counter_visit("example-1");
    visit.site = site.clone();
    client
        .record_contact(authed(visit, &format!("{token}-0")))
        .await
        .unwrap();
    desk.stop().await;
    let ids: Vec<String> = intake(&nats.jetstream().await)
        .await
        .into_iter()
        .filter_map(|(_, id, _)| id)
        .collect();
    assert_eq!(ids, [format!("desk:{site}:counter:example-1")]);
}
