//! `guichet request show|list|update` through the binary, against a real
//! nats-server.

#![allow(clippy::unwrap_used)]

mod common;

use common::{config_in, guichet};
use guichet_core::request::{RequestRecord, request_key};
use guichet_harness::Nats;

/// Stores an open request of `voirie` (C1, web, 2 March 2026) as the
/// requests service would, after `shape` adjusts it.
async fn seed(bus: &guichet_core::Bus, reference: &str, shape: impl FnOnce(&mut RequestRecord)) {
    let mut record = RequestRecord {
        reference: reference.into(),
        service: "voirie".into(),
        usager_id: "U1".into(),
        status: "open".into(),
        opened_by: "C1".into(),
        opened_at: "2026-03-02T09:00:00Z".into(),
        channel: "web".into(),
        version: 1,
        ..Default::default()
    };
    shape(&mut record);
    bus.stores()
        .requests
        .create(request_key(reference), serde_json::to_vec(&record).unwrap().into())
        .await
        .unwrap();
}

#[tokio::test]
async fn request_show_list_and_update() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(&nats, dir.path());
    for (reference, due_at) in [
        ("2026-CKAA-0001", "2026-03-06T16:59:59Z"),
        ("2026-CKAA-0002", "2099-01-01T00:00:00Z"),
    ] {
        seed(&bus, reference, |r| {
            r.due_at = due_at.into();
            r.due_date = due_at[..10].into();
        })
        .await;
    }

    let (ok, out, err) = guichet(
        &config,
        &["request", "update", "2026-ckaa-0001", "take", "--agent", "a.martin"],
    );
    assert!(ok, "{err}");
    assert!(out.contains("2026-CKAA-0001 is taken (version 2)"), "{out}");
    let (ok, _, err) = guichet(
        &config,
        &["request", "update", "2026-CKAA-0001", "reopen", "--agent", "a.martin"],
    );
    assert!(!ok);
    assert!(err.contains("while the request is taken"), "{err}");
    let (ok, _, err) = guichet(
        &config,
        &["request", "update", "2026-CKAA-0001", "close", "--agent", "a.martin"],
    );
    assert!(!ok);
    assert!(err.contains("--outcome"), "{err}");

    // A status message where there is none, documents on a transition
    // that takes none: refused, with the flag named.
    let (ok, _, err) = guichet(
        &config,
        &[
            "request",
            "update",
            "2026-CKAA-0001",
            "resume",
            "--agent",
            "a.martin",
            "--notify-usager",
        ],
    );
    assert!(!ok);
    assert!(
        err.contains("--notify-usager: only REQUEST_DOCUMENTS, ANSWER and CLOSE"),
        "{err}"
    );
    let (ok, _, err) = guichet(
        &config,
        &[
            "request",
            "update",
            "2026-CKAA-0001",
            "answer",
            "--agent",
            "a.martin",
            "--document",
            "Plan",
        ],
    );
    assert!(!ok);
    assert!(err.contains("--document: only REQUEST_DOCUMENTS"), "{err}");

    let (ok, out, err) = guichet(&config, &["request", "show", "2026-CKAA-0001"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("taken") && out.contains("v2 take open → taken by a.martin (cli)"),
        "{out}"
    );

    let (ok, out, err) = guichet(&config, &["request", "list", "--service", "voirie", "--overdue"]);
    assert!(ok, "{err}");
    assert!(out.contains("1 request(s) overdue"), "{out}");
    assert!(
        out.contains("2026-CKAA-0001") && !out.contains("2026-CKAA-0002"),
        "{out}"
    );
    let (ok, _, err) = guichet(&config, &["request", "show", "2026-ZZZZ-0000"]);
    assert!(!ok);
    assert!(err.contains("no request has reference 2026-ZZZZ-0000"), "{err}");
}

#[tokio::test]
async fn request_documents_with_a_status_message_keeps_the_list_and_flags_the_event() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(&nats, dir.path());
    seed(&bus, "2026-CKAA-0003", |r| r.status = "taken".into()).await;
    let (ok, out, err) = guichet(
        &config,
        &[
            "request",
            "update",
            "2026-CKAA-0003",
            "request_documents",
            "--agent",
            "a.martin",
            "--notify-usager",
            "--document",
            "Plan de situation",
            "--document",
            " Justificatif de domicile ",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("waiting_usager"), "{out}");
    let entry = bus
        .stores()
        .requests
        .get(request_key("2026-CKAA-0003"))
        .await
        .unwrap()
        .unwrap();
    let stored: RequestRecord = serde_json::from_slice(&entry).unwrap();
    let last = stored.history.last().unwrap();
    assert!(last.notify_usager);
    assert_eq!(last.documents, ["Plan de situation", "Justificatif de domicile"]);
    let event = stored.event();
    assert!(event.notify_usager, "the journal event asks notify to tell the usager");
}
