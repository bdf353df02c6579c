//! Attachments streamed to the object store against a real nats-server:
//! stored under their content address, intact, sent once; a stream whose
//! content is not the announced SHA-256 leaves nothing under that key.

// Test helpers may unwrap: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use guichet_harness::Nats;
use sha2::{Digest, Sha256};

/// 3 MiB that do not repeat: a lost or reordered chunk would show.
fn content() -> Vec<u8> {
    let mut out = Vec::with_capacity(3 * 1024 * 1024);
    let mut block = Sha256::digest(b"attachment").to_vec();
    while out.len() < 3 * 1024 * 1024 {
        block = Sha256::digest(&block).to_vec();
        out.extend_from_slice(&block);
    }
    out
}

#[tokio::test]
async fn a_streamed_attachment_is_stored_intact_under_its_hash() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let data = content();
    let sha256: [u8; 32] = Sha256::digest(&data).into();
    let mut reader = &data[..];
    let stored = bus
        .put_attachment_stream(&mut reader, sha256, "../plan.pdf", "application/pdf")
        .await
        .unwrap();
    assert_eq!(stored.key, format!("sha256/{}", hex::encode(sha256)));
    assert_eq!(stored.sha256, hex::encode(sha256));
    assert_eq!(
        (stored.size, stored.file_name.as_str()),
        (data.len() as u64, "plan.pdf")
    );
    assert_eq!(bus.get_attachment(&stored.key).await.unwrap(), data);
    // The same content again is not read at all: already stored.
    let mut nothing: &[u8] = &[];
    let again = bus
        .put_attachment_stream(&mut nothing, sha256, "plan.pdf", "application/pdf")
        .await
        .unwrap();
    assert_eq!((again.key, again.size), (stored.key, data.len() as u64));
}

#[tokio::test]
async fn content_that_is_not_the_announced_hash_is_refused_and_removed() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let data = content();
    let announced: [u8; 32] = Sha256::digest(b"something else").into();
    let mut reader = &data[..];
    let err = bus
        .put_attachment_stream(&mut reader, announced, "plan.pdf", "application/pdf")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("SHA-256"), "{err}");
    let key = format!("sha256/{}", hex::encode(announced));
    assert!(bus.get_attachment(&key).await.is_err(), "content left under {key}");
}

#[tokio::test]
async fn the_object_store_expires_files_after_the_streams_that_point_at_them() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let topology = guichet_core::config::TopologyConfig::default();
    let mut objects = nats
        .jetstream()
        .await
        .get_stream("OBJ_guichet_attachments")
        .await
        .unwrap();
    let max_age = objects.info().await.unwrap().config.max_age;
    assert_eq!(max_age, topology.attachments_max_age());
    let day = std::time::Duration::from_secs(86_400);
    // 3 years of journal + 30 days in INTAKE + 7 days of refresh slack.
    assert_eq!(max_age, topology.routed_max_age + 30 * day + 7 * day);
    drop(bus);
}

/// Rewrites the object's metadata as if it had been written `age` ago.
async fn age_object(nats: &Nats, key: &str, age: std::time::Duration) {
    let js = nats.jetstream().await;
    let store = js.get_object_store("guichet_attachments").await.unwrap();
    let mut info = store.info(key).await.unwrap();
    let messages =
        guichet_harness::streams::read_all(&js, "OBJ_guichet_attachments", std::time::Duration::from_secs(10))
            .await
            .unwrap();
    let subject = messages
        .iter()
        .map(|m| m.subject.clone())
        .find(|s| s.starts_with("$O.guichet_attachments.M."))
        .unwrap();
    let modified = info.modified.unwrap();
    info.modified = Some(modified - age);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Rollup", "sub");
    js.publish_with_headers(subject, headers, serde_json::to_vec(&info).unwrap().into())
        .await
        .unwrap()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_file_sent_again_after_its_copy_aged_or_was_deleted_is_written_again() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let store = nats
        .jetstream()
        .await
        .get_object_store("guichet_attachments")
        .await
        .unwrap();
    let first = bus
        .put_attachment(b"justificatif", "a.pdf", "application/pdf")
        .await
        .unwrap();
    let written = store.info(&first.key).await.unwrap().modified.unwrap();

    // Sent again soon: not written again (same copy).
    bus.put_attachment(b"justificatif", "a.pdf", "application/pdf")
        .await
        .unwrap();
    assert_eq!(store.info(&first.key).await.unwrap().modified.unwrap(), written);

    // Sent again when its copy is 8 days old: written again, so that it
    // outlives the new contact (the store expires copies by their age).
    age_object(&nats, &first.key, std::time::Duration::from_secs(8 * 86_400)).await;
    let aged = store.info(&first.key).await.unwrap().modified.unwrap();
    assert!(aged < written);
    bus.put_attachment(b"justificatif", "a.pdf", "application/pdf")
        .await
        .unwrap();
    assert!(store.info(&first.key).await.unwrap().modified.unwrap() >= written);
    assert_eq!(bus.get_attachment(&first.key).await.unwrap(), b"justificatif");

    // Streamed, same rule.
    age_object(&nats, &first.key, std::time::Duration::from_secs(8 * 86_400)).await;
    let sha256: [u8; 32] = Sha256::digest(b"justificatif").into();
    bus.put_attachment_stream(&mut &b"justificatif"[..], sha256, "a.pdf", "application/pdf")
        .await
        .unwrap();
    assert!(store.info(&first.key).await.unwrap().modified.unwrap() >= written);

    // Deleted (its metadata says so): sent again, it is stored again, and
    // readable (a deleted copy used to count as present).
    store.delete(&first.key).await.unwrap();
    assert!(bus.get_attachment(&first.key).await.is_err());
    bus.put_attachment(b"justificatif", "a.pdf", "application/pdf")
        .await
        .unwrap();
    assert_eq!(bus.get_attachment(&first.key).await.unwrap(), b"justificatif");
}
