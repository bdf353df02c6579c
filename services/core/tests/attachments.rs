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
