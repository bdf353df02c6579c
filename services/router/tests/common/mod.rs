//! Shared test fixtures: a real nats-server, routers started through
//! `guichet_router::run`, contacts, and reading streams back.
#![allow(dead_code)]

use std::time::Duration;

use chrono::Utc;
use guichet_core::{
    Bus, ServiceContext,
    admin::Health,
    ids,
    proto::{
        self,
        v1::{Channel, Contact, DeadLetter, EmailDetails, IdentityClaims, Routed, Source, contact::Details},
    },
};
use guichet_harness::Nats;
use guichet_router::{RouterConfig, requests};
use prost::Message;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub fn config() -> RouterConfig {
    RouterConfig {
        max_deliveries: 3,
        backoff: vec![Duration::from_millis(50), Duration::from_millis(100)],
        ack_wait: Duration::from_secs(2),
        ..RouterConfig::default()
    }
}

/// A router running on its own connection.
pub struct RunningRouter {
    pub stop: CancellationToken,
    pub task: JoinHandle<Result<(), guichet_router::RouterError>>,
    pub health: Health,
}

impl RunningRouter {
    pub async fn start(nats: &Nats, config: RouterConfig) -> Self {
        Self::start_with_hooks(nats, config, guichet_router::Hooks::default()).await
    }

    pub async fn start_with_hooks(nats: &Nats, config: RouterConfig, hooks: guichet_router::Hooks) -> Self {
        let bus = nats.bus().await;
        let health = Health::default();
        health.set_bus(bus.clone());
        let ctx = ServiceContext {
            bus,
            health: health.clone(),
            instance: "test".into(),
            privacy: guichet_harness::pseudonymizer().clone(),
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn(guichet_router::run_with_hooks(ctx, config, stop.clone(), hooks));
        let router = Self { stop, task, health };
        router.wait_ready().await;
        router
    }

    pub async fn wait_ready(&self) {
        for _ in 0..500 {
            if self.health.check().1.is_empty() && !self.task.is_finished() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("router not ready: {:?}", self.health.check());
    }

    pub async fn shutdown(self) {
        self.stop.cancel();
        let outcome = tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("router stops on shutdown")
            .unwrap();
        assert!(outcome.is_ok(), "{outcome:?}");
    }
}

pub fn email_contact(email: &str, subject: &str, body: &str) -> Contact {
    let id = ids::contact_id();
    let now = Utc::now();
    Contact {
        id: id.clone(),
        received_at: Some(proto::timestamp(now)),
        channel: Channel::Email as i32,
        source: Some(Source {
            name: "mairie@".into(),
            ..Default::default()
        }),
        claims: Some(IdentityClaims {
            email: email.into(),
            ..Default::default()
        }),
        subject: subject.into(),
        body: body.into(),
        reference: ids::reference(now),
        idempotency_key: format!("test-{id}"),
        details: Some(Details::Email(EmailDetails {
            message_id: format!("{id}@mail.example.fr"),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// A copy of `original` as a second watched mailbox receives it: its own
/// contact id, reference and intake key, the same Message-ID and content.
pub fn crossposted(original: &Contact, mailbox: &str) -> Contact {
    let mut copy = email_contact("", "", "");
    copy.claims.clone_from(&original.claims);
    copy.subject.clone_from(&original.subject);
    copy.body.clone_from(&original.body);
    copy.details.clone_from(&original.details);
    if let Some(source) = copy.source.as_mut() {
        source.name = mailbox.into();
    }
    copy
}

pub fn with_claims(mut contact: Contact, claims: IdentityClaims) -> Contact {
    contact.claims = Some(claims);
    contact
}

pub async fn publish(bus: &Bus, contact: &Contact) {
    bus.publish_contact(contact).await.expect("contact published");
}

/// Waits until the contact is routed and returns its `Routed`.
pub async fn routed(bus: &Bus, contact_id: &str) -> Routed {
    for _ in 0..1000 {
        if let Some(index) = requests::routed_index(bus, contact_id).await.unwrap() {
            let stream = bus.jetstream().get_stream(&index.stream).await.unwrap();
            let message = stream.direct_get(index.sequence).await.unwrap();
            assert_eq!(message.subject.as_str(), index.subject);
            return Routed::decode(message.payload).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("contact {contact_id} never routed");
}

/// Every message on `filter` in `stream`: (subject, payload).
pub async fn read_all(bus: &Bus, stream: &str, filter: &str) -> Vec<(String, bytes::Bytes)> {
    use async_nats::jetstream::consumer::{DeliverPolicy, pull};
    use futures::StreamExt;
    let stream = bus.jetstream().get_stream(stream).await.unwrap();
    let mut consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: filter.to_owned(),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .unwrap();
    let pending = consumer.info().await.unwrap().num_pending;
    let mut out = Vec::new();
    if pending == 0 {
        return out;
    }
    let mut messages = consumer.messages().await.unwrap();
    while let Some(m) = tokio::time::timeout(Duration::from_secs(5), messages.next())
        .await
        .unwrap()
    {
        let m = m.unwrap();
        out.push((m.subject.to_string(), m.payload.clone()));
        if m.info().unwrap().pending == 0 {
            break;
        }
    }
    out
}

pub async fn routed_all(bus: &Bus) -> Vec<(String, Routed)> {
    read_all(bus, "ROUTED", "guichet.routed.>")
        .await
        .into_iter()
        .map(|(s, p)| (s, Routed::decode(p).unwrap()))
        .collect()
}

pub async fn dead_letters(bus: &Bus) -> Vec<DeadLetter> {
    read_all(bus, "DEADLETTER", "guichet.deadletter.>")
        .await
        .into_iter()
        .map(|(_, p)| DeadLetter::decode(p).unwrap())
        .collect()
}

pub async fn events(bus: &Bus, kind: &str) -> Vec<serde_json::Value> {
    read_all(bus, "EVENTS", &format!("guichet.events.{kind}"))
        .await
        .into_iter()
        .map(|(_, p)| serde_json::from_slice(&p).unwrap())
        .collect()
}

/// Waits until `f` holds (polling), or panics with `what`.
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..500 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never: {what}");
}
