//! Shared by the mail tests: a gateway under test, and reading INTAKE back.
#![allow(dead_code, clippy::unwrap_used)]

use std::{future::Future, path::PathBuf, time::Duration};

use guichet_core::{
    Bus, ServiceContext,
    admin::Health,
    proto::v1::{Contact, EmailDetails, FlagKind, contact::Details},
    secret::Secret,
};
use guichet_harness::{
    Dovecot, Nats,
    dovecot::{IMAP_PASSWORD, IMAP_USER},
};
use guichet_mail::{Hooks, MailConfig, MailError, MailboxConfig, TlsMode, state};
use prost::Message;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const MOVED: &str = "Guichet-recu";

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/{name}.eml"))).unwrap()
}

/// Every fixture of the corpus, by name.
pub fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .map(|p| {
            (
                p.file_stem().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// A simple message with a unique Message-ID.
pub fn simple(n: usize) -> Vec<u8> {
    format!(
        "From: Usager {n} <usager{n}@example.org>\r\nTo: contact@ville.example\r\nSubject: Demande {n}\r\n\
         Message-ID: <simple-{n}@example.org>\r\nDate: Mon, 3 Mar 2025 10:00:00 +0100\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\nBonjour, ceci est la demande {n}.\r\n"
    )
    .into_bytes()
}

/// A plain-IMAP mailbox on the test Dovecot, with short timers.
pub fn mailbox(dovecot: &Dovecot, name: &str, user: &str) -> MailboxConfig {
    MailboxConfig {
        name: name.to_owned(),
        host: "127.0.0.1".into(),
        port: Some(dovecot.port()),
        tls: TlsMode::Plain,
        allow_plaintext: true,
        user: user.to_owned(),
        password: Some(Secret::Inline(dovecot.password(user).to_owned())),
        idle_refresh: Duration::from_secs(30),
        poll_interval: Duration::from_secs(1),
        command_timeout: Duration::from_secs(10),
        ..MailboxConfig::default()
    }
}

pub fn contact_mailbox(dovecot: &Dovecot) -> MailboxConfig {
    mailbox(dovecot, "contact", IMAP_USER)
}

pub const PASSWORD: &str = IMAP_PASSWORD;

/// One gateway process's mail service, as far as a test can tell.
pub struct Gateway {
    pub bus: Bus,
    pub health: Health,
    cancel: CancellationToken,
    task: JoinHandle<Result<(), MailError>>,
}

impl Gateway {
    pub async fn start(nats: &Nats, mailboxes: Vec<MailboxConfig>, instance: &str, hooks: Hooks) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let bus = nats.bus().await;
        let health = Health::default();
        health.set_bus(bus.clone());
        let ctx = ServiceContext {
            bus: bus.clone(),
            health: health.clone(),
            instance: instance.to_owned(),
            privacy: guichet_harness::pseudonymizer().clone(),
        };
        let cancel = CancellationToken::new();
        let task = tokio::spawn(guichet_mail::run_with_hooks(
            ctx,
            MailConfig { mailboxes },
            cancel.clone(),
            hooks,
        ));
        Self {
            bus,
            health,
            cancel,
            task,
        }
    }

    /// Clean shutdown: watchers log out and release their leases.
    pub async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("the mail service stops within 15 s")
            .unwrap()
            .unwrap();
    }

    /// A crash: the task is dropped wherever it is.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// One message of INTAKE.
pub struct Intake {
    pub msg_id: String,
    pub contact: Contact,
}

impl Intake {
    pub fn email(&self) -> &EmailDetails {
        match &self.contact.details {
            Some(Details::Email(e)) => e,
            other => panic!("not an e-mail contact: {other:?}"),
        }
    }

    pub fn has_flag(&self, kind: FlagKind) -> bool {
        self.contact.flags.iter().any(|f| f.kind == kind as i32)
    }
}

/// Everything in the INTAKE stream, in order.
pub async fn intake(nats: &Nats) -> Vec<Intake> {
    let js = nats.jetstream().await;
    let mut stream = js.get_stream("INTAKE").await.unwrap();
    let info = stream.info().await.unwrap().clone();
    let mut out = Vec::new();
    if info.state.messages == 0 {
        return out;
    }
    for seq in info.state.first_sequence..=info.state.last_sequence {
        let Ok(message) = stream.get_raw_message(seq).await else {
            continue;
        };
        let msg_id = message
            .headers
            .get("Nats-Msg-Id")
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        out.push(Intake {
            msg_id,
            contact: Contact::decode(message.payload).unwrap(),
        });
    }
    out
}

/// Polls `check` until it is true, at most `limit`.
pub async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until INTAKE holds `n` messages.
pub async fn wait_intake(nats: &Nats, n: usize, limit: Duration) -> Vec<Intake> {
    wait_until(&format!("{n} contacts in INTAKE"), limit, || async {
        intake(nats).await.len() >= n
    })
    .await;
    intake(nats).await
}

/// Waits until the watcher of `mailbox` has selected its folder once.
pub async fn wait_watching(bus: &Bus, mailbox: &str) {
    wait_until(
        &format!("mailbox {mailbox} selected"),
        Duration::from_secs(20),
        || async {
            state::load(&bus.stores().checkpoints, mailbox)
                .await
                .ok()
                .flatten()
                .is_some()
        },
    )
    .await;
}

/// Asserts every Nats-Msg-Id is distinct and returns them.
pub fn assert_unique(messages: &[Intake]) -> Vec<String> {
    let mut ids: Vec<String> = messages.iter().map(|m| m.msg_id.clone()).collect();
    ids.sort();
    let before = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), before, "a Nats-Msg-Id appears twice in INTAKE: {ids:?}");
    let mut message_ids: Vec<String> = messages
        .iter()
        .map(|m| m.email().message_id.clone())
        .filter(|id| !id.is_empty())
        .collect();
    message_ids.sort();
    let before = message_ids.len();
    message_ids.dedup();
    assert_eq!(
        message_ids.len(),
        before,
        "an e-mail was ingested twice: {message_ids:?}"
    );
    ids
}
