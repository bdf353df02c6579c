//! The accusé de réception, end to end on real servers: contacts are
//! published to INTAKE, routed by the real router, acknowledged by notify
//! and delivered to a real SMTP server (smtp-sink), whose files are read.

mod common;

use std::{collections::HashSet, time::Duration};

use common::*;
use guichet_core::proto::v1::FlagKind;
use guichet_harness::{Nats, SmtpSink};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_and_a_web_contact_each_get_one_acknowledgment_with_every_mention() {
    let nats = Nats::start().await;
    let sink = SmtpSink::start().await;
    let gateway = Gateway::start(&nats, notify_config(&sink)).await;
    let by_mail = email_contact("camille.martin@usager.example", "Ma demande <b>urgente</b> de permis");
    let by_web = web_contact("dominique@usager.example", "Demande d'attestation");
    publish(&gateway.bus, &by_mail).await;
    publish(&gateway.bus, &by_web).await;

    eventually("both acknowledgments sent", Duration::from_secs(60), || async {
        events(&gateway.bus, "notify_sent").await.len() >= 2
    })
    .await;
    eventually("smtp-sink wrote both", Duration::from_secs(10), || async {
        sink.messages().len() >= 2
    })
    .await;
    let received: Vec<Received> = sink.messages().iter().map(parse).collect();
    assert_eq!(received.len(), 2, "exactly one each");

    let mail = received
        .iter()
        .find(|r| r.raw.rcpt == ["camille.martin@usager.example"])
        .expect("the e-mail usager's acknowledgment");
    let web = received
        .iter()
        .find(|r| r.raw.rcpt == ["dominique@usager.example"])
        .expect("the web usager's acknowledgment");

    // Threads under the usager's message, answers go to the service, and
    // it says it is automatic (RFC 3834).
    let mail_msgid = match &by_mail.details {
        Some(guichet_core::proto::v1::contact::Details::Email(e)) => e.message_id.clone(),
        _ => unreachable!(),
    };
    assert_eq!(mail.raw.header("In-Reply-To"), Some(format!("<{mail_msgid}>")));
    assert!(mail.raw.header("References").unwrap_or_default().contains(&mail_msgid));
    assert_eq!(mail.raw.header("Reply-To").as_deref(), Some("urbanisme@ville.example"));
    assert_eq!(mail.raw.header("Auto-Submitted").as_deref(), Some("auto-replied"));
    let own_id = mail.raw.header("Message-ID").unwrap_or_default();
    assert!(
        own_id.ends_with("@ville.example>") && own_id.contains("acknowledgment."),
        "{own_id}"
    );
    assert_eq!(
        web.raw.header("In-Reply-To"),
        None,
        "a web contact has no message to answer"
    );
    assert_eq!(web.raw.header("Reply-To").as_deref(), Some("accueil@ville.example"));

    for (r, contact, designation, address, email, phone) in [
        (
            mail,
            &by_mail,
            "Service de l'urbanisme",
            "2 rue des Permis, 67000 Strasbourg",
            "urbanisme@ville.example",
            "+33 3 88 00 00 02",
        ),
        (
            web,
            &by_web,
            "Accueil général de la mairie",
            "1 place de la Mairie, 67000 Strasbourg",
            "accueil@ville.example",
            "+33 3 88 00 00 01",
        ),
    ] {
        let reference = r
            .subject
            .split(']')
            .next()
            .unwrap_or("")
            .trim_start_matches('[')
            .to_owned();
        assert!(
            r.subject.starts_with('[') && reference.len() == 14,
            "reference in brackets: {}",
            r.subject
        );
        let received_at = contact
            .received_at
            .as_ref()
            .and_then(guichet_core::proto::to_datetime)
            .unwrap();
        let received_on = received_at
            .with_timezone(&chrono_tz::Europe::Paris)
            .format("%d/%m/%Y")
            .to_string();
        for part in [&r.text, &r.html] {
            for mention in [
                designation,
                address,
                email,
                phone,
                reference.as_str(),
                received_on.as_str(),
            ] {
                let shown = part.replace("&#39;", "'");
                assert!(shown.contains(mention), "lacks {mention:?}:\n{part}");
            }
        }
    }
    // Dates keep their slashes in HTML (no `&#x2f;`).
    assert!(!mail.html.contains("&#x2f;"), "{}", mail.html);
    // The usager's text is escaped in HTML, as written in text.
    assert!(mail.text.contains("<b>urgente</b>"), "{}", mail.text);
    assert!(
        !mail.html.contains("<b>urgente</b>") && mail.html.contains("&lt;b&gt;urgente"),
        "{}",
        mail.html
    );

    // The references match the routed requests, and the sent events
    // carry receipt → 250.
    let sent = events(&gateway.bus, "notify_sent").await;
    assert_eq!(sent.len(), 2);
    assert!(
        sent.iter()
            .all(|e| e["receipt_to_sent_seconds"].as_f64().is_some_and(|s| s >= 0.0))
    );
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_replies_bounces_robots_own_mailboxes_and_contacts_without_email_get_none() {
    let nats = Nats::start().await;
    let sink = SmtpSink::start().await;
    let gateway = Gateway::start(&nats, notify_config(&sink)).await;
    let quiet = [
        flagged(email_contact("vacances@usager.example", "Absence"), FlagKind::AutoReply),
        flagged(email_contact("rebond@usager.example", "Undelivered"), FlagKind::Bounce),
        flagged(email_contact("lettre@usager.example", "Newsletter"), FlagKind::Bulk),
        email_contact("noreply@plateforme.example", "Notification"),
        email_contact("MAILER-DAEMON@relay.example", "Failure"),
        email_contact("courrier@ville.example", "Transfert interne"),
        email_contact("mairie-contact@ville.example", "Copie"),
        email_contact("", "Sans adresse"),
    ];
    for contact in &quiet {
        publish(&gateway.bus, contact).await;
    }
    let heard = email_contact("claude@usager.example", "Une vraie demande");
    publish(&gateway.bus, &heard).await;

    // Positive evidence first: every routed contact handled by notify.
    eventually("notify handled all nine", Duration::from_secs(60), || async {
        notify_caught_up(&gateway.bus, 9).await
    })
    .await;
    eventually("the one acknowledgment sent", Duration::from_secs(60), || async {
        events(&gateway.bus, "notify_sent").await.len() == 1
    })
    .await;
    eventually("smtp-sink wrote it", Duration::from_secs(10), || async {
        !sink.messages().is_empty()
    })
    .await;
    let messages = sink.messages();
    assert_eq!(messages.len(), 1, "only the real demand is acknowledged");
    assert_eq!(messages[0].rcpt, ["claude@usager.example"]);

    let mut reasons: Vec<String> = events(&gateway.bus, "notify_suppressed")
        .await
        .iter()
        .map(|e| e["reason"].as_str().unwrap_or_default().to_owned())
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            "auto_reply",
            "bounce",
            "bulk",
            "own_mailbox",
            "own_mailbox",
            "robot_address",
            "robot_address"
        ],
        "every suppression recorded with its reason (no e-mail: nothing to suppress)"
    );
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_contacts_from_one_usager_get_at_most_max_per_usager() {
    let nats = Nats::start().await;
    let sink = SmtpSink::start().await;
    let config = notify_config(&sink);
    let max = config.max_per_usager as usize;
    let gateway = Gateway::start(&nats, config).await;
    for i in 0..50 {
        publish(
            &gateway.bus,
            &email_contact("insistant@usager.example", &format!("Demande {i}")),
        )
        .await;
    }
    eventually("notify handled all fifty", Duration::from_secs(120), || async {
        notify_caught_up(&gateway.bus, 50).await
    })
    .await;
    eventually("the admitted ones sent", Duration::from_secs(60), || async {
        events(&gateway.bus, "notify_sent").await.len() == max
    })
    .await;
    let limited = events(&gateway.bus, "notify_suppressed")
        .await
        .iter()
        .filter(|e| e["reason"] == "rate_limit")
        .count();
    assert_eq!(limited, 50 - max, "the others are recorded as rate-limited");
    eventually("smtp-sink wrote them", Duration::from_secs(10), || async {
        sink.messages().len() >= max
    })
    .await;
    assert_eq!(sink.messages().len(), max);
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_down_then_back_delivers_everything_once() {
    let nats = Nats::start().await;
    let mut sink = SmtpSink::start().await;
    let gateway = Gateway::start(&nats, notify_config(&sink)).await;
    sink.stop().await;
    let down_since = tokio::time::Instant::now();
    let addresses: Vec<String> = (0..10).map(|i| format!("usager{i}@usager.example")).collect();
    for address in &addresses {
        publish(&gateway.bus, &email_contact(address, "Demande pendant la panne")).await;
    }
    // Evidence that sending was tried and failed: every notification
    // queued, and redelivered at least once.
    eventually("all ten queued and retried", Duration::from_secs(60), || async {
        let Ok(mut stream) = gateway.bus.jetstream().get_stream("OUTBOX").await else {
            return false;
        };
        let Ok(messages) = stream.info().await.map(|i| i.state.messages) else {
            return false;
        };
        let Ok(mut c) = stream
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>("notify-sender")
            .await
        else {
            return false;
        };
        let Ok(ci) = c.info().await else { return false };
        messages == 10 && ci.delivered.consumer_sequence >= 20 && ci.ack_floor.stream_sequence == 0
    })
    .await;
    // Down for 30 s in all, as an SMTP relay's restart or outage would be.
    tokio::time::sleep_until(down_since + Duration::from_secs(30)).await;
    assert!(sink.messages().is_empty());
    sink.start_again().await;

    eventually("all ten sent once back", Duration::from_secs(90), || async {
        events(&gateway.bus, "notify_sent").await.len() == 10
    })
    .await;
    eventually("smtp-sink wrote them", Duration::from_secs(10), || async {
        sink.messages().len() >= 10
    })
    .await;
    let messages = sink.messages();
    assert_eq!(messages.len(), 10, "each once");
    let to: HashSet<String> = messages.iter().flat_map(|m| m.rcpt.clone()).collect();
    assert_eq!(to, addresses.into_iter().collect::<HashSet<_>>());
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_recipient_is_recorded_unreachable_and_not_retried() {
    let nats = Nats::start().await;
    // 5xx to every RCPT TO.
    let sink = SmtpSink::start_with(&["-f", "RCPT"]).await;
    let gateway = Gateway::start(&nats, notify_config(&sink)).await;
    publish(&gateway.bus, &email_contact("inconnu@usager.example", "Demande")).await;
    eventually("the permanent failure recorded", Duration::from_secs(60), || async {
        !events(&gateway.bus, "notify_unreachable").await.is_empty()
    })
    .await;
    let event = &events(&gateway.bus, "notify_unreachable").await[0];
    assert!(
        event["smtp_code"].as_str().is_some_and(|c| c.starts_with('5')),
        "{event}"
    );
    let stream = gateway.bus.jetstream().get_stream("OUTBOX").await.unwrap();
    let mut c = stream
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>("notify-sender")
        .await
        .unwrap();
    let info = c.info().await.unwrap();
    assert_eq!(info.delivered.consumer_sequence, 1, "tried once, never retried");
    assert_eq!(info.num_ack_pending + info.num_pending as usize, 0);
    assert!(sink.messages().is_empty());
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demand_subject_to_an_implicit_decision_is_told_the_date_silence_is_worth_rejection() {
    let nats = Nats::start().await;
    let sink = SmtpSink::start().await;
    let gateway = Gateway::start(&nats, notify_config(&sink)).await;
    let contact = web_contact("terrasse@usager.example", "Autorisation de terrasse");
    let plain = web_contact("sans-delai@usager.example", "Une question");
    publish(&gateway.bus, &contact).await;
    publish(&gateway.bus, &plain).await;
    eventually("both acknowledgments received", Duration::from_secs(60), || async {
        sink.messages().len() >= 2
    })
    .await;
    let received: Vec<Received> = sink.messages().iter().map(parse).collect();
    let with = received
        .iter()
        .find(|r| r.raw.rcpt == ["terrasse@usager.example"])
        .expect("the terrasse acknowledgment");
    let without = received
        .iter()
        .find(|r| r.raw.rcpt == ["sans-delai@usager.example"])
        .expect("the other acknowledgment");
    // The rule says rejection after 2 months, counted in Paris time from receipt.
    let received_at = contact
        .received_at
        .as_ref()
        .and_then(guichet_core::proto::to_datetime)
        .unwrap();
    let due = (received_at.with_timezone(&chrono_tz::Europe::Paris).date_naive() + chrono::Months::new(2))
        .format("%d/%m/%Y")
        .to_string();
    for part in [&with.text, &with.html] {
        let part = part.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            part.contains(&format!("réputée rejetée le {due}")),
            "the implicit rejection date {due}:\n{part}"
        );
        assert!(part.contains("recours") && part.contains("deux mois"), "{part}");
    }
    assert!(
        !without.text.contains("réputée"),
        "no implicit decision, no date: {}",
        without.text
    );
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgetting_a_usager_purges_their_notifications_from_outbox() {
    let nats = Nats::start().await;
    let sink = SmtpSink::start().await;
    let gateway = Gateway::start(&nats, notify_config(&sink)).await;
    let forgotten = "oubliez-moi@usager.example";
    let kept = "gardee@usager.example";
    publish(&gateway.bus, &web_contact(forgotten, "Première demande")).await;
    publish(&gateway.bus, &email_contact(forgotten, "Seconde demande de permis")).await;
    publish(&gateway.bus, &web_contact(kept, "Une autre demande")).await;
    eventually("three acknowledgments sent", Duration::from_secs(60), || async {
        events(&gateway.bus, "notify_sent").await.len() >= 3
    })
    .await;
    let outbox = || async {
        guichet_harness::streams::read_all(gateway.bus.jetstream(), "OUTBOX", Duration::from_secs(20))
            .await
            .expect("OUTBOX read")
    };
    let before = outbox().await;
    let to = |m: &guichet_harness::streams::StoredMessage| {
        serde_json::from_slice::<guichet_notify::outbox::Notification>(&m.payload).expect("a notification")
    };
    let theirs: Vec<_> = before.iter().map(to).filter(|n| n.to == forgotten).collect();
    assert_eq!(theirs.len(), 2, "both of their acknowledgments are on OUTBOX");
    let usager_id = theirs[0].usager_id.clone();
    assert!(theirs.iter().all(|n| n.usager_id == usager_id), "one usager");

    let report = guichet_router::admin::forget(&gateway.bus, guichet_harness::pseudonymizer(), &usager_id)
        .await
        .expect("forgotten");
    assert_eq!(report.outbox_messages_purged, 2);

    let after = outbox().await;
    assert!(
        after
            .iter()
            .all(|m| !String::from_utf8_lossy(&m.payload).contains(forgotten) && !m.subject.contains(&usager_id)),
        "nothing of the forgotten usager on OUTBOX"
    );
    assert_eq!(
        after.iter().map(to).filter(|n| n.to == kept).count(),
        1,
        "the other usager's notification stays"
    );
    gateway.shutdown().await;
}
