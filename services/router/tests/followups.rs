//! Follow-ups join the request they continue: by a reference in the
//! subject or body, or by an e-mail citing a message of the request.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use guichet_core::{
    bus::subjects,
    proto::{
        self,
        v1::{Channel, EmailDetails, FlagKind, contact::Details},
    },
};
use guichet_harness::Nats;
use guichet_router::{live, requests};

#[path = "common/rules.rs"]
mod rules_text;

/// A bus, the rules of `common/rules.rs` pushed, and a router using them.
async fn with_rules(nats: &Nats) -> (guichet_core::Bus, RunningRouter) {
    let bus = nats.bus().await;
    live::push(&bus, "rules", rules_text::ALL_CONDITIONS, "t.toml", "t")
        .await
        .unwrap();
    (bus, RunningRouter::start(nats, config()).await)
}

#[tokio::test]
async fn a_reference_in_the_subject_or_body_joins_the_request_and_its_service() {
    let nats = Nats::start().await;
    let (bus, router) = with_rules(&nats).await;

    let first = email_contact("a@example.fr", "Encombrants", "passage des encombrants ?");
    publish(&bus, &first).await;
    let opened = routed(&bus, &first.id).await;
    assert_eq!(opened.reference, first.reference);
    assert!(opened.follow_up_of.is_empty());
    let request = requests::request(&bus, &first.reference).await.unwrap().unwrap();
    assert_eq!(request.service, "dechets");
    assert_eq!(request.usager_id, opened.usager_id);
    assert_eq!(request.status, "open");

    // The reply quotes the reference, lower-cased and spaced, and says
    // nothing the rules would send to `dechets`: it still goes there.
    let spoken = first.reference.to_lowercase().replace('-', " ");
    let mut by_phone = email_contact("", "Rappel", &format!("Je rappelle pour le dossier {spoken}, merci"));
    by_phone.channel = Channel::Phone as i32;
    by_phone.details = None;
    publish(&bus, &by_phone).await;
    let follow = routed(&bus, &by_phone.id).await;
    assert_eq!(follow.follow_up_of, first.reference);
    assert_eq!(follow.reference, first.reference);
    let q = follow.qualification.clone().unwrap();
    assert_eq!(q.service, "dechets");
    assert_eq!(
        q.due_date,
        opened.qualification.clone().unwrap().due_date,
        "the request's deadline"
    );
    assert!(q.explanation[0].contains("in the body"), "{:?}", q.explanation);
    assert!(q.tags.contains(&"follow-up".to_owned()));

    let in_subject = email_contact("a@example.fr", &format!("Re: demande {}", first.reference), "merci");
    publish(&bus, &in_subject).await;
    let r = routed(&bus, &in_subject.id).await;
    assert_eq!(r.follow_up_of, first.reference);
    assert!(r.qualification.unwrap().explanation[0].contains("in the subject"));

    let request = requests::request(&bus, &first.reference).await.unwrap().unwrap();
    assert_eq!(
        request.contacts,
        vec![first.id.clone(), by_phone.id.clone(), in_subject.id.clone()]
    );
    // Follow-ups open no request of their own, but the reference each was
    // given at intake (the one the counter told the caller) now stands for
    // the request it joined...
    let by_alias = requests::request(&bus, &by_phone.reference).await.unwrap().unwrap();
    assert_eq!(by_alias.reference, first.reference);
    assert_eq!(by_alias.opened_by, first.id);
    // ... so that citing it later joins that request, not a new one.
    let cites_alias = email_contact("a@example.fr", &format!("Re: {}", by_phone.reference), "toujours rien");
    publish(&bus, &cites_alias).await;
    let r = routed(&bus, &cites_alias.id).await;
    assert_eq!(r.follow_up_of, first.reference);
    assert_eq!(r.qualification.unwrap().service, "dechets");

    // An unknown reference is just text: a new request.
    let unknown = email_contact("b@example.fr", "Re: 2020-AAAA-BBBB", "encombrants");
    publish(&bus, &unknown).await;
    let r = routed(&bus, &unknown.id).await;
    assert!(r.follow_up_of.is_empty());
    assert_eq!(r.reference, unknown.reference);
    router.shutdown().await;
}

#[tokio::test]
async fn a_reply_citing_a_message_of_the_request_joins_it() {
    let nats = Nats::start().await;
    let (bus, router) = with_rules(&nats).await;

    let first = email_contact("a@example.fr", "Suite du PC 123", "pièces");
    publish(&bus, &first).await;
    let opened = routed(&bus, &first.id).await;
    assert_eq!(opened.qualification.unwrap().service, "urbanisme");
    let first_msgid = match &first.details {
        Some(Details::Email(e)) => e.message_id.clone(),
        _ => unreachable!(),
    };

    let mut reply = email_contact("a@example.fr", "Question", "et pour les déchets ?");
    reply.details = Some(Details::Email(EmailDetails {
        message_id: format!("{}@mail.example.fr", reply.id),
        in_reply_to: format!("<{}>", first_msgid.to_uppercase()),
        ..Default::default()
    }));
    publish(&bus, &reply).await;
    let r = routed(&bus, &reply.id).await;
    assert_eq!(r.follow_up_of, first.reference);
    let q = r.qualification.unwrap();
    assert_eq!(q.service, "urbanisme", "joins the request, not the `dechets` rule");
    assert!(q.explanation[0].contains("In-Reply-To"), "{:?}", q.explanation);
    assert!(
        q.explanation[1].contains("par-mot-cle"),
        "the rule that would have applied: {:?}",
        q.explanation
    );

    // A later reply citing the reply (References chain) joins it too.
    let mut later = email_contact("a@example.fr", "Encore", "encore");
    later.details = Some(Details::Email(EmailDetails {
        message_id: format!("{}@mail.example.fr", later.id),
        in_reply_to: "unknown@elsewhere".into(),
        references: vec!["old@elsewhere".into(), format!("{}@mail.example.fr", reply.id)],
        ..Default::default()
    }));
    publish(&bus, &later).await;
    let r = routed(&bus, &later.id).await;
    assert_eq!(r.follow_up_of, first.reference);
    assert!(r.qualification.unwrap().explanation[0].contains("References"));
    let request = requests::request(&bus, &first.reference).await.unwrap().unwrap();
    assert_eq!(request.contacts.len(), 3);
    assert_eq!(request.message_ids.len(), 3);
    router.shutdown().await;
}

#[tokio::test]
async fn a_reference_taken_by_another_contact_moves_to_a_derived_one() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let router = RunningRouter::start(&nats, config()).await;
    let first = email_contact("a@example.fr", "x", "x");
    publish(&bus, &first).await;
    routed(&bus, &first.id).await;
    // The adapter minted the same reference again (40 random bits...).
    let mut clash = email_contact("b@example.fr", "y", "y");
    clash.reference = first.reference.clone();
    publish(&bus, &clash).await;
    let r = routed(&bus, &clash.id).await;
    assert_ne!(r.reference, first.reference);
    assert_eq!(r.reference, requests::derived_reference(&first.reference, &clash.id));
    assert!(r.follow_up_of.is_empty());
    let request = requests::request(&bus, &r.reference).await.unwrap().unwrap();
    assert_eq!(request.opened_by, clash.id);
    let original = requests::request(&bus, &first.reference).await.unwrap().unwrap();
    assert_eq!(
        original.contacts,
        vec![first.id.clone()],
        "the first request is untouched"
    );
    router.shutdown().await;
}

#[tokio::test]
async fn the_same_email_through_two_mailboxes_joins_the_first_request_as_a_copy_queued_once() {
    let nats = Nats::start().await;
    let (bus, router) = with_rules(&nats).await;

    // Written to contact@ with urbanisme@ in Cc: both mailboxes are watched.
    let first = email_contact("a@example.fr", "Suite du PC 123", "pièces jointes");
    publish(&bus, &first).await;
    let opened = routed(&bus, &first.id).await;
    let copy = crossposted(&first, "urbanisme@");
    publish(&bus, &copy).await;
    let r = routed(&bus, &copy.id).await;
    assert_eq!(r.reference, first.reference);
    assert_eq!(r.follow_up_of, first.reference);
    assert_eq!(r.usager_id, opened.usager_id);
    let q = r.qualification.clone().unwrap();
    assert!(q.tags.contains(&"copy".to_owned()), "{q:?}");
    assert!(q.explanation[0].contains(&first.id), "{:?}", q.explanation);
    let flags = &r.contact.as_ref().unwrap().flags;
    assert!(flags.iter().any(|f| f.kind == FlagKind::Copy as i32), "{flags:?}");
    let request = requests::request(&bus, &first.reference).await.unwrap().unwrap();
    assert_eq!(
        request.contacts,
        vec![first.id.clone(), copy.id.clone()],
        "kept in the journal"
    );

    // Queued once: the service's queue subject holds the first only, the
    // copy is journaled under the usager's history, out of every queue.
    let service = opened.qualification.unwrap().service;
    let queued = read_all(&bus, subjects::ROUTED_STREAM, &subjects::service_queue(&service)).await;
    assert_eq!(
        queued.len(),
        1,
        "{:?}",
        queued.iter().map(|(s, _)| s).collect::<Vec<_>>()
    );
    let history = read_all(
        &bus,
        subjects::ROUTED_STREAM,
        &subjects::usager_history(&opened.usager_id),
    )
    .await;
    assert_eq!(history.len(), 2);

    // A different message that shares the Message-ID (it happens) is not a copy.
    let mut same_id = crossposted(&first, "contact@");
    same_id.body = "une autre demande".into();
    publish(&bus, &same_id).await;
    let r = routed(&bus, &same_id.id).await;
    assert_ne!(r.reference, first.reference);
    assert!(r.follow_up_of.is_empty());

    // The same message again past `router.crosspost_window` (7 days) is new.
    let mut late = crossposted(&first, "contact@");
    let eight_days = chrono::Utc::now() + chrono::Duration::days(8);
    late.received_at = Some(proto::timestamp(eight_days));
    publish(&bus, &late).await;
    let r = routed(&bus, &late.id).await;
    assert_ne!(r.reference, first.reference, "{r:?}");
    router.shutdown().await;
}

#[tokio::test]
async fn a_forged_message_id_does_not_re_point_the_replies_of_a_request() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let router = RunningRouter::start(&nats, config()).await;
    let victim = email_contact("victime@example.fr", "Permis", "mon dossier");
    publish(&bus, &victim).await;
    routed(&bus, &victim.id).await;
    // Another sender reuses the victim's Message-ID on a message of theirs.
    let mut forged = email_contact("autre@example.fr", "Autre chose", "sans rapport");
    forged.details = victim.details.clone();
    publish(&bus, &forged).await;
    let forged_routed = routed(&bus, &forged.id).await;
    assert_ne!(forged_routed.reference, victim.reference);
    // A genuine reply to the victim's message still joins the victim's request.
    let mut reply = email_contact("victime@example.fr", "Re: Permis", "suite");
    reply.details = Some(Details::Email(EmailDetails {
        message_id: format!("{}@mail.example.fr", reply.id),
        in_reply_to: match &victim.details {
            Some(Details::Email(e)) => e.message_id.clone(),
            _ => unreachable!(),
        },
        ..Default::default()
    }));
    publish(&bus, &reply).await;
    assert_eq!(routed(&bus, &reply.id).await.follow_up_of, victim.reference);
    router.shutdown().await;
}

/// Issue 12: anyone can write a reference or copy a Message-ID into
/// In-Reply-To. An e-mail from someone else citing a request opens a new
/// request, flagged with the cited reference; the request's own usager
/// still joins it.
#[tokio::test]
async fn another_usager_citing_a_request_opens_a_new_one_flagged_with_it() {
    let nats = Nats::start().await;
    let (bus, router) = with_rules(&nats).await;

    let first = email_contact("a@example.fr", "Encombrants", "passage des encombrants ?");
    publish(&bus, &first).await;
    let opened = routed(&bus, &first.id).await;
    let first_msgid = match &first.details {
        Some(Details::Email(e)) => e.message_id.clone(),
        _ => unreachable!(),
    };

    let mut forged = email_contact("intrus@example.org", "Re: Encombrants", "je prends la suite");
    forged.details = Some(Details::Email(EmailDetails {
        message_id: format!("{}@mail.example.org", forged.id),
        in_reply_to: first_msgid.clone(),
        ..Default::default()
    }));
    let cites = email_contact("intrus@example.org", &format!("Re: {}", first.reference), "encombrants");
    for contact in [&forged, &cites] {
        publish(&bus, contact).await;
        let r = routed(&bus, &contact.id).await;
        assert!(r.follow_up_of.is_empty(), "{:?}", r.qualification);
        assert_eq!(r.reference, contact.reference, "a request of its own");
        assert_ne!(r.usager_id, opened.usager_id);
        let flag = r
            .contact
            .as_ref()
            .unwrap()
            .flags
            .iter()
            .find(|f| f.kind == FlagKind::CitesAnotherUsagersRequest as i32)
            .unwrap_or_else(|| panic!("flagged: {:?}", r.contact.as_ref().unwrap().flags))
            .clone();
        assert!(flag.reason.contains(&first.reference), "{}", flag.reason);
    }

    // The request's own usager still joins it, by either way.
    let mut reply = email_contact("a@example.fr", "Re: Encombrants", "et alors ?");
    reply.details = Some(Details::Email(EmailDetails {
        message_id: format!("{}@mail.example.fr", reply.id),
        in_reply_to: first_msgid,
        ..Default::default()
    }));
    publish(&bus, &reply).await;
    assert_eq!(routed(&bus, &reply.id).await.follow_up_of, first.reference);
    let request = requests::request(&bus, &first.reference).await.unwrap().unwrap();
    assert_eq!(request.contacts, vec![first.id.clone(), reply.id.clone()]);
    router.shutdown().await;
}
