//! `implicit_decision = { kind, delay }` on a service or a rule: the legal
//! clock of demands whose silence is worth a decision (CRPA L231-1).

#![allow(clippy::unwrap_used)]

use chrono::{DateTime, Utc};
use guichet_core::proto::{
    self,
    v1::{Channel, Contact, ImplicitDecision},
};
use guichet_rules::RuleSet;

const TEXT: &str = r#"manual_service = "accueil"

[[services]]
name = "accueil"
deadline = "5 business days"

[[services]]
name = "urbanisme"
deadline = "1 business day"
implicit_decision = { kind = "rejection", delay = "2 months" }

[[rules]]
id = "permis"
when.keywords = "permis"
service = "urbanisme"
implicit_decision = { kind = "acceptance", delay = "1 month" }

[[rules]]
id = "urba"
when.keywords = "urbanisme"
service = "urbanisme"
"#;

fn contact(body: &str, received: &str) -> Contact {
    let at: DateTime<Utc> = DateTime::parse_from_rfc3339(received).unwrap().with_timezone(&Utc);
    Contact {
        id: "C1".into(),
        channel: Channel::Web as i32,
        body: body.into(),
        received_at: Some(proto::timestamp(at)),
        ..Default::default()
    }
}

#[test]
fn the_rule_or_its_service_sets_the_legal_clock_in_calendar_months() {
    let rules = RuleSet::parse(TEXT, "r.toml").unwrap();
    // The rule's own: 31 January + 1 month = 28 February.
    let q = rules.qualify(&contact("demande de permis", "2026-01-31T10:00:00Z"), 1);
    assert_eq!(q.implicit_decision(), ImplicitDecision::Acceptance);
    assert_eq!(q.legal_delay, "1 month");
    let legal = proto::to_datetime(q.legal_due_at.as_ref().unwrap()).unwrap();
    assert_eq!(legal.to_rfc3339(), "2026-02-28T10:00:00+00:00");
    assert!(
        q.explanation
            .iter()
            .any(|e| e.contains("implicit acceptance after 1 month")),
        "{:?}",
        q.explanation
    );
    // The service's default; the same wall-clock time in Paris (10:00 CET
    // on 15 March, 10:00 CEST on 15 May).
    let q = rules.qualify(&contact("question d'urbanisme", "2026-03-15T09:00:00Z"), 1);
    assert_eq!(q.implicit_decision(), ImplicitDecision::Rejection);
    assert_eq!(
        proto::to_datetime(q.legal_due_at.as_ref().unwrap())
            .unwrap()
            .to_rfc3339(),
        "2026-05-15T08:00:00+00:00"
    );
    // None: no legal clock.
    let q = rules.qualify(&contact("bonjour", "2026-03-15T09:00:00Z"), 1);
    assert_eq!(q.implicit_decision(), ImplicitDecision::Unspecified);
    assert!(q.legal_due_at.is_none());
}

#[test]
fn bad_implicit_decisions_are_named() {
    for (bad, says) in [
        (
            r#"{ kind = "silence", delay = "2 months" }"#,
            "unknown implicit decision kind `silence`",
        ),
        (r#"{ kind = "acceptance", delay = "2 weeks" }"#, "bad delay"),
        (r#"{ kind = "acceptance" }"#, "needs both `kind` and `delay`"),
        (r#"{ kind = "acceptance", delay = "2 months", when = "now" }"#, "when"),
    ] {
        let text = TEXT.replace(r#"{ kind = "rejection", delay = "2 months" }"#, bad);
        let err = RuleSet::parse(&text, "r.toml")
            .err()
            .unwrap_or_else(|| panic!("{bad} accepted"));
        let all = err.to_string();
        assert!(all.contains(says), "{bad}: {all}");
        assert!(all.contains("r.toml:10:"), "the line of the service: {all}");
    }
}
