//! Shared fixtures: a real nats-server, a router and notify started
//! through their `run`, a real SMTP server (smtp-sink), contacts, and
//! reading back what the server received and what the streams hold.
#![allow(dead_code)]

use std::time::Duration;

use chrono::Utc;
use guichet_core::{
    Bus, ServiceContext,
    admin::Health,
    ids,
    proto::{
        self,
        v1::{Channel, Contact, EmailDetails, Flag, FlagKind, IdentityClaims, Source, WebDetails, contact::Details},
    },
};
use guichet_harness::{Nats, SmtpSink, smtp_sink::SinkMessage, streams};
use guichet_notify::{NotifyConfig, config::SmtpSecurity};
use guichet_router::RouterConfig;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The rules of the tests: two services with their R112-5 details.
pub const RULES: &str = r#"
manual_service = "accueil"

[[services]]
name = "accueil"
deadline = "5 business days"
designation = "Accueil général de la mairie"
postal_address = "1 place de la Mairie, 67000 Strasbourg"
email = "accueil@ville.example"
phone = "+33 3 88 00 00 01"

[[services]]
name = "urbanisme"
deadline = "10 business days"
designation = "Service de l'urbanisme"
postal_address = "2 rue des Permis, 67000 Strasbourg"
email = "urbanisme@ville.example"
phone = "+33 3 88 00 00 02"

[[rules]]
id = "permis"
when = { keywords = ["permis"] }
service = "urbanisme"
typology = "permis-construire"

[[rules]]
id = "terrasse"
when = { keywords = ["terrasse"] }
service = "urbanisme"
typology = "terrasse"
implicit_decision = { kind = "rejection", delay = "2 months" }
"#;

pub fn notify_config(sink: &SmtpSink) -> NotifyConfig {
    let mut config = NotifyConfig {
        from: "Mairie de Strasbourg <mairie@ville.example>".into(),
        max_per_usager: 3,
        max_deliveries: 100,
        backoff: vec![
            Duration::from_millis(500),
            Duration::from_secs(1),
            Duration::from_secs(2),
        ],
        ack_wait: Duration::from_secs(20),
        never_send_to: vec!["courrier@ville.example".into()],
        ..NotifyConfig::default()
    };
    config.smtp.host = sink.host();
    config.smtp.port = Some(sink.port());
    config.smtp.security = SmtpSecurity::Plain;
    config.smtp.timeout = Duration::from_secs(10);
    config
}

/// A router and notify, each on its own connection, until dropped or shut down.
pub struct Gateway {
    pub bus: Bus,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<Result<(), String>>>,
    health: Health,
}

fn context(bus: Bus, health: &Health) -> ServiceContext {
    ServiceContext {
        bus,
        health: health.clone(),
        instance: "test".into(),
        privacy: guichet_harness::pseudonymizer().clone(),
    }
}

impl Gateway {
    pub async fn start(nats: &Nats, notify: NotifyConfig) -> Self {
        let bus = nats.bus().await;
        bus.stores()
            .config
            .put("rules", RULES.as_bytes().to_vec().into())
            .await
            .expect("rules pushed");
        let health = Health::default();
        health.set_bus(bus.clone());
        let stop = CancellationToken::new();
        let router_config = RouterConfig {
            backoff: vec![Duration::from_millis(100)],
            ..RouterConfig::default()
        };
        let router = tokio::spawn(guichet_router::run(
            context(nats.bus().await, &health),
            router_config,
            stop.clone(),
        ));
        let notify = tokio::spawn(guichet_notify::run(
            context(nats.bus().await, &health),
            notify,
            vec!["mairie-contact@ville.example".into()],
            stop.clone(),
        ));
        let tasks = vec![
            tokio::spawn(async move { router.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string()) }),
            tokio::spawn(async move { notify.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string()) }),
        ];
        let gateway = Self {
            bus,
            stop,
            tasks,
            health,
        };
        // Ready once both durable consumers exist: what is published
        // afterwards is theirs (notify's starts at new messages).
        let js = gateway.bus.jetstream().clone();
        let tasks_alive = || gateway.tasks.iter().all(|t| !t.is_finished());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let router = consumer_exists(&js, "INTAKE", "router").await;
            let notify =
                consumer_exists(&js, "ROUTED", "notify").await && consumer_exists(&js, "OUTBOX", "notify-sender").await;
            if router && notify {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline && tasks_alive(),
                "router and notify not started: {:?}",
                gateway.health.check()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        gateway
    }

    pub async fn shutdown(self) {
        self.stop.cancel();
        for task in self.tasks {
            let outcome = tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("stops on shutdown")
                .expect("no panic");
            assert!(outcome.is_ok(), "{outcome:?}");
        }
    }
}

async fn consumer_exists(js: &async_nats::jetstream::Context, stream: &str, name: &str) -> bool {
    match js.get_stream(stream).await {
        Ok(stream) => stream
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>(name)
            .await
            .is_ok(),
        Err(_) => false,
    }
}

pub fn email_contact(email: &str, subject: &str) -> Contact {
    let id = ids::contact_id();
    let now = Utc::now();
    Contact {
        id: id.clone(),
        received_at: Some(proto::timestamp(now)),
        channel: Channel::Email as i32,
        source: Some(Source {
            name: "mairie-contact@".into(),
            ..Default::default()
        }),
        claims: Some(IdentityClaims {
            email: email.into(),
            name: "Camille Martin".into(),
            ..Default::default()
        }),
        subject: subject.into(),
        body: "Bonjour, voici ma demande.".into(),
        reference: ids::reference(now),
        idempotency_key: format!("test-{id}"),
        details: Some(Details::Email(EmailDetails {
            message_id: format!("{id}@mail.usager.example"),
            ..Default::default()
        })),
        ..Default::default()
    }
}

pub fn web_contact(email: &str, subject: &str) -> Contact {
    let id = ids::contact_id();
    let now = Utc::now();
    Contact {
        id: id.clone(),
        received_at: Some(proto::timestamp(now)),
        channel: Channel::Web as i32,
        source: Some(Source {
            name: "demande-permis".into(),
            ..Default::default()
        }),
        claims: Some(IdentityClaims {
            email: email.into(),
            name: "Dominique Bernard".into(),
            ..Default::default()
        }),
        subject: subject.into(),
        body: "Formulaire en ligne".into(),
        reference: ids::reference(now),
        idempotency_key: format!("test-{id}"),
        details: Some(Details::Web(WebDetails {
            form_id: "demande-permis".into(),
            submission_id: id,
            ..Default::default()
        })),
        ..Default::default()
    }
}

pub fn flagged(mut contact: Contact, kind: FlagKind) -> Contact {
    contact.flags.push(Flag {
        kind: kind as i32,
        reason: "test".into(),
    });
    contact
}

pub async fn publish(bus: &Bus, contact: &Contact) {
    bus.publish_contact(contact).await.expect("contact published");
}

/// The events of one kind, as JSON.
pub async fn events(bus: &Bus, kind: &str) -> Vec<serde_json::Value> {
    let subject = format!("guichet.events.{kind}");
    streams::read_all(bus.jetstream(), "EVENTS", Duration::from_secs(20))
        .await
        .expect("EVENTS read")
        .into_iter()
        .filter(|m| m.subject == subject)
        .filter_map(|m| serde_json::from_slice(&m.payload).ok())
        .collect()
}

/// Waits until `f` holds, polling for at most `within`, or panics with `what`.
pub async fn eventually<F, Fut>(what: &str, within: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never within {within:?}: {what}");
}

/// Whether notify's ROUTED consumer has handled (acked) everything ROUTED holds.
pub async fn notify_caught_up(bus: &Bus, routed_at_least: u64) -> bool {
    let Ok(mut stream) = bus.jetstream().get_stream("ROUTED").await else {
        return false;
    };
    let Ok(info) = stream.info().await else { return false };
    let last = info.state.last_sequence;
    if info.state.messages < routed_at_least {
        return false;
    }
    let Ok(mut consumer) = stream
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>("notify")
        .await
    else {
        return false;
    };
    let Ok(c) = consumer.info().await else { return false };
    c.ack_floor.stream_sequence >= last && c.num_ack_pending == 0
}

/// Whether a consumer has nothing pending nor unacked.
pub async fn consumer_caught_up(bus: &Bus, stream: &str, consumer: &str) -> bool {
    let Ok(stream) = bus.jetstream().get_stream(stream).await else {
        return false;
    };
    let Ok(mut consumer) = stream
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>(consumer)
        .await
    else {
        return false;
    };
    consumer
        .info()
        .await
        .is_ok_and(|c| c.num_pending == 0 && c.num_ack_pending == 0)
}

/// A received message, parsed.
pub struct Received {
    pub raw: SinkMessage,
    pub text: String,
    pub html: String,
    pub subject: String,
}

pub fn parse(message: &SinkMessage) -> Received {
    let parsed = mail_parser::MessageParser::default()
        .parse(message.raw.as_bytes())
        .expect("a parsable message");
    Received {
        raw: message.clone(),
        text: parsed.body_text(0).map(|t| t.into_owned()).unwrap_or_default(),
        html: parsed.body_html(0).map(|t| t.into_owned()).unwrap_or_default(),
        subject: parsed.subject().unwrap_or_default().to_owned(),
    }
}
