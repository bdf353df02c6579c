//! Status messages on request transitions, end to end on real servers: a
//! request opened through the router is moved by the requests service's
//! store (as the gRPC API and `guichet request update` do); the updates
//! that ask for it (`notify_usager`) reach the usager through smtp-sink,
//! once per event, in the language of the contact that opened the request.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::*;
use guichet_core::proto::v1::{Contact, Outcome, Transition};
use guichet_harness::{Nats, SmtpSink, streams};
use guichet_requests::{events, store};

async fn apply(gateway: &Gateway, reference: &str, transition: Transition, notify: bool, documents: &[&str]) {
    let stream = events::events_stream(&gateway.bus).await.expect("EVENTS opened");
    let change = store::Change {
        transition,
        agent_id: "agent-1".into(),
        client: "test".into(),
        client_request_id: format!("{transition:?}"),
        note: String::new(),
        expected_version: None,
        outcome: if transition == Transition::Close {
            Outcome::Granted
        } else {
            Outcome::Unspecified
        },
        to_service: String::new(),
        notify_usager: notify,
        documents: documents.iter().map(|d| (*d).to_owned()).collect(),
    };
    let allow = |_: &str| Ok(());
    store::update(
        &gateway.bus,
        &stream,
        reference,
        &change,
        &allow,
        guichet_requests::clock::Rules::Builtin,
        Utc::now(),
    )
    .await
    .expect("the store answers")
    .expect("the transition applies");
}

/// Publishes `contact` and waits for its acknowledgment to be sent.
async fn acknowledged(gateway: &Gateway, contact: &Contact) {
    publish(&gateway.bus, contact).await;
    eventually("the acknowledgment sent", Duration::from_secs(60), || async {
        !events(&gateway.bus, "notify_sent").await.is_empty()
    })
    .await;
}

/// Takes the request, asks for `documents` (telling the usager), resumes
/// it, answers and closes it (telling the usager each time).
async fn whole_life(gateway: &Gateway, reference: &str, documents: &[&str]) {
    apply(gateway, reference, Transition::Take, false, &[]).await;
    apply(gateway, reference, Transition::RequestDocuments, true, documents).await;
    apply(gateway, reference, Transition::Resume, false, &[]).await;
    apply(gateway, reference, Transition::Answer, true, &[]).await;
    apply(gateway, reference, Transition::Close, true, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_that_ask_for_it_tell_the_usager_once_per_event() {
    let nats = Nats::start().await;
    let sink = SmtpSink::start().await;
    let gateway = Gateway::start(&nats, notify_config(&sink)).await;
    let usager = "camille.martin@usager.example";
    let contact = email_contact(usager, "Demande de permis");
    let reference = contact.reference.clone();
    acknowledged(&gateway, &contact).await;

    whole_life(
        &gateway,
        &reference,
        &["Plan de situation", "Justificatif <b>de domicile</b>"],
    )
    .await;
    eventually("three status messages received", Duration::from_secs(60), || async {
        sink.messages().len() >= 4
    })
    .await;

    // The documents_requested event delivered again (a redelivery beyond
    // the duplicate window): OUTBOX refuses a second copy.
    let journal = streams::read_all(gateway.bus.jetstream(), "EVENTS", Duration::from_secs(20))
        .await
        .unwrap();
    let asked = journal
        .iter()
        .find(|m| m.subject == format!("guichet.events.request.request_documents.{reference}"))
        .expect("the event on the journal");
    gateway
        .bus
        .jetstream()
        .publish(asked.subject.clone(), asked.payload.clone().into())
        .await
        .unwrap()
        .await
        .unwrap();
    eventually("notify handled every event", Duration::from_secs(30), || {
        consumer_caught_up(&gateway.bus, "EVENTS", "notify-status")
    })
    .await;
    let outbox = streams::read_all(gateway.bus.jetstream(), "OUTBOX", Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(
        outbox.len(),
        4,
        "one notification per event: {:?}",
        outbox.iter().map(|m| &m.subject).collect::<Vec<_>>()
    );
    assert!(outbox.iter().any(|m| m.subject.ends_with(&format!("{reference}.3"))
        && m.subject.starts_with("guichet.outbox.documents_requested.")));

    let received: Vec<Received> = sink.messages().iter().map(parse).collect();
    assert_eq!(
        received.len(),
        4,
        "the acknowledgment and three status messages, no copy"
    );
    assert!(received.iter().all(|r| r.raw.rcpt == [usager.to_owned()]));
    let by_subject = |words: &str| {
        received
            .iter()
            .find(|r| r.subject == format!("[{reference}] {words}"))
            .unwrap_or_else(|| panic!("no message `{words}`"))
    };
    let documents = by_subject("Pièces à fournir pour votre demande");
    assert!(documents.text.contains("- Plan de situation"), "{}", documents.text);
    assert!(
        documents.text.contains("- Justificatif <b>de domicile</b>"),
        "{}",
        documents.text
    );
    assert!(
        documents
            .html
            .contains("<li>Justificatif &lt;b&gt;de domicile&lt;/b&gt;</li>"),
        "the agent's text is escaped: {}",
        documents.html
    );
    assert_eq!(
        documents.raw.header("Message-ID"),
        Some(format!("<documents_requested.{reference}.3@ville.example>"))
    );
    assert!(
        documents.raw.header("In-Reply-To").is_some(),
        "threads under the usager's message"
    );
    let today = Utc::now()
        .with_timezone(&chrono_tz::Europe::Paris)
        .format("%d/%m/%Y")
        .to_string();
    let answered = by_subject("Réponse à votre demande");
    assert!(
        answered.text.contains(&format!("a répondu le {today}")),
        "{}",
        answered.text
    );
    let closed = by_subject("Votre demande est close");
    assert!(closed.text.contains("suite favorable"), "{}", closed.text);
    assert!(closed.text.contains("Service de l'urbanisme"), "{}", closed.text);
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_time_from_receipt_to_the_acknowledgments_250_is_folded_into_the_request() {
    let nats = Nats::start().await;
    let sink = SmtpSink::start().await;
    let gateway = Gateway::start(&nats, notify_config(&sink)).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let folding = tokio::spawn(guichet_requests::acknowledgments::run(nats.bus().await, stop.clone()));
    let contact = web_contact("dominique@usager.example", "Une question");
    let reference = contact.reference.clone();
    publish(&gateway.bus, &contact).await;
    let kv = gateway.bus.stores().requests.clone();
    eventually("the record carries the acknowledgment", Duration::from_secs(60), || {
        let (kv, reference) = (kv.clone(), reference.clone());
        async move {
            store::read(&kv, &reference)
                .await
                .ok()
                .flatten()
                .is_some_and(|(r, _)| !r.acknowledged_at.is_empty())
        }
    })
    .await;
    let (record, _) = store::read(&kv, &reference).await.unwrap().unwrap();
    let sent = events(&gateway.bus, "notify_sent").await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["at"].as_str(), Some(record.acknowledged_at.as_str()));
    assert_eq!(
        sent[0]["receipt_to_sent_seconds"].as_f64(),
        Some(record.receipt_to_acknowledgment_seconds)
    );
    // Measured from the contact's receipt: after it, within the test.
    let received = contact
        .received_at
        .as_ref()
        .and_then(guichet_core::proto::to_datetime)
        .unwrap();
    let acknowledged = chrono::DateTime::parse_from_rfc3339(&record.acknowledged_at).unwrap();
    assert!(acknowledged >= received && record.receipt_to_acknowledgment_seconds < 60.0);

    // A second notify_sent for the same request (a copy sent again in the
    // duplicate window) keeps the first.
    assert!(
        !guichet_requests::acknowledgments::fold(&gateway.bus, &reference, "2030-01-01T00:00:00Z", 99.0)
            .await
            .unwrap()
    );
    let (again, _) = store::read(&kv, &reference).await.unwrap().unwrap();
    assert_eq!(again.acknowledged_at, record.acknowledged_at);
    stop.cancel();
    folding.await.unwrap();
    gateway.shutdown().await;
}

/// A contact in English (`Contact.language` = "en") gets its status
/// messages in English, from the built-in English templates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_english_contact_gets_its_status_messages_in_english() {
    let nats = Nats::start().await;
    let sink = SmtpSink::start().await;
    let gateway = Gateway::start(&nats, notify_config(&sink)).await;
    let usager = "alex.smith@usager.example";
    let mut contact = email_contact(usager, "Building permit");
    contact.language = "en".into();
    let reference = contact.reference.clone();
    acknowledged(&gateway, &contact).await;

    whole_life(&gateway, &reference, &["Site plan"]).await;
    eventually("three status messages received", Duration::from_secs(60), || async {
        sink.messages().len() >= 4
    })
    .await;

    let received: Vec<Received> = sink.messages().iter().map(parse).collect();
    let mut subjects: Vec<&str> = received.iter().map(|r| r.subject.as_str()).collect();
    subjects.sort_unstable();
    let expected = [
        format!("[{reference}] Acknowledgment of receipt of your request"),
        format!("[{reference}] Answer to your request"),
        format!("[{reference}] Documents needed for your request"),
        format!("[{reference}] Your request is closed"),
    ];
    assert_eq!(subjects, expected.iter().map(String::as_str).collect::<Vec<_>>());
    let by_subject = |words: &str| {
        received
            .iter()
            .find(|r| r.subject == format!("[{reference}] {words}"))
            .unwrap_or_else(|| panic!("no message `{words}`"))
    };
    let documents = by_subject("Documents needed for your request");
    assert!(
        documents.text.starts_with("Hello") && documents.text.contains("- Site plan"),
        "{}",
        documents.text
    );
    assert!(documents.html.contains("<html lang=\"en\">"), "{}", documents.html);
    let closed = by_subject("Your request is closed");
    assert!(closed.text.contains("it was granted"), "{}", closed.text);
    assert!(!closed.text.contains("Bonjour"), "{}", closed.text);
    gateway.shutdown().await;
}
