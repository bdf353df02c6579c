//! The gateway killed (SIGKILL) while notify sends a burst of 500
//! acknowledgments to a real SMTP server (smtp-sink): every one is
//! delivered, and the duplicates are counted and stay within the
//! documented window (messages between the server's `250` and the ack:
//! at most `notify.concurrency` at the kill), each with the original's
//! Message-ID.

use std::{collections::HashMap, time::Duration};

use guichet_core::proto::v1::{Channel, Contact, Source, WebDetails, contact::Details};
use guichet_faults::{
    binary,
    gateway::{Gateway, GatewayConfig, SingleBroker, burst_contact},
};
use guichet_harness::SmtpSink;

const BURST: usize = 500;
const CONCURRENCY: usize = 16;

const RULES: &str = r#"
manual_service = "accueil"

[[services]]
name = "accueil"
deadline = "5 business days"
designation = "Accueil général de la mairie"
postal_address = "1 place de la Mairie, 00000 Ville"
email = "accueil@ville.example"
phone = "+33 1 00 00 00 00"
"#;

fn contact(i: usize) -> Contact {
    let source = Source {
        name: "formulaire".into(),
        ..Default::default()
    };
    let mut contact = burst_contact(i, "burst", Channel::Web, source, "Demande en ligne");
    contact.details = Some(Details::Web(WebDetails {
        form_id: "formulaire".into(),
        submission_id: contact.id.clone(),
        ..Default::default()
    }));
    contact
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_killed_during_a_burst_of_500_delivers_every_acknowledgment() {
    let dir = tempfile::tempdir().unwrap();
    let broker = SingleBroker::start(dir.path(), RULES)
        .await
        .expect("nats-server and bus");
    let bus = &broker.bus;
    let sink = SmtpSink::start().await;

    let config = GatewayConfig {
        nats: broker.access(),
        services: "router,notify",
        extra: format!(
            "\n[notify]\nfrom = \"Mairie <mairie@ville.example>\"\nmax_per_usager = 5\nbackoff = [\"500ms\"]\n\
             ack_wait = \"5s\"\nconcurrency = {CONCURRENCY}\n[notify.smtp]\nhost = \"{}\"\nport = {}\n\
             security = \"plain\"\ntimeout = \"10s\"\n",
            sink.host(),
            sink.port()
        ),
    };
    let binary = binary::guichet().expect("the guichet binary");
    let gateway_dir = dir.path().join("gateway");
    std::fs::create_dir_all(&gateway_dir).unwrap();
    let mut gateway = Gateway::start(binary, &gateway_dir, &config)
        .await
        .expect("guichet starts");

    for i in 0..BURST {
        bus.publish_contact(&contact(i)).await.expect("contact stored");
    }
    // Kill it in the middle of the sending.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while sink.messages().len() < BURST / 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "sending never got going: {}",
            gateway.log_tail()
        );
        gateway.check_alive().unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gateway.kill().await;
    let at_kill = sink.messages().len();
    assert!(at_kill < BURST, "killed before the end of the burst ({at_kill})");
    gateway.restart().unwrap();
    gateway.wait_ready(Duration::from_secs(60)).await.unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    let by_rcpt = loop {
        let mut by_rcpt: HashMap<String, Vec<String>> = HashMap::new();
        for m in sink.messages() {
            let id = m.header("Message-ID").unwrap_or_default();
            for r in &m.rcpt {
                by_rcpt.entry(r.clone()).or_default().push(id.clone());
            }
        }
        if by_rcpt.len() == BURST {
            break by_rcpt;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {BURST} usagers acknowledged: {}",
            by_rcpt.len(),
            gateway.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    gateway.stop().await.unwrap();
    let duplicates: usize = by_rcpt.values().map(|ids| ids.len() - 1).sum();
    eprintln!("{BURST} acknowledgments delivered; {at_kill} before the kill; {duplicates} sent twice");
    assert!(
        duplicates <= CONCURRENCY,
        "{duplicates} duplicates: more than the {CONCURRENCY} messages that can be between 250 and the ack"
    );
    for ids in by_rcpt.values() {
        assert!(
            ids.iter().all(|id| id == &ids[0]),
            "a copy keeps the Message-ID: {ids:?}"
        );
    }
}
