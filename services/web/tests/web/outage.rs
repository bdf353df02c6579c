//! The broker away, and the adapter stopping: a 503 that stores nothing
//! while NATS is down, the same request accepted once it is back, and
//! in-flight requests finished at shutdown.

use std::time::{Duration, Instant};

use crate::common::{self, FORMS, Web, accepted, problem, problem_type, voirie_json};

#[tokio::test]
async fn broker_down_is_503_then_the_same_request_succeeds() {
    let mut web = Web::start(common::config(FORMS)).await;
    let body = serde_json::to_vec(&voirie_json()).unwrap();
    web.nats.stop().await;

    // Whether or not the client has noticed yet, the answer comes fast.
    for attempt in 0..2 {
        let started = Instant::now();
        let response = web
            .signed("voirie", "application/json", body.clone())
            .header("idempotency-key", "outage-1")
            .send()
            .await
            .unwrap();
        let elapsed = started.elapsed();
        assert!(
            elapsed < Duration::from_secs(4),
            "attempt {attempt}: answered after {elapsed:?}"
        );
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let (status, p) = problem(response).await;
        assert_eq!(
            (status, p.kind.as_str()),
            (503, problem_type("unavailable").as_str()),
            "{}",
            p.detail
        );
        assert_eq!(retry_after.as_deref(), Some("5"));
    }

    web.nats.restart().await;
    assert_eq!(
        web.intake_count().await,
        0,
        "nothing was stored while the broker was down"
    );
    // The platform retries the same request until it is accepted.
    let deadline = Instant::now() + Duration::from_secs(30);
    let answer = loop {
        let response = web
            .signed("voirie", "application/json", body.clone())
            .header("idempotency-key", "outage-1")
            .send()
            .await
            .unwrap();
        if response.status() == 202 {
            break accepted(response).await;
        }
        assert_eq!(response.status(), 503);
        assert!(Instant::now() < deadline, "still 503 long after the broker came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let stored = web.intake().await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].contact.id, answer.contact_id);
    assert_eq!(stored[0].contact.reference, answer.reference);
    assert_eq!(stored[0].msg_id, "web:voirie:outage-1");
}

#[tokio::test]
async fn shutdown_finishes_the_request_in_progress() {
    let mut web = Web::start(common::config(FORMS)).await;
    let body = serde_json::to_vec(&voirie_json()).unwrap();
    let signature =
        guichet_web::signature::header_value(common::SECRET.as_bytes(), chrono::Utc::now().timestamp(), &body);
    // The body arrives in two halves, with shutdown requested in between.
    let (first, second) = body.split_at(body.len() / 2);
    let (first, second) = (first.to_vec(), second.to_vec());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (sent_tx, sent_rx) = tokio::sync::oneshot::channel::<()>();
    let stream =
        futures::stream::once(async move { Ok::<_, std::io::Error>(first) }).chain(futures::stream::once(async move {
            let _ = sent_tx.send(());
            let _ = rx.await;
            Ok(second)
        }));
    use futures::StreamExt;
    let request = web
        .client
        .post(web.url("voirie"))
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .header("x-guichet-signature", signature)
        .body(reqwest::Body::wrap_stream(stream))
        .send();
    let in_flight = tokio::spawn(request);
    // The request's first half is on its way (the stream is asked for
    // its second half only once the first is written).
    sent_rx.await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    web.shutdown.cancel();
    // New connections are refused while the request in progress goes on.
    let deadline = Instant::now() + Duration::from_secs(10);
    while web.client.post(web.url("voirie")).send().await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting 10 s after shutdown");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !in_flight.is_finished(),
        "the request in progress waits for its second half"
    );
    tx.send(()).unwrap();
    let response = in_flight.await.unwrap().unwrap();
    let answer = accepted(response).await;
    web.stop().await.unwrap();
    let stored = web.intake().await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].contact.id, answer.contact_id);
}

#[tokio::test]
async fn a_body_that_never_arrives_is_408_and_stores_nothing() {
    let text = FORMS.replacen("[web]\n", "[web]\nbody_timeout = \"1s\"\n", 1);
    let web = Web::start(common::config(&text)).await;
    let (_tx, rx) = tokio::sync::oneshot::channel::<()>();
    let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(b"{\"description\":".to_vec()) }).chain(
        futures::stream::once(async move {
            let _ = rx.await;
            Ok(b"\"x\"}".to_vec())
        }),
    );
    use futures::StreamExt;
    let started = Instant::now();
    let response = web
        .client
        .post(web.url("ouvert"))
        .header("content-type", "application/json")
        .header("content-length", 19)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    let (status, p) = problem(response).await;
    assert_eq!(
        (status, p.kind.as_str()),
        (408, problem_type("request-timeout").as_str())
    );
    assert_eq!(web.intake_count().await, 0);
}
