//! The web adapter inside the whole gateway, started by `guichet::run` as
//! `main` starts it: a signed submission becomes a contact in INTAKE, and
//! shutdown closes the port.

use guichet_e2e::Gateway;

use guichet::{Config, Listeners, ServiceName};
use guichet_core::proto::v1::Contact;
use guichet_harness::Nats;
use guichet_web::{WebConfig, signature};
use prost::Message;

const SECRET: &str = "e2e-secret-0123456789abcdef";

fn web_config() -> WebConfig {
    WebConfig {
        // An address of the test's own: "closed after shutdown" cannot see
        // another test's listener.
        listen: (guichet_harness::loopback::own_ip(), 0).into(),
        ..guichet_e2e::signed_contact_form(SECRET)
    }
}

#[tokio::test]
async fn a_signed_submission_goes_through_the_gateway() {
    let nats = Nats::start().await;
    let mut config = Config {
        nats: nats.nats_config(),
        web: web_config(),
        privacy: guichet_harness::privacy_config(),
        ..Config::default()
    };
    config.admin.listen = "127.0.0.1:0".parse().unwrap();
    let listeners = Listeners::bind(&config, &[ServiceName::Web]).unwrap();
    let web = listeners.web.as_ref().expect("web.listen is bound for the web service");
    let url = format!("http://{}/v1/forms/contact/submissions", web.local_addr().unwrap());
    let gateway = Gateway::start(config, vec![ServiceName::Web], listeners).await;
    let client = reqwest::Client::new();

    let body = r#"{"email":"usager@example.fr","message":"Bonjour, ma poubelle n'a pas été ramassée."}"#.as_bytes();
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let response = client
        .post(&url)
        .header("content-type", "application/json")
        .header(
            "x-guichet-signature",
            signature::header_value(SECRET.as_bytes(), t, body),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let answer: serde_json::Value = response.json().await.unwrap();

    let js = nats.jetstream().await;
    let mut stream = js.get_stream("INTAKE").await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 1);
    let stored = Contact::decode(stream.get_raw_message(1).await.unwrap().payload).unwrap();
    assert_eq!(stored.id, answer["contact_id"].as_str().unwrap());
    assert_eq!(stored.reference, answer["reference"].as_str().unwrap());
    assert_eq!(stored.claims.unwrap().email, "usager@example.fr");
    assert_eq!(stored.body, "Bonjour, ma poubelle n'a pas été ramassée.");
    assert_eq!(stored.source.unwrap().name, "contact");

    // Unsigned: refused, nothing more stored.
    let response = client
        .post(&url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(stream.info().await.unwrap().state.messages, 1);

    gateway.stop().await;
    assert!(
        client.post(&url).send().await.is_err(),
        "web port closed after shutdown"
    );
}

#[test]
fn web_config_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("guichet.toml");
    std::fs::write(
        &path,
        "[web.forms.voirie]\nemail = \"/email\"\n[web.forms.etat-civil]\ninsecure_no_signature = true\n",
    )
    .unwrap();
    let err = Config::load(&path).unwrap_err().to_string();
    assert!(err.contains("web.forms.voirie.secret"), "{err}");
    std::fs::write(&path, "[web]\nlisten = \"127.0.0.1:8080\"\n").unwrap();
    let config = Config::load(&path).unwrap();
    assert!(config.web.forms.is_empty());
}
