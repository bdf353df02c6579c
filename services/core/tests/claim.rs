//! Claiming a KV key once (`bus::claim`) against a real nats-server: a
//! free key is won, a held key names its holder and revision (the lost
//! race), a write of ours whose answer was lost is recognized as ours, and
//! a deleted or purged key is free again.

// Test helpers may unwrap: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use guichet_core::bus::claim::{Claim, claim, leader_value};
use guichet_harness::Nats;

#[tokio::test]
async fn a_key_is_claimed_once_and_a_lost_claim_names_its_holder() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let kv = &bus.stores().identity;

    let Claim::Won(revision) = claim(kv, "email.k1", Bytes::from("U1")).await.unwrap() else {
        panic!("a free key is won");
    };
    assert_eq!(
        claim(kv, "email.k1", Bytes::from("U2")).await.unwrap(),
        Claim::Held {
            value: Bytes::from("U1"),
            revision
        },
        "the loser learns the winner"
    );
    // The same value again: our own earlier write (its answer lost).
    assert_eq!(
        claim(kv, "email.k1", Bytes::from("U1")).await.unwrap(),
        Claim::Won(revision)
    );
    assert_eq!(
        leader_value(kv, "email.k1").await.unwrap(),
        Some((Bytes::from("U1"), revision))
    );

    // Deleted, then purged: free again each time.
    kv.delete("email.k1").await.unwrap();
    assert!(leader_value(kv, "email.k1").await.unwrap().is_none());
    assert!(matches!(
        claim(kv, "email.k1", Bytes::from("U3")).await.unwrap(),
        Claim::Won(_)
    ));
    kv.purge("email.k1").await.unwrap();
    assert!(matches!(
        claim(kv, "email.k1", Bytes::from("U4")).await.unwrap(),
        Claim::Won(_)
    ));
    assert_eq!(
        leader_value(kv, "email.k1").await.unwrap().unwrap().0,
        Bytes::from("U4")
    );
    assert!(leader_value(kv, "email.never").await.unwrap().is_none());
}
