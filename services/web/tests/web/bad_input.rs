//! Bad input gets a clear problem answer and changes nothing: every case
//! checks the status, the problem `type`, and that INTAKE is still empty.

use crate::common::{self, FORMS, SECRET, Web, problem, problem_type, voirie_json};

/// Sends `request`, expects `status` and problem `kind`, and nothing stored.
async fn refused(
    web: &Web,
    what: &str,
    request: reqwest::RequestBuilder,
    status: u16,
    kind: &str,
) -> common::ProblemBody {
    let response = request.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
    let (got, body) = problem(response).await;
    assert_eq!(
        (got, body.kind.as_str()),
        (status, problem_type(kind).as_str()),
        "{what}: {}",
        body.detail
    );
    assert_eq!(web.intake_count().await, 0, "{what}: something was published");
    for leak in ["nats", "jetstream", "panic", "src/", ".rs:"] {
        assert!(
            !body.detail.to_lowercase().contains(leak),
            "{what}: leaks `{leak}`: {}",
            body.detail
        );
    }
    body
}

#[tokio::test]
async fn every_bad_input_is_refused_and_nothing_is_published() {
    let web = Web::start(common::config(FORMS)).await;
    let json = "application/json";
    let form = "application/x-www-form-urlencoded";

    refused(
        &web,
        "invalid JSON",
        web.signed("voirie", json, r#"{"usager": {"email": "a@b.fr""#),
        400,
        "malformed-body",
    )
    .await;
    refused(
        &web,
        "JSON that is not an object",
        web.signed("voirie", json, "[1,2]"),
        400,
        "malformed-body",
    )
    .await;
    refused(
        &web,
        "invalid UTF-8 in JSON",
        web.signed("voirie", json, b"{\"description\": \"\xe9\"}".to_vec()),
        400,
        "malformed-body",
    )
    .await;
    let p = refused(
        &web,
        "invalid UTF-8 in a form field",
        web.signed("voirie", form, "email=a%40b.fr&description=caf%E9"),
        400,
        "malformed-body",
    )
    .await;
    assert!(
        p.detail.contains("`description`") && p.detail.contains("UTF-8"),
        "{}",
        p.detail
    );
    let multipart =
        b"--xx\r\nContent-Disposition: form-data; name=\"description\"\r\n\r\ncaf\xe9\r\n--xx--\r\n".to_vec();
    refused(
        &web,
        "invalid UTF-8 in a multipart field",
        web.signed("voirie", "multipart/form-data; boundary=xx", multipart),
        400,
        "malformed-body",
    )
    .await;

    let big = serde_json::json!({"usager": {"email": "a@b.fr"}, "description": "x".repeat(300_000)});
    let p = refused(&web, "body over the limit", web.json("voirie", &big), 413, "too-large").await;
    assert!(p.detail.contains("262144"), "names the limit: {}", p.detail);
    let file = format!(
        "--xx\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\na@b.fr\r\n\
         --xx\r\nContent-Disposition: form-data; name=\"description\"\r\n\r\nx\r\n\
         --xx\r\nContent-Disposition: form-data; name=\"f\"; filename=\"f.bin\"\r\n\r\n{}\r\n--xx--\r\n",
        "y".repeat(20_000)
    );
    let p = refused(
        &web,
        "file over the per-file limit",
        web.signed("voirie", "multipart/form-data; boundary=xx", file),
        413,
        "too-large",
    )
    .await;
    assert!(p.detail.contains("16384"), "names the limit: {}", p.detail);

    refused(
        &web,
        "wrong content type",
        web.signed("voirie", "text/plain", "bonjour"),
        415,
        "unsupported-media-type",
    )
    .await;
    refused(
        &web,
        "no content type",
        web.client.post(web.url("voirie")).body("{}"),
        415,
        "unsupported-media-type",
    )
    .await;

    let body = serde_json::to_vec(&voirie_json()).unwrap();
    let now = chrono::Utc::now().timestamp();
    refused(
        &web,
        "missing signature",
        web.client
            .post(web.url("voirie"))
            .header("content-type", json)
            .body(body.clone()),
        401,
        "missing-signature",
    )
    .await;
    let wrong_key = guichet_web::signature::header_value(b"not-the-secret-0123456789", now, &body);
    refused(
        &web,
        "signature with another key",
        web.client
            .post(web.url("voirie"))
            .header("content-type", json)
            .header("x-guichet-signature", wrong_key)
            .body(body.clone()),
        401,
        "invalid-signature",
    )
    .await;
    let other_body = guichet_web::signature::header_value(SECRET.as_bytes(), now, b"{}");
    refused(
        &web,
        "signature of another body",
        web.client
            .post(web.url("voirie"))
            .header("content-type", json)
            .header("x-guichet-signature", other_body)
            .body(body.clone()),
        401,
        "invalid-signature",
    )
    .await;
    refused(
        &web,
        "garbled signature",
        web.client
            .post(web.url("voirie"))
            .header("content-type", json)
            .header("x-guichet-signature", "sha256=abc")
            .body(body.clone()),
        401,
        "invalid-signature",
    )
    .await;
    // A captured request replayed 10 minutes later (window: 5 min).
    refused(
        &web,
        "replayed signature",
        web.signed_at("voirie", json, body.clone(), now - 600),
        401,
        "expired-signature",
    )
    .await;
    refused(
        &web,
        "signature from the future",
        web.signed_at("voirie", json, body.clone(), now + 600),
        401,
        "expired-signature",
    )
    .await;

    let p = refused(
        &web,
        "unknown form",
        web.signed("inconnu", json, body.clone()),
        404,
        "unknown-form",
    )
    .await;
    assert!(p.detail.contains("inconnu"), "{}", p.detail);
    refused(
        &web,
        "unknown route",
        web.client.post(format!("{}/v1/forms", web.base)),
        404,
        "not-found",
    )
    .await;
    refused(
        &web,
        "GET on the route",
        web.client.get(web.url("voirie")),
        405,
        "method-not-allowed",
    )
    .await;

    let mut missing = voirie_json();
    missing["usager"].as_object_mut().unwrap().remove("email");
    let p = refused(
        &web,
        "missing required field",
        web.json("voirie", &missing),
        422,
        "missing-field",
    )
    .await;
    assert_eq!(p.field.as_deref(), Some("email"));
    assert!(p.detail.contains("/usager/email"), "{}", p.detail);
    let mut blank = voirie_json();
    blank["description"] = "   ".into();
    let p = refused(
        &web,
        "blank required field",
        web.json("voirie", &blank),
        422,
        "missing-field",
    )
    .await;
    assert_eq!(p.field.as_deref(), Some("description"));
    let mut bad_email = voirie_json();
    bad_email["usager"]["email"] = "jeanne.martin.example.fr".into();
    let p = refused(
        &web,
        "an e-mail that is not one",
        web.json("voirie", &bad_email),
        422,
        "invalid-field",
    )
    .await;
    assert_eq!(p.field.as_deref(), Some("email"));
    assert!(
        !p.detail.contains("jeanne"),
        "the answer does not echo personal data: {}",
        p.detail
    );
    // Issue 11: an address with two `@` passed the mapping and became the
    // usager's identity. Refused with the one rule every adapter shares.
    for (address, why) in [
        ("jeanne@martin@example.fr", "more than one @"),
        ("jeanne@example..fr", "empty label"),
        ("jeanne@-mairie.fr", "hyphen"),
    ] {
        let mut two_at = voirie_json();
        two_at["usager"]["email"] = address.into();
        let p = refused(&web, address, web.json("voirie", &two_at), 422, "invalid-field").await;
        assert_eq!(p.field.as_deref(), Some("email"), "{address}");
        assert!(p.detail.contains(why), "{address}: {}", p.detail);
        assert!(!p.detail.contains("jeanne"), "{address}: {}", p.detail);
    }

    let deep = format!(
        r#"{{"usager": {{"email": "a@b.fr"}}, "description": "x", "n": {}1{}}}"#,
        "[".repeat(5000),
        "]".repeat(5000)
    );
    refused(
        &web,
        "deeply nested JSON",
        web.signed("voirie", json, deep),
        400,
        "too-deeply-nested",
    )
    .await;

    let fields: Vec<String> = (0..10_000).map(|i| format!("f{i}=v")).collect();
    let wide = format!("email=a%40b.fr&description=x&{}", fields.join("&"));
    refused(
        &web,
        "10,000-field form",
        web.signed("voirie", form, wide),
        413,
        "too-many-fields",
    )
    .await;
    let members: Vec<String> = (0..10_000).map(|i| format!("\"f{i}\":1")).collect();
    let wide_json = format!(
        r#"{{"usager": {{"email": "a@b.fr"}}, "description": "x", {}}}"#,
        members.join(",")
    );
    refused(
        &web,
        "10,000-member JSON",
        web.signed("voirie", json, wide_json),
        413,
        "too-many-fields",
    )
    .await;

    refused(
        &web,
        "invalid Idempotency-Key",
        web.json("voirie", &voirie_json()).header("idempotency-key", "a b"),
        400,
        "invalid-idempotency-key",
    )
    .await;

    // After all that, a good submission still goes through.
    let response = web.json("voirie", &voirie_json()).send().await.unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(web.intake_count().await, 1);
}

#[tokio::test]
async fn text_too_large_for_one_message_is_413() {
    // The body limit allows it, but the normalized contact would exceed
    // the broker's message size: refused before publishing, not retried.
    let text = FORMS.replace("max_request_bytes = 262144", "max_request_bytes = 4194304");
    let web = Web::start(common::config(&text)).await;
    let big = serde_json::json!({"usager": {"email": "a@b.fr"}, "description": "x".repeat(1_500_000)});
    let p = refused(&web, "huge description", web.json("voirie", &big), 413, "too-large").await;
    assert!(p.detail.contains("multipart"), "{}", p.detail);
}

#[tokio::test]
async fn a_submission_refused_as_too_large_leaves_no_file() {
    // Its files fit, its text does not: the refusal comes after the files
    // were read, and used to come after they were stored (orphans nothing
    // points at). One small file (kept in memory), one over the spool
    // threshold (streamed from disk): neither may reach the object store.
    let text = FORMS
        .replace("max_request_bytes = 262144", "max_request_bytes = 4194304")
        .replace(
            "max_file_bytes = 16384",
            "max_file_bytes = 2097152\nspool_threshold_bytes = 65536",
        );
    let web = Web::start(common::config(&text)).await;
    let body = format!(
        "--xx\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\na@b.fr\r\n\
         --xx\r\nContent-Disposition: form-data; name=\"description\"\r\n\r\n{}\r\n\
         --xx\r\nContent-Disposition: form-data; name=\"petit\"; filename=\"petit.txt\"\r\n\r\n{}\r\n\
         --xx\r\nContent-Disposition: form-data; name=\"grand\"; filename=\"grand.bin\"\r\n\r\n{}\r\n--xx--\r\n",
        "x".repeat(1_200_000),
        "petit fichier",
        "g".repeat(300_000)
    );
    let p = refused(
        &web,
        "text too large, with files",
        web.signed("voirie", "multipart/form-data; boundary=xx", body),
        413,
        "too-large",
    )
    .await;
    assert!(p.detail.contains("multipart"), "{}", p.detail);
    // The refusal is the evidence the submission was processed; now the store.
    let store = web
        .nats
        .jetstream()
        .await
        .get_object_store("guichet_attachments")
        .await
        .unwrap();
    let mut names = Vec::new();
    let mut list = store.list().await.unwrap();
    while let Some(info) = futures::StreamExt::next(&mut list).await {
        names.push(info.unwrap().name);
    }
    assert!(names.is_empty(), "a refused submission left files: {names:?}");
}

#[tokio::test]
async fn the_rate_limit_is_per_form() {
    let text = FORMS.replace(
        "[web.forms.ouvert]\n",
        "[web.forms.ouvert]\nrate_limit = { per_second = 0.01, burst = 2 }\n",
    );
    let web = Web::start(common::config(&text)).await;
    let send = |n: u32| {
        web.client
            .post(web.url("ouvert"))
            .json(&serde_json::json!({ "description": format!("demande {n}") }))
            .send()
    };
    assert_eq!(send(1).await.unwrap().status(), 202);
    assert_eq!(send(2).await.unwrap().status(), 202);
    let response = send(3).await.unwrap();
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1, "{retry_after}");
    let (status, p) = problem(response).await;
    assert_eq!((status, p.kind.as_str()), (429, problem_type("rate-limited").as_str()));
    assert_eq!(web.intake_count().await, 2, "the refused submission was not published");
    // Another form has its own budget.
    let response = web.json("voirie", &voirie_json()).send().await.unwrap();
    assert_eq!(response.status(), 202);
}
