//! The mail service through `guichet::run`, configured from a TOML file
//! as an operator writes it: a message delivered to a real Dovecot ends up
//! once in INTAKE and is moved out of the inbox.

use guichet_e2e::Gateway;
use std::time::Duration;

use guichet::{Config, Listeners, ServiceName};
use guichet_core::{
    bus::subjects,
    proto::v1::{Contact, contact::Details},
};
use guichet_harness::{
    Dovecot, Nats,
    dovecot::{IMAP_PASSWORD, IMAP_USER},
};
use prost::Message;

const MESSAGE: &[u8] = b"From: Jeanne Martin <jeanne.martin@example.fr>\r\nTo: contact@ville.example\r\n\
Subject: =?ISO-8859-1?Q?Demande_d'acte_de_naissance_=E0_Besan=E7on?=\r\nMessage-ID: <e2e-1@example.fr>\r\n\
Content-Type: text/plain; charset=utf-8\r\n\r\nBonjour, je souhaite une copie int\xc3\xa9grale.\r\n";

#[tokio::test]
async fn an_email_in_a_configured_mailbox_becomes_one_contact_through_guichet_run() {
    let nats = Nats::start().await;
    let dovecot = Dovecot::start().await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("imap-password");
    std::fs::write(&secret, format!("{IMAP_PASSWORD}\n")).unwrap();
    let toml = format!(
        "[nats]\nurl = \"{}\"\n{}{}",
        nats.url(),
        dovecot.mailbox_toml(&secret),
        guichet_harness::privacy_toml()
    );
    let path = dir.path().join("guichet.toml");
    std::fs::write(&path, toml).unwrap();
    let config = Config::load(&path).unwrap();

    let gateway = Gateway::start(config, vec![ServiceName::Mail], Listeners::default()).await;

    dovecot.append(IMAP_USER, "INBOX", MESSAGE).await;
    let js = nats.jetstream().await;
    let mut found = None;
    for _ in 0..300 {
        if let Ok(mut stream) = js.get_stream("INTAKE").await
            && stream.info().await.unwrap().state.messages >= 1
        {
            found = Some(stream.get_raw_message(1).await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let message = found.expect("a contact in INTAKE within 30 s");
    assert_eq!(subjects::intake_channel(message.subject.as_str()), Some("email"));
    let contact = Contact::decode(message.payload).unwrap();
    assert_eq!(contact.subject, "Demande d'acte de naissance à Besançon");
    assert_eq!(contact.source.unwrap().name, "contact@");
    assert_eq!(contact.claims.unwrap().email, "jeanne.martin@example.fr");
    let Some(Details::Email(email)) = contact.details else {
        panic!("not an e-mail")
    };
    assert_eq!(email.message_id, "e2e-1@example.fr");
    let uidvalidity = dovecot.uid_validity(IMAP_USER, "INBOX").await;
    assert_eq!(contact.idempotency_key, format!("mail:contact:{uidvalidity}:1"));

    for _ in 0..100 {
        if dovecot.count(IMAP_USER, "Traites").await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(dovecot.count(IMAP_USER, "INBOX").await, 0);
    assert_eq!(dovecot.count(IMAP_USER, "Traites").await, 1);
    assert_eq!(
        js.get_stream("INTAKE")
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .state
            .messages,
        1
    );

    gateway.stop().await;
}

#[tokio::test]
async fn a_mailbox_config_error_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("guichet.toml");
    std::fs::write(
        &path,
        "[[mail.mailboxes]]\nname = \"contact\"\nhost = \"imap.example.org\"\nuser = \"contact\"\ntls = \"plain\"\npassword = \"x\"\n",
    )
    .unwrap();
    let err = Config::load(&path).unwrap_err().to_string();
    assert!(err.contains("mail.mailboxes[0].tls"), "{err}");
    std::fs::write(&path, "[mail]\n").unwrap();
    Config::load(&path).expect("an empty [mail] is valid");
}
