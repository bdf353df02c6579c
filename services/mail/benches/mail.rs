//! `scripts/bench mail`: guichet's mail service against fetchmail, on the
//! same Dovecot mailbox in the same run.
//!
//! 1. N messages of mixed size (`GUICHET_BENCH_MESSAGES`, default 10,000)
//!    are appended to a Dovecot mailbox over IMAP.
//! 2. Baseline: `fetchmail` fetches them all (`--keep --fetchall`) to a
//!    null MDA (`cat >/dev/null`).
//! 3. guichet's mail service ingests them all (normalize, raw + attachments
//!    to the object store, publish with PubAck, MOVE, checkpoint): timed
//!    from start until the last is moved out of the inbox.
//! 4. While guichet IDLEs on the empty inbox, messages are appended one by
//!    one: the delay from APPEND to the contact's publish, p50 and p99.

#![allow(clippy::unwrap_used, clippy::expect_used)]

// The allocator of the `guichet` binary, so the bench measures what runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{
    os::unix::fs::PermissionsExt,
    time::{Duration, Instant},
};

use futures::StreamExt;
use guichet_core::{ServiceContext, admin::Health, secret::Secret};
use guichet_harness::{Dovecot, Nats};
use guichet_mail::{MailConfig, MailboxConfig, TlsMode};
use tokio_util::sync::CancellationToken;

const USER: &str = "bench";
const PASSWORD: &str = "bench-password";
const IDLE_SAMPLES: usize = 60;

fn message(i: usize) -> Vec<u8> {
    let head = format!(
        "From: Usager {i} <usager{i}@example.org>\r\nTo: contact@ville.example\r\n\
         Subject: =?UTF-8?Q?Demande_n=C2=B0{i}_=C3=A9tat_civil?=\r\nMessage-ID: <bench-{i}@example.org>\r\n\
         Date: Mon, 3 Mar 2025 10:00:00 +0100\r\nMIME-Version: 1.0\r\n"
    );
    let text = "Bonjour, je souhaiterais obtenir une copie intégrale de mon acte de naissance. Merci. ".repeat(10);
    match i % 10 {
        // ~1 KiB plain text
        0..=6 => format!("{head}Content-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n").into_bytes(),
        // ~9 KiB HTML only
        7 | 8 => format!(
            "{head}Content-Type: text/html; charset=utf-8\r\n\r\n<html><body>{}</body></html>\r\n",
            format!("<p>{text}</p>").repeat(9)
        )
        .into_bytes(),
        // ~55 KiB with a PDF-like attachment (base64)
        _ => {
            let blob: String = (0..40_000).map(|n| (b'A' + ((n * 7 + i) % 26) as u8) as char).collect();
            let b64: String = blob
                .as_bytes()
                .chunks(76)
                .map(|c| format!("{}\r\n", std::str::from_utf8(c).unwrap()))
                .collect();
            format!(
                "{head}Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n\
                 Content-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n--b\r\n\
                 Content-Type: application/pdf; name=\"piece-{i}.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n\
                 {b64}--b--\r\n"
            )
            .into_bytes()
        }
    }
}

fn mailbox(dovecot: &Dovecot) -> MailboxConfig {
    MailboxConfig {
        name: "bench".into(),
        host: "127.0.0.1".into(),
        port: Some(dovecot.port()),
        tls: TlsMode::Plain,
        allow_plaintext: true,
        user: USER.into(),
        password: Some(Secret::Inline(PASSWORD.into())),
        ..MailboxConfig::default()
    }
}

async fn append_all(dovecot: &Dovecot, n: usize) -> usize {
    let connections = 4;
    let mut bytes = 0;
    let mut tasks = Vec::new();
    for c in 0..connections {
        let raws: Vec<Vec<u8>> = (0..n).filter(|i| i % connections == c).map(message).collect();
        bytes += raws.iter().map(Vec::len).sum::<usize>();
        let mut session = dovecot.session(USER).await;
        tasks.push(tokio::spawn(async move {
            for raw in raws {
                session.append("INBOX", None, None, &raw).await.unwrap();
            }
            let _ = session.logout().await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    bytes
}

fn fetchmail(dovecot: &Dovecot, dir: &std::path::Path) -> Duration {
    let rc = dir.join("fetchmailrc");
    std::fs::write(
        &rc,
        format!(
            "set no syslog\nset postmaster \"root\"\npoll 127.0.0.1 service {port} protocol IMAP auth password\n  \
             user \"{USER}\" password \"{PASSWORD}\" is root here\n  keep fetchall sslproto \"\"\n  \
             mda \"cat >/dev/null\"\n",
            port = dovecot.port()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o600)).unwrap();
    let started = Instant::now();
    let out = std::process::Command::new("fetchmail")
        .env("HOME", dir)
        .env("FETCHMAILHOME", dir)
        .args(["--nodetach", "--silent", "--fetchmailrc"])
        .arg(&rc)
        .output()
        .expect("fetchmail runs (apt-get install fetchmail)");
    let took = started.elapsed();
    // 0: messages fetched; 1: none.
    assert!(
        out.status.code() == Some(0),
        "fetchmail failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("GUICHET_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let nats = Nats::start().await;
    let dovecot = Dovecot::start_with(false, &[(USER, PASSWORD)]).await;
    let dir = tempfile::tempdir().unwrap();

    let t = Instant::now();
    let bytes = append_all(&dovecot, n).await;
    println!(
        "appended {n} messages ({:.1} MiB, mixed 1 KiB text / 9 KiB HTML / 55 KiB with attachment) in {:.1?}",
        bytes as f64 / 1048576.0,
        t.elapsed()
    );

    let baseline = fetchmail(&dovecot, dir.path());
    println!(
        "fetchmail (keep, null MDA):            {n} messages in {baseline:>9.2?}  ({:.0} msg/s)",
        n as f64 / baseline.as_secs_f64()
    );

    let bus = nats.bus().await;
    let health = Health::default();
    health.set_bus(bus.clone());
    let ctx = ServiceContext {
        bus: bus.clone(),
        health,
        instance: "bench".into(),
        privacy: guichet_harness::pseudonymizer().clone(),
    };
    let cancel = CancellationToken::new();
    let started = Instant::now();
    let service = tokio::spawn(guichet_mail::run(
        ctx,
        MailConfig {
            mailboxes: vec![mailbox(&dovecot)],
        },
        cancel.clone(),
    ));
    let mut session = dovecot.session(USER).await;
    loop {
        let left = session.status("INBOX", "(MESSAGES)").await.unwrap().exists;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let guichet = started.elapsed();
    let stored = bus
        .jetstream()
        .get_stream("INTAKE")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages;
    assert_eq!(stored as usize, n, "every message is one contact");
    println!(
        "guichet mail (publish + PubAck + MOVE): {n} messages in {guichet:>9.2?}  ({:.0} msg/s)",
        n as f64 / guichet.as_secs_f64()
    );
    println!(
        "ratio guichet / fetchmail: {:.2}x (target: within 1.5x)",
        guichet.as_secs_f64() / baseline.as_secs_f64()
    );

    // Arrival while IDLE: APPEND, then the contact's publish on the subject.
    // Baseline in the same run: a bare IDLE client on the same folder, timing
    // APPEND -> the server's EXISTS (Dovecot batches IDLE notifications).
    let mut sub = bus.client().subscribe("guichet.intake.email.>").await.unwrap();
    bus.client().flush().await.unwrap();
    let (exists_tx, mut exists_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let idler = dovecot.session(USER).await;
    let watcher = tokio::spawn(async move {
        let mut idler = idler;
        idler.examine("INBOX").await.unwrap();
        loop {
            let mut handle = idler.idle();
            handle.init().await.unwrap();
            let (wait, _stop) = handle.wait_with_timeout(Duration::from_secs(60));
            if let Ok(async_imap::extensions::idle::IdleResponse::NewData(data)) = wait.await
                && format!("{:?}", data.parsed()).contains("Exists")
                && exists_tx.send(Instant::now()).is_err()
            {
                return;
            }
            idler = handle.done().await.unwrap();
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut delays = Vec::with_capacity(IDLE_SAMPLES);
    let mut notify = Vec::with_capacity(IDLE_SAMPLES);
    for i in 0..IDLE_SAMPLES {
        while exists_rx.try_recv().is_ok() {}
        let raw = message(n + i);
        let sent = Instant::now();
        session.append("INBOX", None, None, &raw).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("contact published within 10 s")
            .unwrap();
        delays.push(sent.elapsed());
        if let Ok(Some(at)) = tokio::time::timeout(Duration::from_secs(2), exists_rx.recv()).await {
            notify.push(at.duration_since(sent));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    watcher.abort();
    delays.sort();
    notify.sort();
    println!(
        "APPEND -> PubAck while IDLE ({IDLE_SAMPLES} messages): p50 {:.1?}  p99 {:.1?}  (target: p50 under 200 ms)",
        percentile(&delays, 0.5),
        percentile(&delays, 0.99)
    );
    if !notify.is_empty() {
        println!(
            "  baseline, APPEND -> EXISTS pushed to a bare IDLE client ({} samples): p50 {:.1?}  p99 {:.1?}",
            notify.len(),
            percentile(&notify, 0.5),
            percentile(&notify, 0.99)
        );
        println!(
            "  guichet's own share (p50 difference): {:.1?}",
            percentile(&delays, 0.5).saturating_sub(percentile(&notify, 0.5))
        );
    }
    let _ = session.logout().await;
    cancel.cancel();
    let _ = service.await;
}
