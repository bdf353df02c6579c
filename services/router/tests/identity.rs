//! One usager id per person, through the live router: creation, reuse
//! across channels and spellings, conflicts, the anonymous case, and two
//! routers racing on the same new person.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;

use common::*;
use guichet_core::{
    identity::normalize_email,
    proto::v1::{FlagKind, IdentityClaims, identity_resolution::Outcome},
};
use guichet_harness::Nats;
use guichet_router::identity;

fn outcome(r: &guichet_core::proto::v1::Routed) -> Outcome {
    Outcome::try_from(r.identity.as_ref().unwrap().outcome).unwrap()
}

#[tokio::test]
async fn usagers_are_created_reused_and_identifiers_attached() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let router = RunningRouter::start(&nats, config()).await;

    let first = email_contact(
        "Jeanne.Martin@Example.fr ",
        "Poubelle",
        "Ma poubelle n'a pas été ramassée",
    );
    publish(&bus, &first).await;
    let first_routed = routed(&bus, &first.id).await;
    assert_eq!(outcome(&first_routed), Outcome::Created);
    let u = first_routed.usager_id.clone();
    assert!(u.starts_with('U') && u.len() == 27, "{u}");

    // Same person, other spelling, now with a phone number.
    let second = with_claims(
        email_contact("", "Encore", "toujours rien"),
        IdentityClaims {
            email: "jeanne.martin@example.fr".into(),
            phone: "06 12 34 56 78".into(),
            ..Default::default()
        },
    );
    publish(&bus, &second).await;
    let second_routed = routed(&bus, &second.id).await;
    assert_eq!(second_routed.usager_id, u);
    assert_eq!(outcome(&second_routed), Outcome::Known);
    assert_eq!(second_routed.identity.as_ref().unwrap().matched_by, vec!["email"]);

    // The phone was attached: a call with only the phone finds her.
    let call = with_claims(
        email_contact("", "Appel", "appel"),
        IdentityClaims {
            phone: "+33612345678".into(),
            ..Default::default()
        },
    );
    publish(&bus, &call).await;
    let call_routed = routed(&bus, &call.id).await;
    assert_eq!(call_routed.usager_id, u);
    assert_eq!(call_routed.identity.as_ref().unwrap().matched_by, vec!["phone"]);

    // What adapters read: the identity bucket layout.
    let by_email = bus
        .usager_of(
            guichet_harness::pseudonymizer(),
            &normalize_email("JEANNE.MARTIN@example.fr").unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(by_email.as_deref(), Some(u.as_str()));
    let (record, _) = identity::read_record(&bus, &u).await.unwrap().unwrap();
    assert_eq!(record.identifiers.len(), 2, "email and phone keys: {record:?}");
    assert!(
        record
            .identifiers
            .iter()
            .all(|k| !k.contains("jeanne") && !k.contains("0612"))
    );

    // Nobody at all: an anonymous id of its own.
    let anonymous = with_claims(email_contact("", "Sans nom", "..."), IdentityClaims::default());
    publish(&bus, &anonymous).await;
    let anonymous_routed = routed(&bus, &anonymous.id).await;
    assert_eq!(outcome(&anonymous_routed), Outcome::Anonymous);
    assert_eq!(anonymous_routed.usager_id, format!("U{}", anonymous.id));

    // An unusable claim is skipped, not fatal.
    let bad = email_contact("not an address", "?", "?");
    publish(&bus, &bad).await;
    assert_eq!(outcome(&routed(&bus, &bad.id).await), Outcome::Anonymous);
    router.shutdown().await;
}

#[tokio::test]
async fn conflicting_identifiers_keep_the_strongest_and_are_published_not_merged() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let router = RunningRouter::start(&nats, config()).await;

    let by_email = email_contact("paul@example.fr", "a", "a");
    publish(&bus, &by_email).await;
    let u_email = routed(&bus, &by_email.id).await.usager_id;
    let by_phone = with_claims(
        email_contact("", "b", "b"),
        IdentityClaims {
            phone: "0699887766".into(),
            ..Default::default()
        },
    );
    publish(&bus, &by_phone).await;
    let u_phone = routed(&bus, &by_phone.id).await.usager_id;
    assert_ne!(u_email, u_phone);

    // Both at once: the e-mail (stronger) wins, the conflict is published.
    let both = with_claims(
        email_contact("", "c", "c"),
        IdentityClaims {
            email: "paul@example.fr".into(),
            phone: "06 99 88 77 66".into(),
            ..Default::default()
        },
    );
    publish(&bus, &both).await;
    let both_routed = routed(&bus, &both.id).await;
    assert_eq!(both_routed.usager_id, u_email);
    assert_eq!(outcome(&both_routed), Outcome::Conflict);
    let conflicts = events(&bus, "identity_conflict").await;
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    assert_eq!(conflicts[0]["contact_id"], both.id.as_str());
    assert_eq!(conflicts[0]["kept"]["usager_id"], u_email.as_str());
    assert_eq!(conflicts[0]["others"][0]["usager_id"], u_phone.as_str());
    let text = conflicts[0].to_string();
    assert!(
        !text.contains("paul") && !text.contains("0699"),
        "no personal data: {text}"
    );

    // Never merged silently: the phone still designates its own usager.
    let phone_again = with_claims(
        email_contact("", "d", "d"),
        IdentityClaims {
            phone: "0699887766".into(),
            ..Default::default()
        },
    );
    publish(&bus, &phone_again).await;
    assert_eq!(routed(&bus, &phone_again.id).await.usager_id, u_phone);

    // A verified account is stronger than an e-mail.
    let account = with_claims(
        email_contact("", "e", "e"),
        IdentityClaims {
            account_id: "fc-sub-123".into(),
            account_issuer: "franceconnect".into(),
            ..Default::default()
        },
    );
    publish(&bus, &account).await;
    let u_account = routed(&bus, &account.id).await.usager_id;
    let account_and_email = with_claims(
        email_contact("", "f", "f"),
        IdentityClaims {
            account_id: "fc-sub-123".into(),
            account_issuer: "FranceConnect".into(),
            email: "paul@example.fr".into(),
            ..Default::default()
        },
    );
    publish(&bus, &account_and_email).await;
    let r = routed(&bus, &account_and_email.id).await;
    assert_eq!(r.usager_id, u_account);
    assert_eq!(outcome(&r), Outcome::Conflict);
    assert_eq!(events(&bus, "identity_conflict").await.len(), 2);
    router.shutdown().await;
}

#[tokio::test]
async fn two_routers_racing_on_the_same_new_person_end_with_one_id() {
    let nats = Nats::start().await;
    let (a, b) = (nats.bus().await, nats.bus().await);
    for round in 0..40 {
        let person = with_claims(
            email_contact("", "x", "x"),
            IdentityClaims {
                email: format!("race{round}@example.fr"),
                phone: format!("+3361234{round:04}"),
                ..Default::default()
            },
        );
        let other_contact = guichet_core::proto::v1::Contact {
            id: guichet_core::ids::contact_id(),
            ..person.clone()
        };
        let (ra, rb) = tokio::join!(
            identity::resolve(&a, guichet_harness::pseudonymizer(), &person),
            identity::resolve(&b, guichet_harness::pseudonymizer(), &other_contact)
        );
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert_eq!(ra.usager_id, rb.usager_id, "round {round}: {ra:?} {rb:?}");
        let outcomes: HashSet<_> = [ra.outcome, rb.outcome].into_iter().collect();
        assert!(
            outcomes.contains(&Outcome::Created),
            "round {round}: one of them created it: {outcomes:?}"
        );
        assert!(
            !outcomes.contains(&Outcome::Conflict),
            "round {round}: no conflict: {ra:?} {rb:?}"
        );
        // And only one record exists for the person.
        let email = normalize_email(&format!("race{round}@example.fr")).unwrap();
        assert_eq!(
            a.usager_of(guichet_harness::pseudonymizer(), &email)
                .await
                .unwrap()
                .as_deref(),
            Some(ra.usager_id.as_str())
        );
    }
    // No orphan record was left behind by the losers.
    let mut keys = a.stores().identity.keys().await.unwrap();
    let mut records = 0;
    use futures::StreamExt;
    while let Some(k) = keys.next().await {
        if k.unwrap().starts_with("usager.") {
            records += 1;
        }
    }
    assert_eq!(records, 40);
}

/// Issue 11: the router does not trust an adapter's check. An address
/// that is not a mailbox (two `@`) is neither attached to the usager nor
/// looked up: the contact is flagged, and a later contact carrying only
/// that address is not routed to her "by email".
#[tokio::test]
async fn an_address_that_is_not_a_mailbox_is_flagged_and_never_attached() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let router = RunningRouter::start(&nats, config()).await;

    let first = with_claims(
        email_contact("", "Voirie", "un trou"),
        IdentityClaims {
            email: "jeanne@martin@example.fr".into(),
            phone: "06 12 34 56 78".into(),
            ..Default::default()
        },
    );
    publish(&bus, &first).await;
    let first_routed = routed(&bus, &first.id).await;
    assert_eq!(outcome(&first_routed), Outcome::Created, "created by phone alone");
    let flags = &first_routed.contact.as_ref().unwrap().flags;
    assert!(
        flags.iter().any(|f| f.kind == FlagKind::MalformedHeader as i32
            && f.reason.contains("usager.email")
            && f.reason.contains("more than one @")
            && !f.reason.contains("jeanne")),
        "{flags:?}"
    );
    let (record, _) = identity::read_record(&bus, &first_routed.usager_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.identifiers.len(), 1, "only the phone key: {record:?}");

    let second = with_claims(
        email_contact("", "Voirie", "toujours ce trou"),
        IdentityClaims {
            email: "jeanne@martin@example.fr".into(),
            ..Default::default()
        },
    );
    publish(&bus, &second).await;
    let second_routed = routed(&bus, &second.id).await;
    assert_eq!(outcome(&second_routed), Outcome::Anonymous);
    assert_ne!(second_routed.usager_id, first_routed.usager_id);
    router.shutdown().await;
}
