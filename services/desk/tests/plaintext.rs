//! Plaintext on the network: refused at start without `[desk.tls]` on a
//! non-loopback address, naming the setting and the fix; allowed on
//! loopback; served with a warning at every start when
//! `desk.insecure_plaintext = true` says it is deliberate.
// Test helpers outside #[test] functions unwrap too: a failure is the test's.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    io::Write,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use common::*;
use guichet_desk::{DeskConfig, DeskError};
use guichet_harness::Nats;

/// What this test process logged (one subscriber for the whole binary).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut bytes) = self.0.lock() {
            bytes.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .init();
        captured
    })
}

fn log_text() -> String {
    String::from_utf8_lossy(&logs().0.lock().unwrap()).into_owned()
}

const WARNING: &str = "desk serves plaintext gRPC on a non-loopback address";

#[tokio::test]
async fn plaintext_on_a_network_address_is_refused_naming_the_setting_and_the_fix() {
    let nats = Nats::start().await;
    for listen in ["0.0.0.0:50051", "192.0.2.10:50051"] {
        let exposed = DeskConfig {
            listen: listen.parse().unwrap(),
            ..config()
        };
        let err = guichet_desk::check(&exposed).unwrap_err().to_string();
        for named in ["`desk.tls`", "desk.insecure_plaintext", listen, "[desk.tls]"] {
            assert!(err.contains(named), "{named} not in: {err}");
        }
        // `run` refuses too, before serving anything.
        let desk = TestDesk::start(&nats, exposed).await;
        let outcome = tokio::time::timeout(Duration::from_secs(30), desk.task)
            .await
            .expect("run returns at once")
            .unwrap();
        assert!(matches!(outcome, Err(DeskError::Config(_))), "{outcome:?}");
    }
    // Loopback plaintext (development, tests) is served.
    let desk = TestDesk::start(&nats, config()).await;
    desk.client()
        .await
        .record_contact(authed(counter_visit("loopback-1"), NORD_TOKEN))
        .await
        .unwrap();
    desk.stop().await;
}

#[tokio::test]
async fn deliberate_insecure_plaintext_starts_with_a_warning_naming_the_risk() {
    let _ = logs();
    let nats = Nats::start().await;
    let config = DeskConfig {
        listen: "0.0.0.0:50051".parse().unwrap(),
        insecure_plaintext: true,
        ..config()
    };
    guichet_desk::check(&config).unwrap();
    // The test's listener is on loopback (tests only use loopback); the
    // configured address is what makes the start exposed.
    let desk = TestDesk::start(&nats, config).await;
    // Served: the start went through, so its warning was written first.
    desk.client()
        .await
        .record_contact(authed(counter_visit("insecure-1"), NORD_TOKEN))
        .await
        .unwrap();
    let text = log_text();
    let warning = text
        .lines()
        .find(|l| l.contains(WARNING))
        .unwrap_or_else(|| panic!("no warning in:\n{text}"));
    assert!(warning.contains("WARN"), "{warning}");
    for named in ["unencrypted", "token", "`[desk.tls]`", "0.0.0.0:50051"] {
        assert!(warning.contains(named), "{named} not in: {warning}");
    }
    desk.stop().await;
    let js = nats.jetstream().await;
    let ids: Vec<String> = intake(&js).await.into_iter().filter_map(|(_, id, _)| id).collect();
    assert_eq!(ids, ["desk:mairie-nord:counter:insecure-1"]);
}
