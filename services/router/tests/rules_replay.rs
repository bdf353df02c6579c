//! `guichet rules replay` against a real nats-server: the replay of
//! recorded traffic with candidate rules gives exactly the decisions the
//! router itself makes once those rules are pushed.

#![allow(clippy::unwrap_used)]

mod common;

use chrono::{Duration, Utc};
use common::*;
use guichet_core::{
    bus::subjects,
    ids,
    proto::v1::{Channel, Contact, EmailDetails, contact::Details},
};
use guichet_harness::Nats;
use guichet_router::{
    live,
    rules_replay::{self, Decision, Period},
};
use guichet_rules::RuleSet;
use rules_text::alpha_to;

#[path = "common/rules.rs"]
mod rules_text;

/// Sends `alpha` to voirie faster under another typology, `beta` to
/// urbanisme; `never` matches nothing of the traffic.
const CANDIDATE: &str = r#"
manual_service = "accueil"

[[services]]
name = "accueil"
deadline = "5 business days"

[[services]]
name = "voirie"
deadline = "10 business days"

[[services]]
name = "urbanisme"
deadline = "10 business days"

[[rules]]
id = "alpha-v2"
when.keywords = ["alpha"]
service = "voirie"
typology = "alpha-v2"
deadline = "3 business days"

[[rules]]
id = "beta"
when.keywords = ["beta"]
service = "urbanisme"
typology = "beta"

[[rules]]
id = "never"
when.keywords = ["zzzyzx"]
service = "urbanisme"
"#;

/// The same message received anew: its own ids, the same content and
/// reception time (so the same due date).
fn fresh_copy(original: &Contact) -> Contact {
    let id = ids::contact_id();
    let mut copy = original.clone();
    copy.id.clone_from(&id);
    copy.idempotency_key = format!("test-{id}");
    copy.reference = ids::reference(Utc::now());
    copy.details = Some(Details::Email(EmailDetails {
        message_id: format!("{id}@mail.example.fr"),
        ..Default::default()
    }));
    copy
}

#[tokio::test]
async fn a_replay_gives_the_decisions_the_router_makes_with_those_rules() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    live::push(&bus, "rules", &alpha_to("voirie"), "current.toml", "tester")
        .await
        .unwrap();
    let router = RunningRouter::start(&nats, config()).await;
    let mut traffic = Vec::new();
    for (i, words) in ["alpha one", "alpha two", "alpha three", "beta one", "beta two", "gamma"]
        .iter()
        .enumerate()
    {
        let c = email_contact(&format!("u{i}@example.fr"), "demande", words);
        publish(&bus, &c).await;
        traffic.push(c);
    }
    for c in &traffic {
        routed(&bus, &c.id).await;
    }
    // INTAKE no longer holds one of them: ROUTED's copy stands in.
    let stream = bus.jetstream().get_stream(subjects::INTAKE_STREAM).await.unwrap();
    stream
        .purge()
        .filter(subjects::intake_keyed(Channel::Email, &traffic[5].idempotency_key))
        .await
        .unwrap();
    router.shutdown().await;

    let candidate = RuleSet::parse(CANDIDATE, "candidate.toml").unwrap();
    let period = Period {
        from: Utc::now() - Duration::hours(1),
        to: Utc::now() + Duration::hours(1),
        services: Vec::new(),
    };
    let report = rules_replay::replay(&bus, &candidate, &period).await.unwrap();
    assert_eq!(report.contacts, 6);
    assert_eq!(report.from_intake, 5);
    assert_eq!(report.changed, 5, "{report:?}");
    assert_eq!(report.services["voirie → voirie"], 3);
    assert_eq!(report.services["accueil → urbanisme"], 2);
    assert_eq!(report.services["accueil → accueil"], 1);
    assert_eq!(report.typologies["alpha → alpha-v2"], 3);
    assert_eq!(report.typologies["(none) → beta"], 2);
    let (earlier, later): (Vec<_>, Vec<_>) = report.due_shifts.iter().partition(|(d, _)| **d < 0);
    assert_eq!(
        earlier.iter().map(|(_, n)| **n).sum::<usize>(),
        3,
        "alpha now 3 business days, not 10: {:?}",
        report.due_shifts
    );
    assert_eq!(
        later.iter().map(|(_, n)| **n).sum::<usize>(),
        2,
        "beta now urbanisme's 10 business days, not accueil's 5: {:?}",
        report.due_shifts
    );
    assert_eq!(report.never_fired, vec!["never".to_owned()]);
    let examples = &report.examples["accueil → urbanisme"];
    assert_eq!(examples, &vec![traffic[3].id.clone(), traffic[4].id.clone()]);
    // A period or a service that holds none of them.
    let none = rules_replay::replay(
        &bus,
        &candidate,
        &Period {
            from: period.to,
            to: period.to + Duration::hours(1),
            services: Vec::new(),
        },
    )
    .await
    .unwrap();
    assert_eq!(none.contacts, 0);
    let only = rules_replay::replay(
        &bus,
        &candidate,
        &Period {
            services: vec!["urbanisme".into()],
            ..period.clone()
        },
    )
    .await
    .unwrap();
    assert_eq!(only.contacts, 2);
    let bad = rules_replay::replay(
        &bus,
        &candidate,
        &Period {
            services: vec!["a.b".into()],
            ..period.clone()
        },
    )
    .await
    .unwrap_err();
    assert!(bad.to_string().contains("--service"), "{bad}");

    // The router, with the candidate pushed, on the same messages anew.
    live::push(&bus, "rules", CANDIDATE, "candidate.toml", "tester")
        .await
        .unwrap();
    let router = RunningRouter::start(&nats, config()).await;
    for (original, _, replayed) in &report.decisions {
        let c = traffic.iter().find(|c| &c.id == original).unwrap();
        let again = fresh_copy(c);
        publish(&bus, &again).await;
        let routed = routed(&bus, &again.id).await;
        let decided = routed.qualification.unwrap();
        let by_router = Decision {
            service: decided.service.clone(),
            typology: decided.typology.clone(),
            rule_id: decided.rule_id.clone(),
            due_date: decided.due_date.clone(),
        };
        assert_eq!(&by_router, replayed, "contact {original}");
    }
    assert_eq!(report.decisions.len(), 6);
    router.shutdown().await;
}
