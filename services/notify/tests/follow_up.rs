//! The optional follow-up message: a contact that joins an existing
//! request gets a short message when the templates have one for the
//! request's service, and nothing otherwise.

mod common;

use std::time::Duration;

use common::*;
use guichet_core::proto::v1::contact::Details;
use guichet_harness::{Nats, SmtpSink};
use guichet_notify::{template_revisions, templates};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_up_gets_the_short_message_only_where_its_service_has_one() {
    let nats = Nats::start().await;
    let sink = SmtpSink::start().await;
    let mut set = templates::builtin();
    set.insert(
        "follow_up.urbanisme.fr.subject".into(),
        "[{{ reference }}] Votre message a été joint à votre demande".into(),
    );
    set.insert(
        "follow_up.urbanisme.fr.txt".into(),
        "Votre message du {{ received_on }} a été joint à la demande {{ reference }} ({{ service.designation }})."
            .into(),
    );
    set.insert(
        "follow_up.urbanisme.fr.html".into(),
        "<p>Votre message « {{ subject }} » a été joint à la demande {{ reference }}.</p>".into(),
    );
    template_revisions::push(&nats.bus().await, "templates", &set, "t", "tester")
        .await
        .expect("a set with a follow-up for urbanisme passes the check");
    let gateway = Gateway::start(&nats, notify_config(&sink)).await;

    let permis = email_contact("camille@usager.example", "Demande de permis");
    let question = web_contact("dominique@usager.example", "Une question");
    publish(&gateway.bus, &permis).await;
    publish(&gateway.bus, &question).await;
    eventually("both acknowledgments sent", Duration::from_secs(60), || async {
        events(&gateway.bus, "notify_sent").await.len() >= 2
    })
    .await;
    // Both reply, citing their reference: they join their requests.
    let joins_permis = email_contact(
        "camille@usager.example",
        &format!("Re: demande {} <b>pièces</b>", permis.reference),
    );
    let joins_question = email_contact("dominique@usager.example", &format!("Re: {}", question.reference));
    publish(&gateway.bus, &joins_permis).await;
    publish(&gateway.bus, &joins_question).await;
    eventually("the follow-up message sent", Duration::from_secs(60), || async {
        events(&gateway.bus, "notify_sent").await.len() >= 3
    })
    .await;
    eventually("notify handled all four", Duration::from_secs(30), || {
        notify_caught_up(&gateway.bus, 4)
    })
    .await;

    eventually("smtp-sink wrote all three", Duration::from_secs(10), || async {
        sink.messages().len() >= 3
    })
    .await;
    let received: Vec<Received> = sink.messages().iter().map(parse).collect();
    let to = |address: &str| {
        received
            .iter()
            .filter(|r| r.raw.rcpt == [address.to_owned()])
            .collect::<Vec<_>>()
    };
    let camille = to("camille@usager.example");
    assert_eq!(camille.len(), 2, "the acknowledgment and one follow-up message");
    let follow = camille
        .iter()
        .find(|r| r.subject.contains("joint à votre demande"))
        .expect("the follow-up message");
    assert_eq!(
        follow.subject,
        format!("[{}] Votre message a été joint à votre demande", permis.reference)
    );
    assert!(follow.text.contains("Service de l'urbanisme"), "{}", follow.text);
    assert!(
        follow.html.contains("&lt;b&gt;pièces&lt;/b&gt;"),
        "escaped: {}",
        follow.html
    );
    let Some(Details::Email(email)) = &joins_permis.details else {
        unreachable!()
    };
    assert_eq!(
        follow.raw.header("In-Reply-To"),
        Some(format!("<{}>", email.message_id))
    );
    let own_id = follow.raw.header("Message-ID").unwrap_or_default();
    assert_eq!(
        own_id,
        format!("<follow_up.{}.{}@ville.example>", permis.reference, joins_permis.id)
    );
    assert_eq!(
        to("dominique@usager.example").len(),
        1,
        "accueil has no follow-up template: the acknowledgment only"
    );
    gateway.shutdown().await;
}
