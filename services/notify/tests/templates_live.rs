//! Pushed templates are checked, stored as revisions and applied live:
//! the next acknowledgment renders with the newest valid revision, without
//! restarting notify; a push that fails the check stores nothing; a bad
//! revision stored around the CLI is refused; a rollback brings an older
//! set back.

mod common;

use std::{sync::atomic::AtomicUsize, time::Duration};

use common::*;
use guichet_harness::{Nats, SmtpSink};
use guichet_notify::{template_revisions, templates};

/// The subject of the acknowledgment of one new web contact.
async fn next_acknowledgment_subject(gateway: &Gateway, sink: &SmtpSink, count: &AtomicUsize) -> String {
    let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let address = format!("usager-{n}@usager.example");
    publish(&gateway.bus, &web_contact(&address, "Demande")).await;
    let mut subject = None;
    eventually("the acknowledgment received", Duration::from_secs(30), || {
        let found = sink
            .messages()
            .iter()
            .find(|m| m.rcpt == [address.clone()])
            .map(|m| parse(m).subject);
        let got = found.is_some();
        subject = found;
        async move { got }
    })
    .await;
    subject.unwrap_or_default()
}

/// Acknowledges new contacts until one carries `wanted` (the watch applies
/// a push within moments; at most 20 contacts), then checks the next one
/// does too: once switched, notify stays on the new set.
async fn switches_to(gateway: &Gateway, sink: &SmtpSink, count: &AtomicUsize, wanted: &str) {
    for _ in 0..20 {
        if next_acknowledgment_subject(gateway, sink, count).await.contains(wanted) {
            let next = next_acknowledgment_subject(gateway, sink, count).await;
            assert!(next.contains(wanted), "switched back: {next}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("notify never rendered with the set saying {wanted:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_templates_apply_live_bad_ones_are_refused_and_rollback_restores() {
    let nats = Nats::start().await;
    let sink = SmtpSink::start().await;
    let gateway = Gateway::start(&nats, notify_config(&sink)).await;
    let bus = &gateway.bus;
    let count = AtomicUsize::new(0);
    let builtin_subject = "Accusé de réception de votre demande";
    assert!(
        next_acknowledgment_subject(&gateway, &sink, &count)
            .await
            .contains(builtin_subject),
        "the built-in templates before any push"
    );

    let first = template_revisions::push(bus, "templates", &templates::builtin(), "deploy/templates", "tester")
        .await
        .expect("the built-in set passes the check");
    let mut changed = templates::builtin();
    changed.insert(
        "acknowledgment.fr.subject".into(),
        "[{{ reference }}] Nouvelle version : votre demande est enregistrée".into(),
    );
    let second = template_revisions::push(bus, "templates", &changed, "ops/templates", "tester")
        .await
        .expect("pushed");
    switches_to(&gateway, &sink, &count, "Nouvelle version").await;

    // A push that fails the check stores nothing.
    let mut bad = changed.clone();
    bad.insert(
        "acknowledgment.fr.txt".into(),
        bad["acknowledgment.fr.txt"].replace("{{ service.phone }}", ""),
    );
    let refused = template_revisions::push(bus, "templates", &bad, "bad/templates", "tester")
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("service phone"), "{refused}");
    let history = template_revisions::history(bus, "templates").await.unwrap();
    assert_eq!(
        history.iter().map(|r| r.revision).collect::<Vec<_>>(),
        [first.revision, second.revision],
        "the refused push stored nothing"
    );

    // Stored around the CLI: refused by every notify, the set in force stays.
    let invalid = bus
        .stores()
        .config
        .put("templates", r#"{"acknowledgment.fr.txt": "{{ oops"}"#.into())
        .await
        .unwrap();
    let history = template_revisions::history(bus, "templates").await.unwrap();
    let last = history.last().unwrap();
    assert_eq!(last.revision, invalid);
    assert!(last.invalid.is_some(), "{history:?}");
    assert!(
        next_acknowledgment_subject(&gateway, &sink, &count)
            .await
            .contains("Nouvelle version")
    );

    // Rollback: the first set again, as a new revision, live.
    let rolled = template_revisions::rollback(bus, "templates", first.revision, "tester")
        .await
        .unwrap();
    assert!(rolled.revision > invalid);
    assert_eq!(rolled.sha256, first.sha256);
    switches_to(&gateway, &sink, &count, builtin_subject).await;
    let missing = template_revisions::rollback(bus, "templates", 9999, "tester")
        .await
        .unwrap_err();
    assert!(missing.to_string().contains("no templates revision 9999"), "{missing}");
    gateway.shutdown().await;
}
