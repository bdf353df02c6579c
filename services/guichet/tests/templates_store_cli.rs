//! `guichet templates push|history|rollback` through the binary, against a
//! real nats-server: a checked push becomes a revision, a refused one
//! stores nothing, history shows who and which is in force, rollback
//! pushes an older set again.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;

use common::{config_in, guichet};
use guichet_harness::Nats;

#[tokio::test]
async fn templates_push_history_and_rollback() {
    let nats = Nats::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(&nats, dir.path());
    let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/templates");
    let shipped = shipped.to_str().unwrap();

    let (ok, out, err) = guichet(&config, &["templates", "push", shipped]);
    assert!(ok, "{err}");
    assert!(out.contains("as templates revision 1"), "{out}");

    // A set lacking a mandatory mention: refused, nothing stored.
    let bad = dir.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    for entry in std::fs::read_dir(shipped).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(
            bad.join(path.file_name().unwrap()),
            text.replace("{{ service.phone }}", ""),
        )
        .unwrap();
    }
    let (ok, _, err) = guichet(&config, &["templates", "push", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("refused, nothing stored") && err.contains("service phone"),
        "{err}"
    );

    let (ok, out, err) = guichet(&config, &["templates", "push", shipped]);
    assert!(ok, "{err}");
    assert!(
        out.contains("as templates revision 2"),
        "the refused push took no revision: {out}"
    );
    let (ok, out, err) = guichet(&config, &["templates", "rollback", "1"]);
    assert!(ok, "{err}");
    assert!(out.contains("is now templates revision 3"), "{out}");
    let (ok, out, err) = guichet(&config, &["templates", "history"]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[2].contains("rollback to revision 1") && lines[2].ends_with("in force"),
        "{out}"
    );
    let (ok, _, err) = guichet(&config, &["templates", "rollback", "99"]);
    assert!(!ok);
    assert!(err.contains("no templates revision 99"), "{err}");
}
