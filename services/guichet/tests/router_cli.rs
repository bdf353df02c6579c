//! The router's operator commands through the binary, against a real
//! nats-server: rules push / history / rollback, queue pull, explain,
//! usager merge / forget, usager conflicts / resolve.

#![allow(clippy::unwrap_used)]

mod common;

use common::{config_for, guichet};

use guichet_harness::Nats;

#[tokio::test]
async fn rules_push_history_rollback_and_the_other_router_commands() {
    let nats = Nats::start().await;
    let (dir, config) = config_for(&nats);
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

/// A contact claiming `email` and `phone`, declared.
fn claiming(email: &str, phone: &str) -> guichet_core::proto::v1::Contact {
    guichet_core::proto::v1::Contact {
        id: guichet_core::ids::contact_id(),
        claims: Some(guichet_core::proto::v1::IdentityClaims {
            email: email.into(),
            phone: phone.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn usager_conflicts_lists_and_resolve_decides_without_personal_data() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let (_dir, config) = config_for(&nats);
    let keys = guichet_harness::pseudonymizer();
    let resolve = |c| {
        let bus = bus.clone();
        async move { guichet_router::identity::resolve(&bus, keys, &c).await.unwrap() }
    };
    let a = resolve(claiming("jeanne@example.fr", "")).await.usager_id;
    let b = resolve(claiming("", "0612345678")).await.usager_id;
    let both = claiming("jeanne@example.fr", "0612345678");
    let contact_id = both.id.clone();
    resolve(both).await;
    let id = guichet_router::identity_conflicts::conflict_id(&a, &b);

    let (ok, out, err) = guichet(&config, &["usager", "conflicts"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("1 open identity conflict(s)"), "{out}");
    assert!(
        out.contains(&id) && out.contains(&format!("kept  {a}  by email (declared)")),
        "{out}"
    );
    assert!(out.contains(&format!("other {b}  by phone (declared)")), "{out}");
    assert!(out.contains(&format!("1 contact(s), latest {contact_id}")), "{out}");
    assert!(
        !out.contains("jeanne") && !out.contains("0612"),
        "no personal data: {out}"
    );
    let (ok, out, err) = guichet(&config, &["usager", "conflicts", "--json"]);
    assert!(ok, "{err}");
    let line: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(line["id"], id.as_str());
    assert_eq!(line["other"]["level"], "declared");
    assert_eq!(line["contacts"], 1);

    let (ok, _, err) = guichet(&config, &["usager", "resolve", "nonsense", "distinct"]);
    assert!(!ok && err.contains("not a conflict id"), "{err}");
    let (ok, _, err) = guichet(&config, &["usager", "resolve", &id, "maybe"]);
    assert!(!ok && err.contains("merge") && err.contains("distinct"), "{err}");
    let (ok, out, err) = guichet(&config, &["usager", "resolve", &id, "distinct"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("resolved as distinct") && out.contains("will not raise"),
        "{out}"
    );
    let (ok, out, err) = guichet(&config, &["usager", "resolve", &id, "distinct"]);
    assert!(ok && out.contains("already resolved as distinct"), "{out}{err}");
    let (ok, out, _) = guichet(&config, &["usager", "conflicts"]);
    assert!(ok && out.starts_with("0 open identity conflict(s)"), "{out}");
}
