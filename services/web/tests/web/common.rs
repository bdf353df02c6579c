//! A web adapter under test: a real nats-server (harness), the adapter
//! served on a free loopback port, and readers of what reached JetStream.

use std::time::Duration;

use guichet_core::{
    Bus, ServiceContext,
    admin::Health,
    bus::subjects::INTAKE_STREAM,
    proto::v1::{Contact, WebDetails, contact::Details},
};
use guichet_harness::Nats;
use guichet_web::{WebConfig, WebError, signature};
use prost::Message;
use serde::Deserialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const SECRET: &str = "test-secret-0123456789abcdef";

/// The forms most tests use. `voirie` is signed and maps JSON pointers and
/// field names; `ouvert` takes unsigned submissions.
pub const FORMS: &str = r#"
[web]
max_request_bytes = 262144
max_file_bytes = 16384
[web.forms.voirie]
secret = "test-secret-0123456789abcdef"
typology_hint = "voirie.signalement"
email = { json = "/usager/email", field = "email" }
phone = { json = "/usager/telephone", field = "telephone" }
name = { json = "/usager/nom", field = "nom" }
subject = "objet"
description = "description"
submission_id = "id"
address = { lines = [{ json = "/adresse/rue", field = "rue" }], postal_code = { json = "/adresse/code_postal", field = "code_postal" }, city = { json = "/adresse/ville", field = "ville" } }
keep = { categorie = "categorie", lieu = "/lieu" }
required = ["email", "description"]
[web.forms.ouvert]
insecure_no_signature = true
description = "description"
"#;

pub fn config(text: &str) -> WebConfig {
    #[derive(Deserialize)]
    struct Root {
        #[serde(default)]
        web: WebConfig,
    }
    toml::from_str::<Root>(text).unwrap().web
}

pub struct Web {
    pub nats: Nats,
    pub bus: Bus,
    pub base: String,
    pub client: reqwest::Client,
    pub shutdown: CancellationToken,
    pub task: Option<JoinHandle<Result<(), WebError>>>,
    pub health: Health,
}

impl Web {
    pub async fn start(config: WebConfig) -> Self {
        let nats = Nats::start().await;
        let bus = nats.bus().await;
        let health = Health::default();
        health.set_bus(bus.clone());
        let ctx = ServiceContext {
            bus: bus.clone(),
            health: health.clone(),
            instance: "test".into(),
            privacy: guichet_harness::pseudonymizer().clone(),
        };
        // An address of the test's own: "port closed" after a stop cannot
        // see another test's listener.
        let listener = tokio::net::TcpListener::bind((guichet_harness::loopback::own_ip(), 0))
            .await
            .unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(guichet_web::run(ctx, config, listener, shutdown.clone()));
        Self {
            nats,
            bus,
            base,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            shutdown,
            task: Some(task),
            health,
        }
    }

    pub fn url(&self, form: &str) -> String {
        format!("{}/v1/forms/{form}/submissions", self.base)
    }

    /// A POST of `body` as `content_type`, signed now with [`SECRET`].
    pub fn signed(&self, form: &str, content_type: &str, body: impl Into<Vec<u8>>) -> reqwest::RequestBuilder {
        let body = body.into();
        let now = chrono::Utc::now().timestamp();
        self.signed_at(form, content_type, body, now)
    }

    pub fn signed_at(&self, form: &str, content_type: &str, body: Vec<u8>, t: i64) -> reqwest::RequestBuilder {
        let signature = signature::header_value(SECRET.as_bytes(), t, &body);
        self.client
            .post(self.url(form))
            .header("content-type", content_type)
            .header("x-guichet-signature", signature)
            .body(body)
    }

    pub fn json(&self, form: &str, body: &serde_json::Value) -> reqwest::RequestBuilder {
        self.signed(form, "application/json", serde_json::to_vec(body).unwrap())
    }

    /// Messages in the INTAKE stream.
    pub async fn intake_count(&self) -> u64 {
        let js = self.nats.jetstream().await;
        let mut stream = js.get_stream(INTAKE_STREAM).await.unwrap();
        stream.info().await.unwrap().state.messages
    }

    /// Every contact in INTAKE with its `Nats-Msg-Id` and subject.
    pub async fn intake(&self) -> Vec<Stored> {
        let js = self.nats.jetstream().await;
        let mut stream = js.get_stream(INTAKE_STREAM).await.unwrap();
        let state = stream.info().await.unwrap().state.clone();
        let mut out = Vec::new();
        for seq in state.first_sequence..=state.last_sequence {
            if state.messages == 0 {
                break;
            }
            let msg = stream.get_raw_message(seq).await.unwrap();
            out.push(Stored {
                subject: msg.subject.to_string(),
                msg_id: msg
                    .headers
                    .get("Nats-Msg-Id")
                    .map(|v| v.as_str().to_owned())
                    .unwrap_or_default(),
                contact: Contact::decode(msg.payload).unwrap(),
            });
        }
        out
    }

    /// Stops the adapter and waits for `run` to return.
    pub async fn stop(&mut self) -> Result<(), WebError> {
        self.shutdown.cancel();
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("run returns after shutdown")
            .unwrap()
    }
}

pub struct Stored {
    pub subject: String,
    pub msg_id: String,
    pub contact: Contact,
}

impl Stored {
    pub fn web(&self) -> &WebDetails {
        match &self.contact.details {
            Some(Details::Web(w)) => w,
            other => panic!("not a web contact: {other:?}"),
        }
    }
}

/// A problem answer, checked for its media type.
#[derive(Debug, Deserialize)]
pub struct ProblemBody {
    #[serde(rename = "type")]
    pub kind: String,
    pub status: u16,
    pub detail: String,
    #[serde(default)]
    pub field: Option<String>,
}

pub async fn problem(response: reqwest::Response) -> (u16, ProblemBody) {
    let status = response.status().as_u16();
    let ct = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = response.text().await.unwrap();
    assert_eq!(ct, "application/problem+json", "{status} {text}");
    let body: ProblemBody = serde_json::from_str(&text).unwrap();
    assert_eq!(body.status, status);
    (status, body)
}

pub fn problem_type(kind: &str) -> String {
    format!("{}{kind}", guichet_web::PROBLEM_BASE)
}

/// The 202 body.
#[derive(Debug, Deserialize, PartialEq, Eq, Clone)]
pub struct Accepted {
    pub contact_id: String,
    pub reference: String,
    pub received_at: String,
}

pub async fn accepted(response: reqwest::Response) -> Accepted {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    assert_eq!(status, 202, "{text}");
    serde_json::from_str(&text).unwrap()
}

pub fn voirie_json() -> serde_json::Value {
    serde_json::json!({
        "id": "SUB-42",
        "usager": {"email": "jeanne.martin@example.fr", "telephone": "06 12 34 56 78", "nom": "Jeanne Martin"},
        "objet": "Nid de poule",
        "description": "Un nid de poule profond devant le 12.",
        "adresse": {"rue": "12 rue des Lilas", "code_postal": "69003", "ville": "Lyon"},
        "categorie": "chaussée",
        "lieu": {"lat": 45.76, "lon": 4.85},
        "ignored": "not mapped"
    })
}
