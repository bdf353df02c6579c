//! Due-soon and overdue alerts: published once per request and deadline,
//! with two processes sweeping at once and a restart between sweeps.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use chrono::Utc;
use common::*;
use guichet_core::proto::v1::{DeadlineAlert, DeadlineKind};
use guichet_harness::Nats;
use guichet_requests::{clock, sweep};

#[tokio::test]
async fn alerts_are_published_once_across_two_processes_and_a_restart() {
    let nats = Nats::start().await;
    let seeder = nats.bus().await;
    let now = Utc::now();
    let mut late = record("2026-ALRT-0001", "voirie");
    late.due_at = clock::rfc3339(now - chrono::Duration::hours(3));
    late.legal_due_at = clock::rfc3339(now - chrono::Duration::hours(1));
    late.implicit_decision = "rejection".into();
    seed(&seeder, &late).await;
    let mut soon = record("2026-ALRT-0002", "voirie");
    soon.due_at = clock::rfc3339(now + chrono::Duration::hours(20));
    seed(&seeder, &soon).await;
    let mut far = record("2026-ALRT-0003", "voirie");
    far.due_at = clock::rfc3339(now + chrono::Duration::days(20));
    seed(&seeder, &far).await;
    let mut waiting = record("2026-ALRT-0004", "voirie");
    waiting.status = "waiting_usager".into();
    waiting.due_at = clock::rfc3339(now - chrono::Duration::hours(3));
    seed(&seeder, &waiting).await;

    let due_soon = Duration::from_secs(2 * 24 * 3600);
    // Two processes (two connections) sweeping at the same time, three times.
    let (a, b) = (nats.bus().await, nats.bus().await);
    for _ in 0..3 {
        let (x, y) = tokio::join!(
            sweep::sweep_once(&a, due_soon, clock::Rules::Builtin, Utc::now()),
            sweep::sweep_once(&b, due_soon, clock::Rules::Builtin, Utc::now())
        );
        let (x, y) = (x.unwrap(), y.unwrap());
        assert_eq!((x.requests, x.overdue), (4, 1));
        assert_eq!((y.requests, y.overdue), (4, 1));
    }
    // A restart: a new process, long after (beyond the duplicate window:
    // the markers, not the window, keep it once).
    drop((a, b));
    let restarted = nats.bus().await;
    let later = Utc::now() + chrono::Duration::minutes(10);
    let swept = sweep::sweep_once(&restarted, due_soon, clock::Rules::Builtin, later)
        .await
        .unwrap();
    assert_eq!(swept.published, 0, "nothing again after a restart");

    let journal = request_events(&seeder).await;
    let mut alerts: Vec<(String, DeadlineKind, DeadlineAlert)> = journal
        .iter()
        .map(|(_, e)| (e.reference.clone(), e.deadline_kind(), e.alert()))
        .collect();
    alerts.sort_by_key(|(r, k, a)| (r.clone(), *k as i32, *a as i32));
    assert_eq!(
        alerts,
        [
            (
                "2026-ALRT-0001".to_owned(),
                DeadlineKind::Engagement,
                DeadlineAlert::Overdue
            ),
            ("2026-ALRT-0001".to_owned(), DeadlineKind::Legal, DeadlineAlert::Overdue),
            (
                "2026-ALRT-0002".to_owned(),
                DeadlineKind::Engagement,
                DeadlineAlert::DueSoon
            ),
        ],
        "{journal:#?}"
    );
    let subjects: Vec<&str> = journal.iter().map(|(s, _)| s.as_str()).collect();
    assert!(
        subjects.contains(&"guichet.events.request.overdue.2026-ALRT-0001"),
        "{subjects:?}"
    );
    assert!(
        subjects.contains(&"guichet.events.request.due_soon.2026-ALRT-0002"),
        "{subjects:?}"
    );
}

/// A service's `due_soon` in the rules file counts business days back on
/// the rules' calendar; a service without one gets `requests.due_soon`.
#[tokio::test]
async fn a_service_due_soon_counts_business_days_on_the_rules_calendar() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let rules = r#"
manual_service = "voirie"

[[services]]
name = "voirie"
deadline = "5 business days"
due_soon = "2 business days"

[[services]]
name = "urbanisme"
deadline = "5 business days"
"#;
    bus.stores()
        .config
        .put("rules", bytes::Bytes::from_static(rules.as_bytes()))
        .await
        .unwrap();
    // Both due Monday 4 May 2026 at 17:00 Paris (15:00 UTC). Friday 1 May
    // is a holiday: 2 business days before is Wednesday 29 April, 17:00.
    for (reference, service) in [("2026-SOON-0001", "voirie"), ("2026-SOON-0002", "urbanisme")] {
        let mut r = record(reference, service);
        r.due_at = "2026-05-04T15:00:00Z".into();
        seed(&bus, &r).await;
    }
    let in_force = guichet_rules::InForce::default();
    let rules = clock::Rules::InForce {
        rules: &in_force,
        key: "rules",
    };
    let one_day = Duration::from_secs(24 * 3600);
    let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
    let mut published = Vec::new();
    for now in [
        "2026-04-29T14:59:00Z",
        "2026-04-29T15:00:00Z",
        "2026-05-03T14:59:00Z",
        "2026-05-03T15:00:00Z",
    ] {
        let swept = sweep::sweep_once(&bus, one_day, rules, at(now)).await.unwrap();
        published.push(swept.published);
    }
    assert_eq!(published, [0, 1, 0, 1]);
    let alerts: Vec<(String, DeadlineAlert, i64)> = request_events(&bus)
        .await
        .into_iter()
        .map(|(_, e)| (e.reference.clone(), e.alert(), e.occurred_at.unwrap().seconds))
        .collect();
    assert_eq!(
        alerts,
        [
            (
                "2026-SOON-0001".to_owned(),
                DeadlineAlert::DueSoon,
                at("2026-04-29T15:00:00Z").timestamp()
            ),
            (
                "2026-SOON-0002".to_owned(),
                DeadlineAlert::DueSoon,
                at("2026-05-03T15:00:00Z").timestamp()
            ),
        ]
    );
}

/// The running service: two processes sweeping every 100 ms, stopped, then
/// a third started; each alert is on the journal once, and the due-soon
/// lead of a service comes from the rules in force.
#[tokio::test]
async fn two_running_services_and_a_restart_publish_each_alert_once() {
    let nats = Nats::start().await;
    let seeder = nats.bus().await;
    let rules = r#"
manual_service = "voirie"

[[services]]
name = "voirie"
deadline = "5 business days"
due_soon = "30 days"

[[services]]
name = "urbanisme"
deadline = "5 business days"
"#;
    seeder
        .stores()
        .config
        .put("rules", bytes::Bytes::from_static(rules.as_bytes()))
        .await
        .unwrap();
    let now = Utc::now();
    for (reference, service, due) in [
        ("2026-RUNS-0001", "voirie", now - chrono::Duration::hours(3)),
        // Due soon only under voirie's 30 days (requests.due_soon is 2 days).
        ("2026-RUNS-0002", "voirie", now + chrono::Duration::days(20)),
        ("2026-RUNS-0003", "urbanisme", now + chrono::Duration::days(20)),
    ] {
        let mut r = record(reference, service);
        r.due_at = clock::rfc3339(due);
        seed(&seeder, &r).await;
    }
    let config = || guichet_requests::RequestsConfig {
        sweep_interval: Duration::from_millis(100),
        ..config()
    };
    let alerts = || async {
        let mut alerts: Vec<(String, DeadlineAlert)> = request_events(&seeder)
            .await
            .into_iter()
            .filter(|(_, e)| e.alert() != DeadlineAlert::Unspecified)
            .map(|(_, e)| (e.reference.clone(), e.alert()))
            .collect();
        alerts.sort_by_key(|(r, _)| r.clone());
        alerts
    };
    let expected = [
        ("2026-RUNS-0001".to_owned(), DeadlineAlert::Overdue),
        ("2026-RUNS-0002".to_owned(), DeadlineAlert::DueSoon),
    ];
    let a = TestRequests::start(&nats.bus().await, config()).await;
    let b = TestRequests::start(&nats.bus().await, config()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while alerts().await.len() < expected.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "alerts not published: {:?}",
            alerts().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // About ten more sweeps each, then a restart.
    tokio::time::sleep(Duration::from_secs(1)).await;
    a.stop().await;
    b.stop().await;
    let c = TestRequests::start(&nats.bus().await, config()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.stop().await;
    assert_eq!(alerts().await, expected);
}
