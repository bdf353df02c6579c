//! The router's operator commands through the binary, against a real
//! nats-server: rules push / history / rollback, queue pull, explain,
//! usager merge / forget.

#![allow(clippy::unwrap_used)]

mod common;

use common::guichet;

use guichet_harness::Nats;

#[tokio::test]
async fn rules_push_history_rollback_and_the_other_router_commands() {
    let nats = Nats::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("guichet.toml");
    std::fs::write(
        &config,
        format!("[nats]\nurl = \"{}\"\n{}", nats.url(), guichet_harness::privacy_toml()),
    )
    .unwrap();
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/rules.example.toml");
    let example = example.to_str().unwrap();

    let (ok, out, err) = guichet(&config, &["rules", "history"]);
    assert!(ok, "{err}");
    assert!(out.contains("no rules pushed yet"), "{out}");

    let (ok, out, err) = guichet(&config, &["rules", "push", example]);
    assert!(ok, "{err}");
    assert!(out.contains("as rules revision"), "{out}");
    assert!(
        out.contains("etat-civil") && out.contains("accueil"),
        "queues listed: {out}"
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "manual_service = \"accueil\"\n[[rules]]\nid = \"x\"\nservice = \"ghost\"\n",
    )
    .unwrap();
    let (ok, _, err) = guichet(&config, &["rules", "push", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("bad.toml:"), "located errors: {err}");

    let (ok, out, err) = guichet(&config, &["rules", "rollback", "1"]);
    assert!(ok, "{err}");
    assert!(out.contains("rolled back"), "{out}");
    let (ok, out, _) = guichet(&config, &["rules", "history"]);
    assert!(ok);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "the bad push stored nothing: {out}");
    assert!(
        lines[1].contains("rollback to revision 1") && lines[1].contains("in force"),
        "{out}"
    );

    let (ok, out, err) = guichet(&config, &["queue", "pull", "etat-civil"]);
    assert!(ok, "{err}");
    assert!(out.contains("queue etat-civil: 0 shown"), "{out}");
    let (ok, _, err) = guichet(&config, &["queue", "pull", "nowhere"]);
    assert!(!ok && err.contains("no queue for service `nowhere`"), "{err}");

    let (ok, _, err) = guichet(&config, &["explain", "01JNOTROUTED0000000000000"]);
    assert!(!ok && err.contains("has not been routed"), "{err}");
    let (ok, _, err) = guichet(&config, &["usager", "forget", "U1"]);
    assert!(!ok && err.contains("--yes"), "{err}");
    let (ok, _, err) = guichet(&config, &["usager", "forget", "U1", "--yes"]);
    assert!(!ok && err.contains("no usager U1"), "{err}");
    let (ok, _, err) = guichet(&config, &["usager", "merge", "U1", "U2"]);
    assert!(!ok && err.contains("no usager U1"), "{err}");
}
