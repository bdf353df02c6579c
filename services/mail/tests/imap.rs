//! The mail service against a real Dovecot and a real nats-server: what
//! ends up in the INTAKE stream and on the IMAP server, whatever happens.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use guichet_harness::{Dovecot, Nats, dovecot::IMAP_USER};
use guichet_mail::Hooks;
use support::*;

#[tokio::test]
async fn a_burst_in_many_charsets_arriving_while_idle_is_ingested_exactly_once_then_moved() {
    let nats = Nats::start().await;
    let dovecot = Dovecot::start().await;
    let gateway = Gateway::start(&nats, vec![contact_mailbox(&dovecot)], "gw-1", Hooks::default()).await;
    wait_watching(&gateway.bus, "contact").await;
    assert!(gateway.health.check().0, "ready once watching");
    // The watcher is in IDLE now; everything below arrives while it waits.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut raws: Vec<Vec<u8>> = corpus().into_iter().map(|(_, raw)| raw).collect();
    raws.extend((0..20).map(simple));
    let refs: Vec<&[u8]> = raws.iter().map(Vec::as_slice).collect();
    dovecot.append_all(IMAP_USER, "INBOX", &refs).await;

    let messages = wait_intake(&nats, raws.len(), Duration::from_secs(60)).await;
    wait_until("INBOX emptied", Duration::from_secs(10), || async {
        dovecot.count(IMAP_USER, "INBOX").await == 0
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
