//! Support for the cross-service tests in `tests/`: the whole gateway
//! started through `guichet::run` (as `main` starts it) on loopback
//! listeners, ready before the test goes on, and stopped cleanly after.

mod back_office;

use std::{net::SocketAddr, time::Duration};

pub use back_office::{BackOffice, requests_config};

use guichet::{Config, Listeners, RunError, ServiceName};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// `[web]` with one form, `contact`, signed with `secret`: the usager's
/// e-mail at `/email` (required) and the text at `/message`.
pub fn signed_contact_form(secret: &str) -> guichet_web::WebConfig {
    use guichet_web::{FormConfig, Locator};
    let form = FormConfig {
        secret: Some(guichet_core::secret::Secret::Inline(secret.into())),
        email: Some(Locator::One("/email".into())),
        description: Some(Locator::One("/message".into())),
        required: vec!["email".into()],
        ..FormConfig::default()
    };
    guichet_web::WebConfig {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        forms: std::collections::BTreeMap::from([("contact".to_owned(), form)]),
        ..guichet_web::WebConfig::default()
    }
}

/// Posts one submission of the `contact` form ([`signed_contact_form`])
/// signed with `secret`, checks it is accepted (202) and returns the
/// gateway's answer (`contact_id`, `reference`).
pub async fn submit_contact(url: &str, secret: &str, email: &str, message: &str) -> serde_json::Value {
    let body = serde_json::json!({"email": email, "message": message}).to_string();
    let signature =
        guichet_web::signature::header_value(secret.as_bytes(), chrono::Utc::now().timestamp(), body.as_bytes());
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("x-guichet-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("posting to {url}: {e}"));
    assert_eq!(response.status(), 202, "the submission is accepted");
    response
        .json()
        .await
        .unwrap_or_else(|e| panic!("the answer is JSON: {e}"))
}

/// The URL of the `contact` form's submissions on the web listener of
/// `listeners`.
pub fn contact_form_url(listeners: &Listeners) -> String {
    let web = listeners.web.as_ref().expect("web.listen is bound");
    format!(
        "http://{}/v1/forms/contact/submissions",
        web.local_addr().expect("the web listener's address")
    )
}

/// A listener on a loopback address of the test's own (see
/// [`guichet_harness::loopback`]), non-blocking as `run` expects: once
/// the gateway stops, nothing else can answer there.
pub fn loopback() -> std::net::TcpListener {
    guichet_harness::loopback::listener()
}

/// A running gateway.
pub struct Gateway {
    admin: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), RunError>>,
}

impl Gateway {
    /// Runs `services` with `listeners` (an admin listener on loopback is
    /// added when missing) and waits until `/readyz` answers 200.
    pub async fn start(config: Config, services: Vec<ServiceName>, mut listeners: Listeners) -> Self {
        let admin_listener = listeners.admin.take().unwrap_or_else(loopback);
        let admin = admin_listener.local_addr().expect("admin address");
        listeners.admin = Some(admin_listener);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(guichet::run(config, services, listeners, shutdown.clone()));
        let gateway = Self { admin, shutdown, task };
        let client = reqwest::Client::new();
        // A start waits out a cluster election and loads its caches; on a
        // loaded 2-core machine that can take tens of seconds.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while tokio::time::Instant::now() < deadline {
            if client
                .get(gateway.readyz_url())
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
            {
                return gateway;
            }
            if gateway.task.is_finished() {
                let outcome = gateway.task.await;
                panic!("the gateway stopped before it was ready: {outcome:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the gateway was not ready within 60 s");
    }

    pub fn readyz_url(&self) -> String {
        format!("http://{}/readyz", self.admin)
    }

    /// Shuts down and checks that `run` returned `Ok` within 30 s.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let outcome = tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("run returns after shutdown")
            .expect("run does not panic");
        assert!(outcome.is_ok(), "{outcome:?}");
    }
}
