//! The accusé de réception closes the loop through `guichet::run`: an
//! e-mail APPENDed to the watched Dovecot mailbox is acknowledged by SMTP
//! (a real smtp-sink), and the usager's reply to that acknowledgment,
//! APPENDed to the same mailbox, joins the same request.

use std::time::Duration;

use guichet::{Config, Listeners, ServiceName};
use guichet_core::proto::v1::Routed;
use guichet_e2e::Gateway;
use guichet_harness::{
    Dovecot, Nats, SmtpSink,
    dovecot::{IMAP_PASSWORD, IMAP_USER},
    streams,
};
use prost::Message;

const RULES: &str = r#"
manual_service = "accueil"

[[services]]
name = "accueil"
deadline = "5 business days"
designation = "Accueil général de la mairie"
postal_address = "1 place de la Mairie, 25000 Besançon"
email = "accueil@ville.example"
phone = "+33 3 81 00 00 00"
"#;

async fn routed(nats: &Nats) -> Vec<Routed> {
    streams::read_all(&nats.jetstream().await, "ROUTED", Duration::from_secs(20))
        .await
        .expect("ROUTED read")
        .into_iter()
        .map(|m| Routed::decode(m.payload.as_slice()).expect("a Routed"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_usagers_reply_to_the_acknowledgment_joins_the_same_request() {
    let nats = Nats::start().await;
    let dovecot = Dovecot::start().await;
    let sink = SmtpSink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("imap-password");
    std::fs::write(&secret, format!("{IMAP_PASSWORD}\n")).unwrap();
    let toml = format!(
        "[nats]\nurl = \"{}\"\n{}{}\n[notify]\nfrom = \"Mairie <mairie@ville.example>\"\nbackoff = [\"500ms\"]\n\
         [notify.smtp]\nhost = \"{}\"\nport = {}\nsecurity = \"plain\"\n",
        nats.url(),
        dovecot.mailbox_toml(&secret),
        guichet_harness::privacy_toml(),
        sink.host(),
        sink.port(),
    );
    let path = dir.path().join("guichet.toml");
    std::fs::write(&path, toml).unwrap();
    let config = Config::load(&path).unwrap();
    nats.bus()
        .await
        .stores()
        .config
        .put("rules", RULES.as_bytes().to_vec().into())
        .await
        .unwrap();
    let gateway = Gateway::start(
        config,
        vec![ServiceName::Mail, ServiceName::Router, ServiceName::Notify],
        Listeners::default(),
    )
    .await;

    let first = b"From: Jeanne Martin <jeanne.martin@example.fr>\r\nTo: contact@ville.example\r\n\
Subject: Demande d'acte de naissance\r\nMessage-ID: <e2e-notify-1@example.fr>\r\n\
Content-Type: text/plain; charset=utf-8\r\n\r\nBonjour, je souhaite une copie.\r\n";
    dovecot.append(IMAP_USER, "INBOX", first).await;

    let mut ack = None;
    for _ in 0..600 {
        if let Some(m) = sink.messages().into_iter().next() {
            ack = Some(m);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ack = ack.expect("an acknowledgment within 60 s");
    assert_eq!(ack.rcpt, ["jeanne.martin@example.fr"]);
    assert_eq!(ack.header("In-Reply-To").as_deref(), Some("<e2e-notify-1@example.fr>"));
    let subject = ack.header("Subject").expect("a subject");
    let ack_id = ack.header("Message-ID").expect("our Message-ID");
    let opened = routed(&nats).await;
    assert_eq!(opened.len(), 1);
    let reference = opened[0].reference.clone();
    assert!(subject.contains(&format!("[{reference}]")), "{subject}");

    // The usager answers the acknowledgment from their mail client.
    let reply = format!(
        "From: Jeanne Martin <jeanne.martin@example.fr>\r\nTo: accueil@ville.example\r\n\
Subject: Re: {subject}\r\nMessage-ID: <e2e-notify-2@example.fr>\r\nIn-Reply-To: {ack_id}\r\n\
References: <e2e-notify-1@example.fr> {ack_id}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
Voici la piece demandee.\r\n"
    );
    dovecot.append(IMAP_USER, "INBOX", reply.as_bytes()).await;
    let mut all = Vec::new();
    for _ in 0..600 {
        all = routed(&nats).await;
        if all.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(all.len(), 2, "the reply was routed");
    assert_eq!(all[1].reference, reference, "the reply joins the same request");
    assert_eq!(all[1].follow_up_of, reference);

    // A follow-up gets no second acknowledgment: once notify has handled
    // it (its consumer's ack floor passed it), the sink still has one.
    let js = nats.jetstream().await;
    let mut handled = false;
    for _ in 0..300 {
        let mut consumer = js
            .get_stream("ROUTED")
            .await
            .unwrap()
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>("notify")
            .await
            .unwrap();
        if consumer.info().await.unwrap().ack_floor.stream_sequence >= 2 {
            handled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(handled, "notify handled the follow-up");
    assert_eq!(sink.messages().len(), 1);
    gateway.stop().await;
}
