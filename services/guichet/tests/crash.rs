//! The mail service in a real `guichet` process killed with SIGKILL in the
//! middle of a burst, then started again: every message of the mailbox ends
//! in INTAKE exactly once (nothing lost, nothing twice) and leaves the inbox.
//!
//! A kill lands anywhere: between a PubAck and the MOVE that follows it
//! (moves are batched, so usually there), mid-fetch, mid-publish. The
//! restarted watcher publishes the unmoved messages again under the same
//! keys, and JetStream refuses the copies.

// Test helpers may unwrap: a failure there is the test's.
#![allow(clippy::unwrap_used)]

use std::{
    collections::BTreeSet,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use guichet_core::{
    bus::subjects,
    proto::v1::{Contact, contact::Details},
};
use guichet_harness::{
    Dovecot, Nats,
    dovecot::{IMAP_PASSWORD, IMAP_USER},
};
use prost::Message;

const MESSAGES: usize = 300;

fn message(i: usize) -> Vec<u8> {
    format!(
        "From: Usager {i} <usager{i}@example.fr>\r\nTo: contact@ville.example\r\nSubject: Demande {i}\r\n\
         Message-ID: <crash-{i}@example.fr>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         Bonjour, voici ma demande num\u{e9}ro {i}.\r\n"
    )
    .into_bytes()
}

fn start(config: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_guichet"))
        .arg("--config")
        .arg(config)
        .args(["run", "--services", "mail"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Every contact in INTAKE (decoded), in stream order.
async fn intake(nats: &Nats) -> Vec<Contact> {
    let js = nats.jetstream().await;
    let Ok(mut stream) = js.get_stream(subjects::INTAKE_STREAM).await else {
        return Vec::new();
    };
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    for sequence in 1..=last {
        if let Ok(message) = stream.direct_get(sequence).await {
            out.push(Contact::decode(message.payload).unwrap());
        }
    }
    out
}

async fn intake_count(nats: &Nats) -> u64 {
    let js = nats.jetstream().await;
    match js.get_stream(subjects::INTAKE_STREAM).await {
        Ok(mut stream) => stream.info().await.unwrap().state.messages,
        Err(_) => 0,
    }
}

#[tokio::test]
async fn a_process_killed_mid_burst_loses_nothing_and_stores_nothing_twice() {
    let nats = Nats::start().await;
    let dovecot = Dovecot::start().await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("imap-password");
    std::fs::write(&secret, format!("{IMAP_PASSWORD}\n")).unwrap();
    let config = dir.path().join("guichet.toml");
    std::fs::write(
        &config,
        format!(
            "[nats]\nurl = \"{}\"\n[admin]\nlisten = \"{}\"\n{}{}",
            nats.url(),
            guichet_harness::loopback::free_addr(),
            dovecot.mailbox_toml(&secret),
            guichet_harness::privacy_toml()
        ),
    )
    .unwrap();
    let raws: Vec<Vec<u8>> = (0..MESSAGES).map(message).collect();
    let refs: Vec<&[u8]> = raws.iter().map(Vec::as_slice).collect();
    dovecot.append_all(IMAP_USER, "INBOX", &refs).await;

    // Kill it once part of the burst is stored, without warning.
    let mut child = start(&config);
    let deadline = Instant::now() + Duration::from_secs(60);
    while intake_count(&nats).await < 40 {
        assert!(Instant::now() < deadline, "nothing ingested within 60 s");
        assert!(child.try_wait().unwrap().is_none(), "guichet exited on its own");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let at_kill = intake_count(&nats).await;
    let left_at_kill = dovecot.count(IMAP_USER, "INBOX").await;
    // Stored but not yet moved: what the restart must not store again.
    let unmoved = (at_kill as usize + left_at_kill).saturating_sub(MESSAGES);
    eprintln!("killed with {at_kill} stored and {left_at_kill} still in the inbox ({unmoved} stored, not moved)");

    // Started again, it takes over its own instance's lease at once (the
    // dead run's lease would expire only after 30 s) and finishes the
    // mailbox. 15 s leaves a loaded machine room to start the process.
    let mut child = start(&config);
    let restarted = Instant::now();
    while intake_count(&nats).await <= at_kill && dovecot.count(IMAP_USER, "INBOX").await == left_at_kill {
        assert!(
            restarted.elapsed() < Duration::from_secs(15),
            "the restarted process did not resume the mailbox within 15 s: it waits for its own stale lease"
        );
        assert!(child.try_wait().unwrap().is_none(), "guichet exited on its own");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("resumed {:?} after the restart", restarted.elapsed());
    let deadline = Instant::now() + Duration::from_secs(120);
    while dovecot.count(IMAP_USER, "INBOX").await > 0 {
        assert!(Instant::now() < deadline, "the inbox was not emptied after the restart");
        assert!(child.try_wait().unwrap().is_none(), "guichet exited on its own");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success(), "a clean stop on SIGTERM");

    assert!(
        unmoved > 0,
        "the kill should land between PubAcks and their batched MOVE (stored {at_kill}, inbox {left_at_kill})"
    );
    let contacts = intake(&nats).await;
    let ids: BTreeSet<String> = contacts
        .iter()
        .map(|c| match &c.details {
            Some(Details::Email(e)) => e.message_id.clone(),
            other => panic!("not an e-mail contact: {other:?}"),
        })
        .collect();
    assert_eq!(ids.len(), MESSAGES, "every message once");
    assert_eq!(contacts.len(), MESSAGES, "and none twice");
    assert_eq!(dovecot.count(IMAP_USER, "Traites").await, MESSAGES);
}
