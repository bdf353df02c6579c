//! Unauthenticated clients can neither starve nor bloat the intake: slow
//! bodies do not hold the publish slots, bodies past the budgets are 503
//! at once, idle bodies are 408, large files are spooled and streamed to
//! the object store, and a refused body leaves nothing behind.

use std::{path::Path, time::Duration};

use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use crate::common::{self, FORMS, SECRET, Web, accepted, problem, problem_type, voirie_json};

/// `FORMS` with `settings` added to `[web]`.
fn forms_with(settings: &str) -> String {
    FORMS.replacen("[web]\n", &format!("[web]\n{settings}\n"), 1)
}

/// A request to `form` whose headers are sent and whose body the adapter
/// has started reading: it answered `100 Continue`, which hyper sends when
/// the handler first asks for the body.
async fn body_pending(web: &Web, form: &str, length: Option<u64>) -> TcpStream {
    let addr = web.base.trim_start_matches("http://");
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let framing = match length {
        Some(n) => format!("content-length: {n}"),
        None => "transfer-encoding: chunked".to_owned(),
    };
    // A well-formed signature that cannot match: the adapter must read the
    // body to find out.
    let head = format!(
        "POST /v1/forms/{form}/submissions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         x-guichet-signature: t={},v1={}\r\nexpect: 100-continue\r\n{framing}\r\n\r\n",
        chrono::Utc::now().timestamp(),
        "00".repeat(32)
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = async {
        let mut buf = [0u8; 256];
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed: {}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the adapter starts reading the body");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 100"), "{text}");
    tcp
}

/// Sends one byte every 200 ms on `tcp` until `stop` (at most 300 bytes).
fn trickle(mut tcp: TcpStream, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for _ in 0..300 {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
            if tcp.write_all(b" ").await.is_err() {
                return;
            }
        }
    })
}

/// A chunked body that sends `first` bytes, then nothing until dropped.
fn stalled_body(first: usize) -> (reqwest::Body, tokio::sync::oneshot::Sender<()>) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let head = futures::stream::once(async move { Ok::<_, std::io::Error>(vec![b' '; first]) });
    let tail = futures::stream::once(async move {
        let _ = rx.await;
        Ok(b"{}".to_vec())
    });
    (reqwest::Body::wrap_stream(head.chain(tail)), tx)
}

/// Files open in `dir` in this process (spool files have no name, but
/// their descriptors still point there until closed).
fn open_files_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| target.starts_with(dir))
        .map(|target| target.display().to_string())
        .collect()
}

async fn objects_stored(web: &Web) -> usize {
    let list = web.bus.stores().attachments.list().await.unwrap();
    list.try_collect::<Vec<_>>().await.unwrap().len()
}

#[tokio::test]
async fn slow_unauthenticated_bodies_do_not_take_the_publish_slots() {
    let text = forms_with("max_concurrent = 4\nbody_idle_timeout = \"30s\"\nbody_timeout = \"60s\"");
    let web = Web::start(common::config(&text)).await;
    // Twice as many slow clients as publish slots, each being read.
    let stop = CancellationToken::new();
    let mut slow = Vec::new();
    for _ in 0..8 {
        let tcp = body_pending(&web, "voirie", Some(1000)).await;
        slow.push(trickle(tcp, stop.clone()));
    }
    let started = Instant::now();
    let response = web
        .json("voirie", &voirie_json())
        .header("idempotency-key", "slow-clients-1")
        .send()
        .await
        .unwrap();
    let answer = accepted(response).await;
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    let stored = web.intake().await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].contact.id, answer.contact_id);
    assert_eq!(stored[0].msg_id, "web:voirie:slow-clients-1");
    assert_eq!(
        stored[0].contact.claims.as_ref().unwrap().email,
        "jeanne.martin@example.fr"
    );
    stop.cancel();
    for task in slow {
        task.await.unwrap();
    }
}

#[tokio::test]
async fn past_the_readers_limit_a_body_is_503_at_once() {
    let text = forms_with("max_reading_bodies = 2\nbody_idle_timeout = \"30s\"\nbody_timeout = \"60s\"");
    let web = Web::start(common::config(&text)).await;
    let _a = body_pending(&web, "voirie", Some(1000)).await;
    let _b = body_pending(&web, "voirie", Some(1000)).await;
    let started = Instant::now();
    let response = web.json("voirie", &voirie_json()).send().await.unwrap();
    assert!(response.headers().contains_key("retry-after"));
    let (status, p) = problem(response).await;
    assert_eq!((status, p.kind.as_str()), (503, problem_type("unavailable").as_str()));
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    assert_eq!(web.intake_count().await, 0);
}

#[tokio::test]
async fn a_chunked_body_past_the_budget_is_503_at_once_and_nothing_is_stored() {
    let spool = tempfile::tempdir().unwrap();
    let text = forms_with(&format!(
        "spool_threshold_bytes = 16384\nmax_buffered_bytes = 32768\nmax_spooled_bytes = 262144\n\
         body_idle_timeout = \"30s\"\nbody_timeout = \"60s\"\nspool_dir = \"{}\"",
        spool.path().display()
    ));
    let web = Web::start(common::config(&text)).await;
    let refused_at_once = |response: reqwest::Response, started: Instant| async move {
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
        assert_eq!(
            response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned()),
            Some("5".to_owned())
        );
        let (status, p) = problem(response).await;
        assert_eq!((status, p.kind.as_str()), (503, problem_type("unavailable").as_str()));
    };

    // Disk: a declared body reserves 200,000 of the 262,144 spooled bytes;
    // a chunked body past the memory threshold that needs 64 KiB on disk
    // is refused.
    let _s1 = body_pending(&web, "voirie", Some(200_000)).await;
    let (body, _hold2) = stalled_body(64 * 1024);
    let started = Instant::now();
    let response = web
        .client
        .post(web.url("ouvert"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    refused_at_once(response, started).await;

    // Memory: two declared bodies reserve 30,000 of the 32,768 bytes; a
    // chunked body that brings 8 KiB more is refused, not buffered.
    let _m1 = body_pending(&web, "voirie", Some(15_000)).await;
    let _m2 = body_pending(&web, "voirie", Some(15_000)).await;
    let (body, _hold) = stalled_body(8192);
    let started = Instant::now();
    let response = web
        .client
        .post(web.url("voirie"))
        .header("content-type", "application/json")
        .header("x-guichet-signature", format!("t=1,v1={}", "00".repeat(32)))
        .body(body)
        .send()
        .await
        .unwrap();
    refused_at_once(response, started).await;

    assert_eq!(web.intake_count().await, 0);
    assert_eq!(objects_stored(&web).await, 0);
}

#[tokio::test]
async fn an_idle_body_is_408_after_the_idle_timeout() {
    let text = forms_with("body_idle_timeout = \"1s\"\nbody_timeout = \"60s\"");
    let web = Web::start(common::config(&text)).await;
    let (body, _hold) = stalled_body(10);
    let started = Instant::now();
    let response = web
        .client
        .post(web.url("ouvert"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let elapsed = started.elapsed();
    let (status, p) = problem(response).await;
    assert_eq!(
        (status, p.kind.as_str()),
        (408, problem_type("request-timeout").as_str())
    );
    // The idle timeout, not the 60 s total, ended it.
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(20),
        "{elapsed:?}"
    );
    assert_eq!(web.intake_count().await, 0);
}

/// A 15 MiB file in a multipart body signed with `secret`: the content
/// type, the signature, the body and the file's bytes.
async fn large_upload(secret: &str) -> (String, String, Vec<u8>, Vec<u8>) {
    // Not compressible, not repetitive: a corrupted chunk would show.
    let mut file = Vec::with_capacity(15 * 1024 * 1024);
    let mut block = Sha256::digest(b"seed").to_vec();
    while file.len() < 15 * 1024 * 1024 {
        block = Sha256::digest(&block).to_vec();
        file.extend_from_slice(&block);
    }
    let form = reqwest::multipart::Form::new()
        .text("email", "lea@example.fr")
        .text("description", "Plan du quartier")
        .part(
            "plan",
            reqwest::multipart::Part::bytes(file.clone())
                .file_name("plan.pdf")
                .mime_str("application/pdf")
                .unwrap(),
        );
    let content_type = format!("multipart/form-data; boundary={}", form.boundary());
    let body: Vec<u8> = form
        .into_stream()
        .try_fold(Vec::new(), |mut acc, chunk| async move {
            acc.extend_from_slice(&chunk);
            Ok(acc)
        })
        .await
        .unwrap();
    let t = chrono::Utc::now().timestamp();
    let signature = guichet_web::signature::header_value(secret.as_bytes(), t, &body);
    (content_type, signature, body, file)
}

/// Limits for large uploads, with a memory budget smaller than the file:
/// it can only be accepted if it is not held in memory.
fn large_config(spool: &Path) -> String {
    forms_with(&format!(
        "max_request_bytes = 33554432\nmax_file_bytes = 20971520\nspool_threshold_bytes = 1048576\n\
         max_buffered_bytes = 4194304\nmax_spooled_bytes = 67108864\npublish_wait = \"30s\"\n\
         spool_dir = \"{}\"",
        spool.display()
    ))
    .replace("max_request_bytes = 262144\n", "")
    .replace("max_file_bytes = 16384\n", "")
}

async fn send_large(web: &Web, secret: &str) -> (reqwest::Response, Vec<u8>) {
    let (content_type, signature, body, file) = large_upload(secret).await;
    let response = web
        .client
        .post(web.url("voirie"))
        .header("content-type", content_type)
        .header("x-guichet-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    (response, file)
}

#[tokio::test]
async fn a_large_upload_is_streamed_to_the_object_store_intact() {
    let spool = tempfile::tempdir().unwrap();
    let web = Web::start(common::config(&large_config(spool.path()))).await;
    let (response, file) = send_large(&web, SECRET).await;
    let answer = accepted(response).await;
    let stored = web.intake().await;
    assert_eq!(stored.len(), 1);
    let c = &stored[0].contact;
    assert_eq!(c.id, answer.contact_id);
    assert_eq!(c.attachments.len(), 1);
    let a = &c.attachments[0];
    let sha256 = hex::encode(Sha256::digest(&file));
    assert_eq!(
        (a.file_name.as_str(), a.size, a.sha256.as_str(), a.key.clone()),
        (
            "plan.pdf",
            file.len() as u64,
            sha256.as_str(),
            format!("sha256/{sha256}")
        )
    );
    let back = web.bus.get_attachment(&a.key).await.unwrap();
    assert_eq!(hex::encode(Sha256::digest(&back)), sha256);
    assert_eq!(objects_stored(&web).await, 1);
    assert_eq!(open_files_in(spool.path()), Vec::<String>::new());
    assert_eq!(std::fs::read_dir(spool.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn a_refused_signature_on_a_large_body_leaves_nothing() {
    let spool = tempfile::tempdir().unwrap();
    let web = Web::start(common::config(&large_config(spool.path()))).await;
    let (response, _) = send_large(&web, "not-the-secret-0123456789").await;
    let (status, p) = problem(response).await;
    assert_eq!(
        (status, p.kind.as_str()),
        (401, problem_type("invalid-signature").as_str())
    );
    assert_eq!(web.intake_count().await, 0);
    assert_eq!(objects_stored(&web).await, 0);
    assert_eq!(open_files_in(spool.path()), Vec::<String>::new());
    assert_eq!(std::fs::read_dir(spool.path()).unwrap().count(), 0);
}
