//! The gateway through `guichet::run`, as `main` starts it: readiness
//! follows the broker, and shutdown is clean.

use std::{net::TcpListener, time::Duration};

use guichet::{Config, Listeners, RunError};
use guichet_harness::Nats;
use tokio_util::sync::CancellationToken;

async fn status(client: &reqwest::Client, url: &str) -> Option<u16> {
    client.get(url).send().await.ok().map(|r| r.status().as_u16())
}

async fn wait_for_status(client: &reqwest::Client, url: &str, want: u16) -> bool {
    for _ in 0..200 {
        if status(client, url).await == Some(want) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn readiness_follows_the_broker_and_shutdown_is_clean() {
    let mut nats = Nats::start().await;
    let config = Config {
        nats: nats.nats_config(),
        privacy: guichet_harness::privacy_config(),
        ..Config::default()
    };
    // An address of this test's own: "closed after shutdown" below cannot
    // see another test's listener.
    let admin = guichet_harness::loopback::listener();
    let readyz = format!("http://{}/readyz", admin.local_addr().unwrap());
    let listeners = Listeners {
        admin: Some(admin),
        ..Listeners::default()
    };
    let shutdown = CancellationToken::new();
    let gateway = tokio::spawn(guichet::run(config, Vec::new(), listeners, shutdown.clone()));

    let client = reqwest::Client::new();
    assert!(wait_for_status(&client, &readyz, 200).await, "never ready");
    let body: serde_json::Value = client.get(&readyz).send().await.unwrap().json().await.unwrap();
    assert_eq!(body["ready"], true);

    nats.stop().await;
    assert!(
        wait_for_status(&client, &readyz, 503).await,
        "still ready with the broker down"
    );
    let body: serde_json::Value = client.get(&readyz).send().await.unwrap().json().await.unwrap();
    assert!(body["waiting_for"][0].as_str().unwrap().contains("nats"), "{body}");

    nats.restart().await;
    assert!(
        wait_for_status(&client, &readyz, 200).await,
        "not ready again after the broker came back"
    );

    shutdown.cancel();
    let outcome = tokio::time::timeout(Duration::from_secs(30), gateway)
        .await
        .expect("run returns after shutdown")
        .unwrap();
    assert!(outcome.is_ok(), "{outcome:?}");
    assert!(
        status(&client, &readyz).await.is_none(),
        "admin port closed after shutdown"
    );
}

#[tokio::test]
async fn a_taken_admin_port_is_named() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = Config::default();
    config.admin.listen = taken.local_addr().unwrap();
    let err = guichet::run(config, Vec::new(), Listeners::default(), CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RunError::Bind {
                key: "admin.listen",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("admin.listen"), "{err}");
}
