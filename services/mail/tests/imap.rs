//! The mail service against a real Dovecot and a real nats-server: what
//! ends up in the INTAKE stream and on the IMAP server, whatever happens.

#![allow(clippy::unwrap_used)]

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use guichet_core::{proto::v1::FlagKind, secret::Secret};
use guichet_harness::{Dovecot, Nats, dovecot::IMAP_USER};
use guichet_mail::{After, Hooks, TlsMode};
use support::*;

#[tokio::test]
async fn a_burst_in_many_charsets_arriving_while_idle_is_ingested_exactly_once_then_moved() {
    let nats = Nats::start().await;
    let dovecot = Dovecot::start().await;
    let idled = Arc::new(AtomicU32::new(0));
    let hooks = Hooks {
        idling: Some(Arc::new({
            let idled = idled.clone();
            move |_mailbox| {
                idled.fetch_add(1, Ordering::SeqCst);
            }
        })),
        ..Hooks::default()
    };
    let gateway = Gateway::start(&nats, vec![contact_mailbox(&dovecot)], "gw-1", hooks).await;
    wait_watching(&gateway.bus, "contact").await;
    assert!(gateway.health.check().0, "ready once watching");
    // The watcher is in IDLE now; everything below arrives while it waits.
    wait_until("the watcher is in IDLE", Duration::from_secs(10), || async {
        idled.load(Ordering::SeqCst) > 0
    })
    .await;
    let idle_entries = idled.load(Ordering::SeqCst);
    let mut raws: Vec<Vec<u8>> = corpus().into_iter().map(|(_, raw)| raw).collect();
    raws.extend((0..20).map(simple));
    let refs: Vec<&[u8]> = raws.iter().map(Vec::as_slice).collect();
    dovecot.append_all(IMAP_USER, "INBOX", &refs).await;

    let messages = wait_intake(&nats, raws.len(), Duration::from_secs(60)).await;
    wait_until("INBOX emptied", Duration::from_secs(10), || async {
        dovecot.count(IMAP_USER, "INBOX").await == 0
    })
    .await;
    // Woken by the server, it ingested them and went back to IDLE.
    wait_until("the watcher is back in IDLE", Duration::from_secs(10), || async {
        idled.load(Ordering::SeqCst) > idle_entries
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let messages_after = intake(&nats).await;
    assert_eq!(
        messages_after.len(),
        raws.len(),
        "nothing more than one contact per message"
    );
    let ids = assert_unique(&messages);
    let uidvalidity = dovecot.uid_validity(IMAP_USER, "INBOX").await;
    let mut expected: Vec<String> = (1..=raws.len())
        .map(|uid| format!("mail:contact:{uidvalidity}:{uid}"))
        .collect();
    expected.sort();
    assert_eq!(ids, expected);
    assert_eq!(dovecot.count(IMAP_USER, MOVED).await, raws.len());

    for m in &messages {
        let c = &m.contact;
        let email = m.email();
        assert_eq!(c.idempotency_key, m.msg_id);
        assert_eq!(c.source.as_ref().unwrap().name, "contact");
        assert_eq!(c.source.as_ref().unwrap().adapter_instance, "gw-1");
        assert!(!c.reference.is_empty() && !c.id.is_empty());
        // The raw original is in the object store, byte for byte.
        let raw_ref = email.raw_message.as_ref().expect("raw message kept");
        let stored = gateway.bus.get_attachment(&raw_ref.key).await.unwrap();
        assert_eq!(stored, raws[email.uid as usize - 1], "raw of UID {}", email.uid);
    }
    let by_mid = |mid: &str| messages.iter().find(|m| m.email().message_id == mid).unwrap();
    let latin1 = by_mid("a1b2c3@mail.example.org");
    assert_eq!(latin1.contact.subject, "Lampadaire défectueux rue des Écoles");
    assert_eq!(latin1.contact.claims.as_ref().unwrap().name, "François Lefèvre");
    let cp1252 = by_mid("CAF=x123@mail.example.net");
    assert!(cp1252.contact.body.contains("45 €") && cp1252.contact.body.contains("l’œuvre"));
    let reply = by_mid("CAJ-reply-1@mail.gmail.com");
    assert_eq!(reply.email().in_reply_to, "ack-2025-7K3F-9QXM@ville.example");
    assert!(reply.email().quoted_text.contains("2025-7K3F-9QXM") && !reply.contact.body.contains('>'));
    let with_files = by_mid("pc-2025-0042@example.fr");
    let names: Vec<&str> = with_files
        .contact
        .attachments
        .iter()
        .map(|a| a.file_name.as_str())
        .collect();
    assert_eq!(names, ["cerfa_13406.pdf", "plan cadastral été.jpg"]);
    let pdf = gateway
        .bus
        .get_attachment(&with_files.contact.attachments[0].key)
        .await
        .unwrap();
    assert!(pdf.starts_with(b"%PDF-1.4"));
    gateway.stop().await;
}

#[tokio::test]
async fn killed_between_puback_and_move_then_restarted_each_message_is_in_the_stream_once() {
    let nats = Nats::start().await;
    let dovecot = Dovecot::start().await;
    let raws: Vec<Vec<u8>> = (0..5).map(simple).collect();
    let refs: Vec<&[u8]> = raws.iter().map(Vec::as_slice).collect();
    dovecot.append_all(IMAP_USER, "INBOX", &refs).await;

    // The third message's PubAck arrives, then the process "dies" before
    // the guard, the MOVE or the checkpoint.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let hooks = Hooks {
        after_puback: Some(Arc::new(move |_mailbox, uid| {
            let tx = tx.clone();
            Box::pin(async move {
                if uid == 3 {
                    let _ = tx.send(uid);
                    std::future::pending::<()>().await;
                }
            })
        })),
        ..Hooks::default()
    };
    let gateway = Gateway::start(&nats, vec![contact_mailbox(&dovecot)], "gw-1", hooks).await;
    tokio::time::timeout(Duration::from_secs(30), rx.recv()).await.unwrap();
    gateway.kill().await;
    assert_eq!(intake(&nats).await.len(), 3, "three PubAcks before the crash");
    let left = dovecot.messages(IMAP_USER, "INBOX").await;
    assert!(
        left.iter().any(|m| m.raw == raws[2]),
        "the third message, acknowledged but not yet moved, is still in INBOX"
    );
    assert_eq!(left.len() + dovecot.count(IMAP_USER, MOVED).await, 5);

    let gateway = Gateway::start(&nats, vec![contact_mailbox(&dovecot)], "gw-1", Hooks::default()).await;
    wait_until("INBOX emptied", Duration::from_secs(30), || async {
        dovecot.count(IMAP_USER, "INBOX").await == 0
    })
    .await;
    let messages = intake(&nats).await;
    assert_eq!(messages.len(), 5, "each message exactly once");
    assert_unique(&messages);
    assert_eq!(dovecot.count(IMAP_USER, MOVED).await, 5);
    gateway.stop().await;
}

#[tokio::test]
async fn dovecot_restarted_or_killed_mid_run_is_reconnected_without_loss_or_duplicate() {
    let nats = Nats::start().await;
    let mut dovecot = Dovecot::start().await;
    let gateway = Gateway::start(&nats, vec![contact_mailbox(&dovecot)], "gw-1", Hooks::default()).await;
    wait_watching(&gateway.bus, "contact").await;
    for n in 0..3 {
        dovecot.append(IMAP_USER, "INBOX", &simple(n)).await;
    }
    wait_intake(&nats, 3, Duration::from_secs(20)).await;

    dovecot.restart().await;
    for n in 3..6 {
        dovecot.append(IMAP_USER, "INBOX", &simple(n)).await;
    }
    wait_intake(&nats, 6, Duration::from_secs(30)).await;

    dovecot.kill().await;
    dovecot.start_again().await;
    for n in 6..8 {
        dovecot.append(IMAP_USER, "INBOX", &simple(n)).await;
    }
    let messages = wait_intake(&nats, 8, Duration::from_secs(30)).await;
    wait_until("INBOX emptied", Duration::from_secs(10), || async {
        dovecot.count(IMAP_USER, "INBOX").await == 0
    })
    .await;
    assert_eq!(intake(&nats).await.len(), 8);
    assert_unique(&messages);
    gateway.stop().await;
}

#[tokio::test]
async fn while_nats_is_stopped_nothing_is_marked_handled_and_all_is_ingested_once_it_is_back() {
    let mut nats = Nats::start().await;
    let dovecot = Dovecot::start().await;
    let (failures, hooks) = counting_failures();
    let gateway = Gateway::start(&nats, vec![contact_mailbox(&dovecot)], "gw-1", hooks).await;
    wait_watching(&gateway.bus, "contact").await;
    for n in 0..2 {
        dovecot.append(IMAP_USER, "INBOX", &simple(n)).await;
    }
    wait_intake(&nats, 2, Duration::from_secs(20)).await;

    nats.stop().await;
    for n in 2..5 {
        dovecot.append(IMAP_USER, "INBOX", &simple(n)).await;
    }
    // Positive evidence first: the watcher tried to publish a new message
    // and failed, so it had every chance to mark it handled. (The store
    // write before the publish waits out its timeouts: about 25 s here.)
    let after_failures = failures.load(Ordering::SeqCst);
    wait_until(
        "a publish failed while NATS is away",
        Duration::from_secs(90),
        || async { failures.load(Ordering::SeqCst) > after_failures },
    )
    .await;
    assert_eq!(
        dovecot.count(IMAP_USER, "INBOX").await,
        3,
        "nothing moved while NATS is away"
    );
    assert_eq!(dovecot.count(IMAP_USER, MOVED).await, 2);
    let unseen = dovecot.messages(IMAP_USER, "INBOX").await;
    assert!(
        unseen.iter().all(|m| !m.flags.iter().any(|f| f.contains("Seen"))),
        "BODY.PEEK: nothing marked read"
    );

    nats.restart().await;
    wait_until("INBOX emptied", Duration::from_secs(45), || async {
        dovecot.count(IMAP_USER, "INBOX").await == 0
    })
    .await;
    let messages = intake(&nats).await;
    assert_eq!(messages.len(), 5);
    assert_unique(&messages);
    gateway.stop().await;
}

/// Hooks that count the failed publishes.
fn counting_failures() -> (Arc<AtomicU32>, Hooks) {
    let failures = Arc::new(AtomicU32::new(0));
    let counter = failures.clone();
    let hooks = Hooks {
        publish_failed: Some(Arc::new(move |_, _| {
            counter.fetch_add(1, Ordering::SeqCst);
        })),
        ..Hooks::default()
    };
    (failures, hooks)
}

/// The CI run of the fault suite found mail moved to the error folder
/// after three failed publishes while the connection was up: a slow or
/// electing JetStream fails every message for a while, and that made
/// citizens' e-mails "errors". Here INTAKE is gone (every publish fails
/// with the connection up) for more than three attempts: the message
/// waits in the inbox and is ingested once the stream is back.
#[tokio::test]
async fn a_stream_failing_every_publish_for_a_while_sends_nothing_to_the_error_folder() {
    let nats = Nats::start().await;
    let dovecot = Dovecot::start().await;
    let (failures, hooks) = counting_failures();
    let gateway = Gateway::start(&nats, vec![contact_mailbox(&dovecot)], "gw-1", hooks).await;
    wait_watching(&gateway.bus, "contact").await;
    let js = nats.jetstream().await;
    js.delete_stream("INTAKE").await.unwrap();

    dovecot.append(IMAP_USER, "INBOX", &simple(1)).await;
    wait_until(
        "five failed publishes or a message in the error folder",
        Duration::from_secs(60),
        || async { failures.load(Ordering::SeqCst) >= 5 || dovecot.count(IMAP_USER, "Guichet-erreurs").await > 0 },
    )
    .await;
    assert_eq!(
        dovecot.count(IMAP_USER, "Guichet-erreurs").await,
        0,
        "nothing in the error folder"
    );
    assert_eq!(
        dovecot.count(IMAP_USER, "INBOX").await,
        1,
        "the message waits in the inbox"
    );

    guichet_core::bus::ensure_topology(&js, &Default::default())
        .await
        .unwrap();
    wait_until("INBOX emptied", Duration::from_secs(45), || async {
        dovecot.count(IMAP_USER, "INBOX").await == 0
    })
    .await;
    assert_eq!(dovecot.count(IMAP_USER, MOVED).await, 1);
    assert_eq!(dovecot.count(IMAP_USER, "Guichet-erreurs").await, 0);
    assert_eq!(intake(&nats).await.len(), 1);
    gateway.stop().await;
}

#[tokio::test]
async fn a_uidvalidity_reset_neither_reingests_nor_skips() {
    let nats = Nats::start().await;
    let mut dovecot = Dovecot::start().await;
    let mut config = contact_mailbox(&dovecot);
    config.after = After::FlagSeen;
    // One of the first messages has no Message-ID: recognised by its bytes.
    let first: Vec<Vec<u8>> = vec![simple(0), simple(1), fixture("undeclared_8bit_no_message_id")];
    let refs: Vec<&[u8]> = first.iter().map(Vec::as_slice).collect();
    let gateway = Gateway::start(&nats, vec![config.clone()], "gw-1", Hooks::default()).await;
    wait_watching(&gateway.bus, "contact").await;
    dovecot.append_all(IMAP_USER, "INBOX", &refs).await;
    wait_intake(&nats, 3, Duration::from_secs(20)).await;
    wait_until("all flagged \\Seen", Duration::from_secs(10), || async {
        let m = dovecot.messages(IMAP_USER, "INBOX").await;
        m.len() == 3 && m.iter().all(|m| m.flags.iter().any(|f| f.contains("Seen")))
    })
    .await;
    gateway.stop().await;

    let before = dovecot.uid_validity(IMAP_USER, "INBOX").await;
    dovecot.reset_uidvalidity(IMAP_USER, "INBOX").await;
    let after = dovecot.uid_validity(IMAP_USER, "INBOX").await;
    assert_ne!(before, after);
    dovecot.append(IMAP_USER, "INBOX", &simple(2)).await;
    dovecot.append(IMAP_USER, "INBOX", &simple(3)).await;

    let gateway = Gateway::start(&nats, vec![config], "gw-1", Hooks::default()).await;
    let messages = wait_intake(&nats, 5, Duration::from_secs(30)).await;
    wait_until("checkpoint on the new UIDVALIDITY", Duration::from_secs(10), || async {
        let c = guichet_mail::state::load(&gateway.bus.stores().checkpoints, "contact")
            .await
            .unwrap()
            .unwrap();
        c.uidvalidity == after && c.recover_until.is_none() && c.last_uid == 5
    })
    .await;
    assert_eq!(
        intake(&nats).await.len(),
        5,
        "the three old messages were not ingested again"
    );
    assert_unique(&messages);
    let new: Vec<&Intake> = messages.iter().filter(|m| m.email().uid_validity == after).collect();
    let subjects: Vec<&str> = new.iter().map(|m| m.contact.subject.as_str()).collect();
    assert_eq!(subjects, ["Demande 2", "Demande 3"]);
    gateway.stop().await;
}

#[tokio::test]
async fn two_gateways_on_one_mailbox_watch_it_one_at_a_time_and_the_other_takes_over() {
    let nats = Nats::start().await;
    let dovecot = Dovecot::start().await;
    let a = Gateway::start(&nats, vec![contact_mailbox(&dovecot)], "gw-a", Hooks::default()).await;
    let b = Gateway::start(&nats, vec![contact_mailbox(&dovecot)], "gw-b", Hooks::default()).await;
    wait_watching(&a.bus, "contact").await;
    let raws: Vec<Vec<u8>> = (0..10).map(simple).collect();
    let refs: Vec<&[u8]> = raws.iter().map(Vec::as_slice).collect();
    dovecot.append_all(IMAP_USER, "INBOX", &refs).await;
    let messages = wait_intake(&nats, 10, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(intake(&nats).await.len(), 10);
    assert_unique(&messages);
    let instances: std::collections::BTreeSet<String> = messages
        .iter()
        .map(|m| m.contact.source.as_ref().unwrap().adapter_instance.clone())
        .collect();
    assert_eq!(instances.len(), 1, "one watcher at a time: {instances:?}");
    let holder = instances.into_iter().next().unwrap();
    // `/readyz` of the other one names the mailbox standing by.
    let standby = if holder == "gw-a" { &b } else { &a };
    wait_until("the standby names its mailbox", Duration::from_secs(10), || async {
        standby
            .health
            .notes()
            .iter()
            .any(|n| n.starts_with("mail.contact: standing by"))
    })
    .await;
    let active = if holder == "gw-a" { &a } else { &b };
    assert!(active.health.notes().is_empty(), "{:?}", active.health.notes());

    // The holder crashes (no release): the other takes over once its
    // lease expires (30 s).
    let survivor = if holder == "gw-a" {
        a.kill().await;
        b
    } else {
        b.kill().await;
        a
    };
    let raws: Vec<Vec<u8>> = (10..15).map(simple).collect();
    let refs: Vec<&[u8]> = raws.iter().map(Vec::as_slice).collect();
    dovecot.append_all(IMAP_USER, "INBOX", &refs).await;
    let messages = wait_intake(&nats, 15, Duration::from_secs(60)).await;
    assert_unique(&messages);
    for m in &messages[10..] {
        assert_ne!(m.contact.source.as_ref().unwrap().adapter_instance, holder);
    }
    survivor.stop().await;
}

#[tokio::test]
async fn auto_replies_bounces_and_list_mail_are_flagged_and_a_plain_request_is_not() {
    let nats = Nats::start().await;
    let dovecot = Dovecot::start().await;
    for name in [
        "auto_reply",
        "bounce_dsn",
        "list_mail",
        "out_of_office_subject",
        "plain_utf8",
    ] {
        dovecot.append(IMAP_USER, "INBOX", &fixture(name)).await;
    }
    let gateway = Gateway::start(&nats, vec![contact_mailbox(&dovecot)], "gw-1", Hooks::default()).await;
    let messages = wait_intake(&nats, 5, Duration::from_secs(30)).await;
    let by_mid = |mid: &str| messages.iter().find(|m| m.email().message_id == mid).unwrap();
    let auto = by_mid("auto-1@example.org");
    assert!(auto.has_flag(FlagKind::AutoReply));
    assert_eq!(auto.email().auto_submitted, "auto-replied");
    let bounce = by_mid("20250313021415.ABC@mx.ville.example");
    assert!(bounce.has_flag(FlagKind::Bounce));
    assert!(by_mid("news-2025-03@association.example").has_flag(FlagKind::Bulk));
    assert!(by_mid("ooo-2@example.com").has_flag(FlagKind::AutoReply));
    assert!(by_mid("20250303091500.1234@example.fr").contact.flags.is_empty());
    gateway.stop().await;
}

#[tokio::test]
async fn malformed_and_oversize_messages_become_flagged_contacts_and_never_block_the_mailbox() {
    let nats = Nats::start().await;
    let dovecot = Dovecot::start().await;
    let malformed = fixture("malformed");
    let mut oversize =
        b"From: a@example.org\r\nSubject: Dossier complet\r\nMessage-ID: <big@example.org>\r\n\r\n".to_vec();
    oversize.extend(std::iter::repeat_n(b"0123456789abcdef\r\n".as_slice(), 200).flatten());
    let garbage: Vec<u8> = (1..=255u8)
        .cycle()
        .take(1500)
        .filter(|b| *b != b'\r' && *b != b'\n')
        .collect();
    for raw in [&malformed, &oversize, &garbage, &simple(1)] {
        dovecot.append(IMAP_USER, "INBOX", raw).await;
    }
    let mut config = contact_mailbox(&dovecot);
    config.max_message_size = 2048;
    let gateway = Gateway::start(&nats, vec![config], "gw-1", Hooks::default()).await;
    let messages = wait_intake(&nats, 4, Duration::from_secs(30)).await;
    wait_until("INBOX emptied", Duration::from_secs(10), || async {
        dovecot.count(IMAP_USER, "INBOX").await == 0
    })
    .await;
    let by_uid = |uid: u32| messages.iter().find(|m| m.email().uid == uid).unwrap();
    let m = by_uid(1);
    assert!(
        m.has_flag(FlagKind::MalformedHeader) && m.has_flag(FlagKind::ParseError),
        "{:?}",
        m.contact.flags
    );
    assert_eq!(m.contact.subject.chars().count(), 998);
    let big = by_uid(2);
    assert!(big.has_flag(FlagKind::Truncated));
    assert_eq!(big.contact.subject, "Dossier complet");
    let raw = gateway
        .bus
        .get_attachment(&big.email().raw_message.as_ref().unwrap().key)
        .await
        .unwrap();
    // Issue 12: the size is read before the fetch; only the first
    // `max_message_size` bytes are downloaded and kept, and the text as far
    // as it goes is the body.
    assert!(
        raw == oversize[..2048],
        "the raw original is kept up to the limit ({} bytes)",
        raw.len()
    );
    assert!(
        big.contact.body.starts_with("0123456789abcdef"),
        "{:?}",
        big.contact.body
    );
    let reason = &big
        .contact
        .flags
        .iter()
        .find(|f| f.kind == FlagKind::Truncated as i32)
        .unwrap()
        .reason;
    assert!(
        reason.contains(&format!("message of {} bytes", oversize.len())),
        "{reason}"
    );
    let g = by_uid(3);
    assert!(!g.contact.flags.is_empty(), "garbage is flagged");
    let raw = gateway
        .bus
        .get_attachment(&g.email().raw_message.as_ref().unwrap().key)
        .await
        .unwrap();
    assert!(
        raw == garbage,
        "garbage under the limit is kept whole ({} bytes)",
        raw.len()
    );
    assert_eq!(by_uid(4).contact.subject, "Demande 1");
    assert!(by_uid(4).contact.flags.is_empty());
    gateway.stop().await;
}

#[tokio::test]
async fn implicit_tls_and_starttls_work_with_the_ca_file_and_an_untrusted_certificate_is_refused() {
    let nats = Nats::start().await;
    let users = [("implicit", PASSWORD), ("starttls", PASSWORD), ("untrusted", PASSWORD)];
    let dovecot = Dovecot::start_with(true, &users).await;
    let mut implicit = mailbox(&dovecot, "implicit", "implicit");
    implicit.tls = TlsMode::Implicit;
    implicit.port = Some(dovecot.tls_port());
    implicit.ca_file = Some(dovecot.ca_file());
    let mut starttls = mailbox(&dovecot, "starttls", "starttls");
    starttls.tls = TlsMode::Starttls;
    starttls.ca_file = Some(dovecot.ca_file());
    let mut untrusted = mailbox(&dovecot, "untrusted", "untrusted");
    untrusted.tls = TlsMode::Implicit;
    untrusted.port = Some(dovecot.tls_port());
    for user in ["implicit", "starttls", "untrusted"] {
        dovecot.append(user, "INBOX", &simple(1)).await;
    }
    let gateway = Gateway::start(&nats, vec![implicit, starttls, untrusted], "gw-1", Hooks::default()).await;
    let messages = wait_intake(&nats, 2, Duration::from_secs(30)).await;
    let mut sources: Vec<&str> = messages
        .iter()
        .map(|m| m.contact.source.as_ref().unwrap().name.as_str())
        .collect();
    sources.sort();
    assert_eq!(sources, ["implicit", "starttls"]);
    // Positive evidence that the watcher met the untrusted certificate and
    // refused it: the server saw the client's "unknown CA" alert, twice
    // (the first attempt and a reconnection), and no login.
    wait_until(
        "the untrusted certificate refused twice",
        Duration::from_secs(30),
        || async { dovecot.log().matches("alert unknown ca").count() >= 2 },
    )
    .await;
    // (The harness's own APPEND logs in over plain TCP, "secured".)
    let tls_login = |l: &str| l.contains("Login: user=<untrusted>") && l.contains(", TLS,");
    assert!(!dovecot.log().lines().any(tls_login), "no login as untrusted over TLS");
    assert_eq!(intake(&nats).await.len(), 2, "the untrusted server got nothing through");
    assert_eq!(dovecot.count("untrusted", "INBOX").await, 1);
    gateway.stop().await;
}

#[tokio::test]
async fn a_failing_mailbox_never_stops_the_others() {
    let nats = Nats::start().await;
    let dovecot = Dovecot::start().await;
    let mut unreachable = contact_mailbox(&dovecot);
    unreachable.name = "unreachable".into();
    // An address of this test's own: nothing can answer there.
    let dead_end = guichet_harness::loopback::free_addr();
    unreachable.host = dead_end.ip().to_string();
    unreachable.port = Some(dead_end.port());
    let mut wrong_password = contact_mailbox(&dovecot);
    wrong_password.name = "wrong-password".into();
    wrong_password.password = Some(Secret::Inline("not-the-password".into()));
    dovecot.append(IMAP_USER, "INBOX", &simple(1)).await;
    let gateway = Gateway::start(
        &nats,
        vec![unreachable, wrong_password, contact_mailbox(&dovecot)],
        "gw-1",
        Hooks::default(),
    )
    .await;
    let messages = wait_intake(&nats, 1, Duration::from_secs(30)).await;
    assert_eq!(messages[0].contact.source.as_ref().unwrap().name, "contact");
    assert!(gateway.health.check().0);
    gateway.stop().await;
}

#[tokio::test]
async fn without_mailboxes_the_service_is_ready_and_stops_cleanly() {
    let nats = Nats::start().await;
    let gateway = Gateway::start(&nats, Vec::new(), "gw-1", Hooks::default()).await;
    wait_until("ready", Duration::from_secs(5), || async { gateway.health.check().0 }).await;
    gateway.stop().await;
}

/// Issue 11: a From with two `@` used to be claimed as the usager's
/// e-mail. The adapter applies the shared rule: flagged, not claimed.
#[tokio::test]
async fn a_sender_address_that_is_not_a_mailbox_is_flagged_and_not_claimed() {
    let nats = Nats::start().await;
    let dovecot = Dovecot::start().await;
    let message = |n: usize, from: &str| {
        format!(
            "From: Jeanne <{from}>\r\nTo: contact@ville.example\r\nSubject: Demande {n}\r\n\
             Message-ID: <two-at-{n}@example.org>\r\nDate: Mon, 3 Mar 2025 10:00:00 +0100\r\n\r\nBonjour\r\n"
        )
    };
    dovecot
        .append(IMAP_USER, "INBOX", message(1, "jeanne@martin@example.fr").as_bytes())
        .await;
    dovecot
        .append(IMAP_USER, "INBOX", message(2, "Jeanne@Mairie-Évry.fr").as_bytes())
        .await;
    let gateway = Gateway::start(&nats, vec![contact_mailbox(&dovecot)], "gw-1", Hooks::default()).await;
    let messages = wait_intake(&nats, 2, Duration::from_secs(30)).await;
    let by_mid = |mid: &str| messages.iter().find(|m| m.email().message_id == mid).unwrap();
    let bad = by_mid("two-at-1@example.org");
    assert!(
        bad.contact
            .flags
            .iter()
            .any(|f| f.kind == FlagKind::MalformedHeader as i32 && f.reason.contains("more than one @")),
        "{:?}",
        bad.contact.flags
    );
    let claims = bad.contact.claims.as_ref().unwrap();
    assert_eq!(claims.email, "", "an address that is not one is not claimed");
    assert!(
        bad.contact.flags.iter().all(|f| !f.reason.contains("jeanne")),
        "{:?}",
        bad.contact.flags
    );
    let good = by_mid("two-at-2@example.org");
    assert!(!good.has_flag(FlagKind::MalformedHeader), "{:?}", good.contact.flags);
    assert_eq!(good.contact.claims.as_ref().unwrap().email, "Jeanne@Mairie-Évry.fr");
    gateway.stop().await;
}

#[tokio::test]
async fn utf8_text_with_a_stray_byte_or_a_nul_keeps_its_accents_and_is_flagged() {
    let nats = Nats::start().await;
    let dovecot = Dovecot::start().await;
    // A NUL in the text: Dovecot stores and hands it back as 0x80, which
    // is not UTF-8 either. Before the fix both messages were re-read
    // whole as Windows-1252 ("ProblÃ¨me d'Ã©clairage").
    let mut nul = b"From: claire.martin@example.fr\r\nTo: contact@mairie.example\r\nSubject: Eclairage\r\n\
                    Message-ID: <nul@example.fr>\r\nContent-Type: text/plain; charset=utf-8\r\n\
                    Content-Transfer-Encoding: 8bit\r\n\r\n"
        .to_vec();
    nul.extend_from_slice("Problème d'éclairage à l'école\0 depuis lundi.\r\n".as_bytes());
    for raw in [&nul, &fixture("utf8_stray_byte")] {
        dovecot.append(IMAP_USER, "INBOX", raw).await;
    }
    let gateway = Gateway::start(&nats, vec![contact_mailbox(&dovecot)], "gw-1", Hooks::default()).await;
    let messages = wait_intake(&nats, 2, Duration::from_secs(30)).await;
    for m in &messages {
        let body = &m.contact.body;
        assert!(body.contains("Problème d'éclairage à l'école"), "{body:?}");
        assert!(!body.contains('Ã'), "{body:?}");
        assert!(
            body.contains('\u{FFFD}'),
            "the bad byte is shown where it was: {body:?}"
        );
        assert!(m.has_flag(FlagKind::MalformedText), "{:?}", m.contact.flags);
    }
    gateway.stop().await;
}

#[tokio::test]
async fn a_panicking_watcher_is_restarted_alone_and_the_other_mailboxes_go_on() {
    let nats = Nats::start().await;
    let dovecot = Dovecot::start().await;
    let mut urbanisme = contact_mailbox(&dovecot);
    urbanisme.name = "urbanisme".into();
    urbanisme.folder = "Urbanisme".into();
    let inbox: Vec<Vec<u8>> = (0..4).map(simple).collect();
    let other: Vec<Vec<u8>> = (10..13).map(simple).collect();
    dovecot
        .append_all(IMAP_USER, "INBOX", &inbox.iter().map(Vec::as_slice).collect::<Vec<_>>())
        .await;
    dovecot
        .append_all(
            IMAP_USER,
            "Urbanisme",
            &other.iter().map(Vec::as_slice).collect::<Vec<_>>(),
        )
        .await;
    // The `contact` watcher panics once, right after its second PubAck
    // (before the move): it used to take the whole mail service down.
    let panicked = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = panicked.clone();
    let hooks = Hooks {
        after_puback: Some(Arc::new(move |mailbox, uid| {
            let flag = flag.clone();
            Box::pin(async move {
                if mailbox == "contact" && uid == 2 && !flag.swap(true, Ordering::SeqCst) {
                    panic!("a bug in one mailbox's watcher");
                }
            })
        })),
        ..Hooks::default()
    };
    let gateway = Gateway::start(&nats, vec![contact_mailbox(&dovecot), urbanisme], "gw-1", hooks).await;
    wait_until("both folders emptied", Duration::from_secs(40), || async {
        dovecot.count(IMAP_USER, "INBOX").await == 0 && dovecot.count(IMAP_USER, "Urbanisme").await == 0
    })
    .await;
    assert!(panicked.load(Ordering::SeqCst), "the watcher did panic");
    let messages = intake(&nats).await;
    assert_eq!(
        messages.len(),
        7,
        "every message once, the one stored before the panic included"
    );
    assert_unique(&messages);
    // Still running, and stops cleanly (it used to have returned an error).
    gateway.stop().await;
}

/// A loopback proxy to `upstream` that drops the `[UIDNEXT n]` lines of
/// the server's answers: Dovecot always sends UIDNEXT, which RFC 3501
/// makes optional in a SELECT's answer. Returns the proxy's port.
async fn without_uidnext(upstream: u16) -> u16 {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
                continue;
            };
            let (mut client_read, mut client_write) = client.into_split();
            let (server_read, mut server_write) = server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
            });
            tokio::spawn(async move {
                let mut lines = BufReader::new(server_read);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    match lines.read_until(b'\n', &mut line).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    if line.windows(9).any(|w| w == b"[UIDNEXT ") {
                        continue;
                    }
                    if client_write.write_all(&line).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// Issue 12: a SELECT answer without UIDNEXT used to be read as "the end
/// of UID space", so a first `flag_seen` start put its checkpoint there
/// and skipped every later message. Through a proxy that removes UIDNEXT
/// from a real Dovecot's answers, later messages are ingested.
#[tokio::test]
async fn a_server_that_gives_no_uidnext_skips_no_later_message() {
    let nats = Nats::start().await;
    let dovecot = Dovecot::start().await;
    dovecot.append(IMAP_USER, "INBOX", &simple(1)).await;
    let mut config = contact_mailbox(&dovecot);
    config.port = Some(without_uidnext(dovecot.port()).await);
    config.after = After::FlagSeen;
    let gateway = Gateway::start(&nats, vec![config], "gw-1", Hooks::default()).await;
    wait_intake(&nats, 1, Duration::from_secs(30)).await;
    for n in 2..4 {
        dovecot.append(IMAP_USER, "INBOX", &simple(n)).await;
    }
    let messages = wait_intake(&nats, 3, Duration::from_secs(30)).await;
    assert_unique(&messages);
    gateway.stop().await;
}
