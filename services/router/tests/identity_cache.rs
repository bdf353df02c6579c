//! The identity cache through the live router: merges and erasures done
//! while it runs are honoured by the next contacts, two routers with caches
//! racing on one new person end with one id, and a lost connection empties
//! the cache until its watch is back.

#![allow(clippy::unwrap_used)]

mod common;

use std::{collections::HashSet, time::Duration};

use common::*;
use guichet_core::{
    bus::subjects,
    identity::normalize_email,
    proto::v1::{IdentityClaims, identity_resolution::Outcome},
};
use guichet_harness::Nats;
use guichet_router::{admin, identity, identity_cache::IdentityCache};
use tokio_util::sync::CancellationToken;

fn outcome(r: &guichet_core::proto::v1::Routed) -> Outcome {
    Outcome::try_from(r.identity.as_ref().unwrap().outcome).unwrap()
}

/// The subject the contact's `Routed` was stored on, read from ROUTED.
async fn routed_subject(bus: &guichet_core::Bus, contact_id: &str) -> String {
    routed(bus, contact_id).await;
    routed_all(bus)
        .await
        .into_iter()
        .find(|(_, r)| r.contact.as_ref().unwrap().id == contact_id)
        .map(|(subject, _)| subject)
        .unwrap()
}

fn phone_contact(phone: &str) -> guichet_core::proto::v1::Contact {
    with_claims(
        email_contact("", "appel", "appel"),
        IdentityClaims {
            phone: phone.into(),
            ..Default::default()
        },
    )
}

#[tokio::test]
async fn a_merge_done_while_the_router_runs_is_honoured_by_the_next_contacts() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let router = RunningRouter::start(&nats, config()).await;

    // Both usagers are known to the router's cache.
    let by_email = email_contact("lucie@example.fr", "a", "a");
    publish(&bus, &by_email).await;
    let a = routed(&bus, &by_email.id).await.usager_id;
    let by_phone = phone_contact("0622334455");
    publish(&bus, &by_phone).await;
    let b = routed(&bus, &by_phone.id).await.usager_id;
    assert_ne!(a, b);
    let again = phone_contact("06 22 33 44 55");
    publish(&bus, &again).await;
    assert_eq!(routed(&bus, &again.id).await.usager_id, b, "cached before the merge");

    admin::merge(&bus, &a, &b).await.unwrap();

    // The phone now leads to A: the re-pointed key and the alias reached
    // the cache through its watch.
    let after = phone_contact("+33622334455");
    publish(&bus, &after).await;
    let subject = routed_subject(&bus, &after.id).await;
    assert!(
        subject.ends_with(&format!(".{a}")),
        "{subject} should be filed under {a}"
    );
    assert_eq!(outcome(&routed(&bus, &after.id).await), Outcome::Known);
    // Both identifiers at once: one usager, no conflict.
    let both = with_claims(
        email_contact("", "c", "c"),
        IdentityClaims {
            email: "lucie@example.fr".into(),
            phone: "0622334455".into(),
            ..Default::default()
        },
    );
    publish(&bus, &both).await;
    assert!(routed_subject(&bus, &both.id).await.ends_with(&format!(".{a}")));
    assert!(events(&bus, "identity_conflict").await.is_empty());
    router.shutdown().await;
}

#[tokio::test]
async fn a_forget_done_while_the_router_runs_is_honoured_by_the_next_contacts() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let router = RunningRouter::start(&nats, config()).await;

    let first = email_contact("oubli@example.fr", "a", "a");
    publish(&bus, &first).await;
    let forgotten = routed(&bus, &first.id).await.usager_id;
    let second = email_contact("oubli@example.fr", "b", "b");
    publish(&bus, &second).await;
    assert_eq!(routed(&bus, &second.id).await.usager_id, forgotten, "cached");

    admin::forget(&bus, guichet_harness::pseudonymizer(), &forgotten)
        .await
        .unwrap();

    // The same person writes again: a new usager, not the erased id.
    let third = email_contact("oubli@example.fr", "c", "c");
    publish(&bus, &third).await;
    let r = routed(&bus, &third.id).await;
    assert_ne!(r.usager_id, forgotten);
    assert_eq!(outcome(&r), Outcome::Created);
    let subject = routed_subject(&bus, &third.id).await;
    assert!(subject.ends_with(&format!(".{}", r.usager_id)), "{subject}");
    let erased = read_all(&bus, subjects::ROUTED_STREAM, &subjects::usager_history(&forgotten)).await;
    assert!(erased.is_empty(), "nothing filed under the erased id again: {erased:?}");
    router.shutdown().await;
}

#[tokio::test]
async fn two_routers_with_caches_racing_on_the_same_new_person_end_with_one_id() {
    let nats = Nats::start().await;
    let (a, b) = (nats.bus().await, nats.bus().await);
    let stop = CancellationToken::new();
    let (cache_a, task_a) = IdentityCache::start(&a, 10_000, stop.clone()).await.unwrap();
    let (cache_b, task_b) = IdentityCache::start(&b, 10_000, stop.clone()).await.unwrap();
    assert!(
        cache_a.usable() && cache_a.complete(),
        "an empty bucket is loaded at once"
    );
    for round in 0..40 {
        let person = with_claims(
            email_contact("", "x", "x"),
            IdentityClaims {
                email: format!("course{round}@example.fr"),
                phone: format!("+3361299{round:04}"),
                ..Default::default()
            },
        );
        let other_contact = guichet_core::proto::v1::Contact {
            id: guichet_core::ids::contact_id(),
            ..person.clone()
        };
        let (ra, rb) = tokio::join!(
            identity::resolve_with(&a, guichet_harness::pseudonymizer(), Some(&cache_a), &person),
            identity::resolve_with(&b, guichet_harness::pseudonymizer(), Some(&cache_b), &other_contact)
        );
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert_eq!(ra.usager_id, rb.usager_id, "round {round}: {ra:?} {rb:?}");
        let outcomes: HashSet<_> = [ra.outcome, rb.outcome].into_iter().collect();
        assert!(outcomes.contains(&Outcome::Created), "round {round}: {outcomes:?}");
        assert!(!outcomes.contains(&Outcome::Conflict), "round {round}: {ra:?} {rb:?}");
        let email = normalize_email(&format!("course{round}@example.fr")).unwrap();
        assert_eq!(
            a.usager_of(guichet_harness::pseudonymizer(), &email)
                .await
                .unwrap()
                .as_deref(),
            Some(ra.usager_id.as_str())
        );
        // Both caches now answer with that id, without reading the KV.
        let again = guichet_core::proto::v1::Contact {
            id: guichet_core::ids::contact_id(),
            ..person.clone()
        };
        for (bus, cache) in [(&a, &cache_a), (&b, &cache_b)] {
            let r = identity::resolve_with(bus, guichet_harness::pseudonymizer(), Some(cache), &again)
                .await
                .unwrap();
            assert_eq!(r.usager_id, ra.usager_id, "round {round}");
            assert_eq!(r.outcome, Outcome::Known, "round {round}");
        }
    }
    let mut keys = a.stores().identity.keys().await.unwrap();
    let mut records = 0;
    use futures::StreamExt;
    while let Some(k) = keys.next().await {
        if k.unwrap().starts_with("usager.") {
            records += 1;
        }
    }
    assert_eq!(records, 40, "no orphan record left by the losers");
    stop.cancel();
    task_a.await.unwrap();
    task_b.await.unwrap();
    assert!(!cache_a.usable(), "a stopped watch leaves a cache that does not answer");
}

#[tokio::test]
async fn a_router_starting_on_a_full_bucket_loads_it_and_knows_everyone() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    // More keys than the smallest cache holds (64 shards of 2 entries).
    let contacts: Vec<_> = (0..150)
        .map(|i| email_contact(&format!("ancien{i}@example.fr"), "a", "a"))
        .collect();
    let ids: Vec<String> = futures::future::join_all(
        contacts
            .iter()
            .map(|c| identity::resolve(&bus, guichet_harness::pseudonymizer(), c)),
    )
    .await
    .into_iter()
    .map(|r| r.unwrap().usager_id)
    .collect();
    let stop = CancellationToken::new();
    let (cache, task) = IdentityCache::start(&bus, 10_000, stop.clone()).await.unwrap();
    assert!(cache.usable() && cache.complete());
    let key = guichet_harness::pseudonymizer().identity_key(&normalize_email("ancien7@example.fr").unwrap());
    assert_eq!(cache.get(&key), Some(Some(ids[7].as_str().into())));
    assert_eq!(
        cache.get(&guichet_harness::pseudonymizer().identity_key(&normalize_email("personne@example.fr").unwrap())),
        Some(None)
    );

    // Too small for the bucket: it starts empty, from "now", incomplete.
    let (small, small_task) = IdentityCache::start(&bus, 1, stop.clone()).await.unwrap();
    assert!(small.usable() && !small.complete());
    assert_eq!(small.get(&key), None, "a miss: the resolver reads the KV");
    let contact = email_contact("ancien7@example.fr", "b", "b");
    let r = identity::resolve_with(&bus, guichet_harness::pseudonymizer(), Some(&small), &contact)
        .await
        .unwrap();
    assert_eq!(r.usager_id, ids[7]);
    assert_eq!(
        small.get(&key),
        Some(Some(ids[7].as_str().into())),
        "kept after the read"
    );
    stop.cancel();
    task.await.unwrap();
    small_task.await.unwrap();
}

#[tokio::test]
async fn a_lost_connection_empties_the_cache_until_its_watch_is_back() {
    let mut nats = Nats::start().await;
    let bus = nats.bus().await;
    let router = RunningRouter::start(&nats, config()).await;
    let stop = CancellationToken::new();
    let (cache, task) = IdentityCache::start(&bus, 10_000, stop.clone()).await.unwrap();

    let first = email_contact("panne@example.fr", "a", "a");
    publish(&bus, &first).await;
    let u = routed(&bus, &first.id).await.usager_id;
    let key = guichet_harness::pseudonymizer().identity_key(&normalize_email("panne@example.fr").unwrap());
    eventually("the watch delivers the new key", || {
        let cached = cache.get(&key);
        async move { cached.is_some_and(|v| v.is_some()) }
    })
    .await;

    nats.restart().await;
    eventually("the cache stops answering after the reconnection", || {
        let usable = cache.usable();
        async move { !usable }
    })
    .await;
    eventually("the watch is set up again", || {
        let usable = cache.usable();
        async move { usable }
    })
    .await;
    assert_eq!(
        cache.get(&key),
        Some(Some(u.as_str().into())),
        "reloaded from the bucket"
    );

    // And the router, after the same reconnection, still honours a merge.
    let by_phone = phone_contact("0633445566");
    publish(&bus, &by_phone).await;
    let b = routed(&bus, &by_phone.id).await.usager_id;
    admin::merge(&bus, &u, &b).await.unwrap();
    let after = phone_contact("0633445566");
    publish(&bus, &after).await;
    assert!(routed_subject(&bus, &after.id).await.ends_with(&format!(".{u}")));

    stop.cancel();
    task.await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    router.shutdown().await;
}
