//! `guichet identity rekey` through the binary, against a real
//! nats-server: a bucket of plain (unkeyed) identity keys migrated to the
//! configured key, run twice, and the usager found by the new keys.

#![allow(clippy::unwrap_used)]

mod common;

use common::guichet;

use guichet_core::{identity::normalize_email, privacy::plain_identity_key};
use guichet_harness::{Nats, pseudonymizer};

#[tokio::test]
async fn rekey_migrates_plain_keys_and_is_safe_to_run_again() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let email = normalize_email("jeanne@example.fr").unwrap();
    bus.stores()
        .identity
        .put(plain_identity_key(&email), "UJEANNE".into())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("guichet.toml");
    std::fs::write(
        &config,
        format!("[nats]\nurl = \"{}\"\n{}", nats.url(), guichet_harness::privacy_toml()),
    )
    .unwrap();

    let (ok, _, err) = guichet(&config, &["identity", "rekey", "--from-key", "/etc/old.key"]);
    assert!(
        !ok && err.contains("--from-key") && err.contains("/etc/old.key"),
        "{err}"
    );

    let (ok, out, err) = guichet(&config, &["identity", "rekey", "--from-key", "plain-hash"]);
    assert!(ok, "{err}");
    assert!(out.contains("identity keys migrated: 1"), "{out}");
    let found = bus.usager_of(pseudonymizer(), &email).await.unwrap();
    assert_eq!(found.as_deref(), Some("UJEANNE"));
    assert!(
        bus.stores()
            .identity
            .get(plain_identity_key(&email))
            .await
            .unwrap()
            .is_none(),
        "the plain key is gone"
    );

    let (ok, out, err) = guichet(&config, &["identity", "rekey", "--from-key", "plain-hash"]);
    assert!(ok, "{err}");
    assert!(out.contains("identity keys migrated: 0"), "{out}");

    // Without a key in the configuration, nothing is touched.
    std::fs::write(&config, format!("[nats]\nurl = \"{}\"\n", nats.url())).unwrap();
    let (ok, _, err) = guichet(&config, &["identity", "rekey", "--from-key", "plain-hash"]);
    assert!(!ok && err.contains("privacy.pseudonym_key"), "{err}");
}
