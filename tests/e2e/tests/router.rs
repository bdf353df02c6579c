//! The router through `guichet::run`, as `main` starts it: rules pushed
//! before start are applied, a contact is routed to its service's queue,
//! the decision event reaches a waiting adapter, and shutdown is clean.

#![allow(clippy::unwrap_used)]

use std::{net::TcpListener, time::Duration};

use futures::StreamExt;
use guichet::{Config, Listeners, ServiceName};
use guichet_core::{
    ids,
    proto::{
        self,
        v1::{Channel, Contact, Decision, IdentityClaims, Routed, Source},
    },
};
use guichet_harness::Nats;
use prost::Message;
use tokio_util::sync::CancellationToken;

const RULES: &str = r#"
manual_service = "accueil"

[[services]]
name = "accueil"
deadline = "5 business days"

[[services]]
name = "dechets"
deadline = "3 business days"

[[rules]]
id = "dechets"
when.keywords = ["dechets", "encombrant*"]
service = "dechets"
typology = "collecte"
"#;

#[tokio::test]
async fn a_contact_is_routed_to_its_service_queue_and_the_decision_is_announced() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let pushed = guichet_router::live::push(&bus, "rules", RULES, "rules.toml", "e2e")
        .await
        .unwrap();

    let config = Config {
        nats: nats.nats_config(),
        ..Config::default()
    };
    let admin = TcpListener::bind("127.0.0.1:0").unwrap();
    admin.set_nonblocking(true).unwrap();
    let readyz = format!("http://{}/readyz", admin.local_addr().unwrap());
    let listeners = Listeners {
        admin: Some(admin),
        ..Listeners::default()
    };
    let shutdown = CancellationToken::new();
    let gateway = tokio::spawn(guichet::run(
        config,
        vec![ServiceName::Router],
        listeners,
        shutdown.clone(),
    ));
    let http = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..200 {
        if http.get(&readyz).send().await.ok().map(|r| r.status().as_u16()) == Some(200) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "router never ready");

    let now = chrono::Utc::now();
    let id = ids::contact_id();
    let contact = Contact {
        id: id.clone(),
        received_at: Some(proto::timestamp(now)),
        channel: Channel::Email as i32,
        source: Some(Source {
            name: "mairie@".into(),
            ..Default::default()
        }),
        claims: Some(IdentityClaims {
            email: "usager@example.fr".into(),
            ..Default::default()
        }),
        subject: "Encombrants".into(),
        body: "Quand passent les encombrants ?".into(),
        reference: ids::reference(now),
        idempotency_key: format!("e2e-{id}"),
        ..Default::default()
    };
    // An adapter waits for the decision before answering the usager.
    let mut decided = bus.client().subscribe(format!("guichet.decided.{id}")).await.unwrap();
    bus.client().flush().await.unwrap();
    bus.publish_contact(&contact).await.unwrap();
    let message = tokio::time::timeout(Duration::from_secs(10), decided.next())
        .await
        .expect("a decision within 10 s")
        .unwrap();
    let decision = Decision::decode(message.payload).unwrap();
    assert_eq!(decision.contact_id, id);
    assert_eq!(decision.service, "dechets");
    assert_eq!(decision.typology, "collecte");
    assert_eq!(decision.reference, contact.reference);
    assert!(!decision.due_date.is_empty());
    assert!(!decision.follow_up);

    // What the service's back-office pulls.
    let view = guichet_router::admin::pull_queue(&bus, "dechets", 10, false)
        .await
        .unwrap();
    assert_eq!(view.items.len(), 1);
    let routed: &Routed = &view.items[0];
    assert_eq!(routed.contact.as_ref().unwrap().id, id);
    assert_eq!(routed.usager_id, decision.usager_id);
    let q = routed.qualification.as_ref().unwrap();
    assert_eq!((q.rule_id.as_str(), q.rules_revision), ("dechets", pushed.revision));

    shutdown.cancel();
    let outcome = tokio::time::timeout(Duration::from_secs(30), gateway)
        .await
        .unwrap()
        .unwrap();
    assert!(outcome.is_ok(), "{outcome:?}");
}
