//! Claiming a KV key once (`bus::claim`) against a real nats-server: a
//! free key is won, a held key names its holder and revision (the lost
//! race), a write of ours whose answer was lost is recognized as ours, and
//! a deleted or purged key is free again; and changing a key
//! (`bus::claim::revise`) with concurrent writers loses no change.

// Test helpers may unwrap: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use guichet_core::bus::claim::{Change, Claim, claim, leader_value, revise};
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

/// Eight writers add themselves to one list at once, each from a stale
/// read (the revision of the empty list): every refused write is decided
/// again on the newer value, so all eight are in, none twice.
#[tokio::test]
async fn concurrent_revisions_of_a_key_all_land_and_a_deleted_key_is_none() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let kv = bus.stores().requests.clone();
    let Claim::Won(first) = claim(&kv, "ref.R1", Bytes::from("")).await.unwrap() else {
        panic!("a free key is won");
    };
    let writers: Vec<_> = (0..8)
        .map(|i| {
            let kv = kv.clone();
            tokio::spawn(async move {
                let mut decided = 0;
                let added = revise::<_, guichet_core::Error>(&kv, "ref.R1", Some((Bytes::new(), first)), |value| {
                    decided += 1;
                    let mut list = String::from_utf8_lossy(value).into_owned();
                    let me = format!("w{i};");
                    if list.contains(&me) {
                        return Ok(Change::Keep(false));
                    }
                    list.push_str(&me);
                    Ok(Change::Write(Bytes::from(list), true))
                })
                .await
                .unwrap();
                (added, decided)
            })
        })
        .collect();
    let mut retried = 0;
    for writer in writers {
        let (added, decided) = writer.await.unwrap();
        assert_eq!(added, Some(true));
        retried += decided - 1;
    }
    let (list, _) = leader_value(&kv, "ref.R1").await.unwrap().unwrap();
    let mut names: Vec<&str> = std::str::from_utf8(&list).unwrap().split_terminator(';').collect();
    names.sort_unstable();
    assert_eq!(names, ["w0", "w1", "w2", "w3", "w4", "w5", "w6", "w7"]);
    assert!(
        retried >= 7,
        "seven writers found the list changed under them: {retried}"
    );

    // Nothing to change: kept, no write.
    let before = leader_value(&kv, "ref.R1").await.unwrap().unwrap().1;
    let kept = revise::<_, guichet_core::Error>(&kv, "ref.R1", None, |_| Ok(Change::Keep("kept")))
        .await
        .unwrap();
    assert_eq!(kept, Some("kept"));
    assert_eq!(leader_value(&kv, "ref.R1").await.unwrap().unwrap().1, before);

    kv.delete("ref.R1").await.unwrap();
    let gone = revise::<(), guichet_core::Error>(&kv, "ref.R1", None, |_| panic!("nothing to decide on"))
        .await
        .unwrap();
    assert_eq!(gone, None);
}
