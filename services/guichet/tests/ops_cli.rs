//! The ops commands through the binary, against a real nats-server:
//! `deadletter list|show|replay|discard`, `rules replay` and
//! `rules push --replay`. Their logic is tested in the router's tests.

#![allow(clippy::unwrap_used)]

mod common;

use common::guichet;
use guichet_core::{
    bus::subjects,
    proto::{
        self,
        v1::{Channel, Contact, DeadLetter, IdentityClaims},
    },
};
use guichet_harness::Nats;
use prost::Message;

/// A dead letter as the router writes it, for a contact with personal data.
async fn dead_letter(bus: &guichet_core::Bus, id: &str) -> u64 {
    let contact = Contact {
        id: id.into(),
        received_at: Some(proto::timestamp(chrono::Utc::now())),
        channel: Channel::Email as i32,
        claims: Some(IdentityClaims {
            email: "secret.person@example.fr".into(),
            ..Default::default()
        }),
        body: "my private message".into(),
        idempotency_key: format!("k-{id}"),
        ..Default::default()
    };
    let letter = DeadLetter {
        original_subject: subjects::intake_keyed(Channel::Email, &contact.idempotency_key),
        original_stream: "INTAKE".into(),
        original_sequence: 1,
        payload: contact.encode_to_vec(),
        reason: "routing failed 5 times; last error: identity bucket: damaged".into(),
        deliveries: 5,
        failed_at: Some(proto::timestamp(chrono::Utc::now())),
        failed_in: "router".into(),
        ..Default::default()
    };
    bus.publish(
        subjects::deadletter("router"),
        &format!("router-INTAKE-{id}"),
        letter.encode_to_vec().into(),
    )
    .await
    .unwrap()
    .sequence
}

#[tokio::test]
async fn deadletter_and_rules_replay_commands() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("guichet.toml");
    std::fs::write(
        &config,
        format!("[nats]\nurl = \"{}\"\n{}", nats.url(), guichet_harness::privacy_toml()),
    )
    .unwrap();
    let first = dead_letter(&bus, "01JDEADLETTER000000000001").await;
    let second = dead_letter(&bus, "01JDEADLETTER000000000002").await;

    let (ok, out, err) = guichet(&config, &["deadletter", "list"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("2 pending dead letter(s)"), "{out}");
    assert!(out.contains(&format!("{first}  router  5 deliveries")), "{out}");
    let (ok, out, _) = guichet(&config, &["deadletter", "list", "--json", "--origin", "router"]);
    assert!(ok);
    let rows: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["id"], first);
    assert_eq!(rows[0]["contact"]["channel"], "email");

    let (ok, out, err) = guichet(&config, &["deadletter", "show", &first.to_string()]);
    assert!(ok, "{err}");
    assert!(
        out.contains("01JDEADLETTER000000000001") && out.contains("identity bucket: damaged"),
        "{out}"
    );
    assert!(
        !out.contains("secret.person") && !out.contains("private message"),
        "{out}"
    );

    // Bad input: named, nothing changed.
    let (ok, _, err) = guichet(&config, &["deadletter", "discard", &first.to_string(), "--reason", " "]);
    assert!(!ok && err.contains("--reason"), "{err}");
    let (ok, _, err) = guichet(&config, &["deadletter", "show", "999"]);
    assert!(!ok && err.contains("no dead letter 999"), "{err}");
    let (ok, _, err) = guichet(&config, &["deadletter", "show", "abc"]);
    assert!(!ok && err.contains("<ID>"), "{err}");
    let (ok, out, _) = guichet(&config, &["deadletter", "list"]);
    assert!(ok && out.starts_with("2 pending"), "{out}");

    let (ok, out, err) = guichet(&config, &["deadletter", "replay", &first.to_string(), "--by", "ops"]);
    assert!(ok, "{err}");
    assert!(out.contains("sent back to guichet.intake.email."), "{out}");
    let (ok, out, err) = guichet(
        &config,
        &[
            "deadletter",
            "discard",
            &second.to_string(),
            "--reason",
            "handled by phone",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("discarded"), "{out}");
    let (ok, out, _) = guichet(&config, &["deadletter", "list"]);
    assert!(ok && out.starts_with("0 pending"), "{out}");
    let (ok, _, err) = guichet(&config, &["deadletter", "replay", &first.to_string()]);
    assert!(!ok && err.contains("no longer pending: replayed by ops"), "{err}");
    let intake = bus
        .jetstream()
        .get_stream("INTAKE")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages;
    assert_eq!(intake, 1, "the replayed contact is back in INTAKE");

    // rules replay: nothing routed yet, so nothing compared.
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/rules.example.toml");
    let example = example.to_str().unwrap();
    let (ok, out, err) = guichet(&config, &["rules", "replay", example, "--since", "1d"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("replayed 0 contacts"), "{out}");
    let (ok, out, err) = guichet(&config, &["rules", "replay", example, "--json"]);
    assert!(ok, "{err}");
    let summary: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(summary["contacts"], 0);
    let (ok, _, err) = guichet(&config, &["rules", "replay", example, "--since", "soon"]);
    assert!(!ok && err.contains("--since") && err.contains("30d"), "{err}");
    let (ok, _, err) = guichet(
        &config,
        &["rules", "replay", example, "--from", "2026-11-02", "--to", "2026-11-01"],
    );
    assert!(!ok && err.contains("--from"), "{err}");

    // push --replay asks; no answer, no push.
    let (ok, out, err) = guichet(&config, &["rules", "push", example, "--replay", "1d"]);
    assert!(!ok && err.contains("not pushed"), "{out}{err}");
    assert!(out.contains("replayed 0 contacts"), "{out}");
    let (ok, out, _) = guichet(&config, &["rules", "history"]);
    assert!(ok && out.contains("no rules pushed yet"), "{out}");
    let (ok, out, err) = guichet(&config, &["rules", "push", example, "--replay", "1d", "--yes"]);
    assert!(ok, "{err}");
    assert!(out.contains("as rules revision 1"), "{out}");
}
