//! The router through `guichet::run`, as `main` starts it: rules pushed
//! before start are applied, a contact is routed to its service's queue,
//! the decision event reaches a waiting adapter, and shutdown is clean.

#![allow(clippy::unwrap_used)]

use guichet_e2e::Gateway;
use std::time::Duration;

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
        privacy: guichet_harness::privacy_config(),
        ..Config::default()
    };
    let gateway = Gateway::start(config, vec![ServiceName::Router], Listeners::default()).await;

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

    gateway.stop().await;
}
