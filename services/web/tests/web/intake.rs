//! A 202 means the contact is in the INTAKE stream, with the fields the
//! mapping says; retries never create a second contact.

use guichet_core::{
    bus::subjects,
    proto::{
        self,
        v1::{Channel, FlagKind},
    },
};

use crate::common::{self, FORMS, Web, accepted, problem, problem_type, voirie_json};

#[tokio::test]
async fn json_submission_is_stored_with_its_fields() {
    let web = Web::start(common::config(FORMS)).await;
    let response = web
        .json("voirie", &voirie_json())
        .header("idempotency-key", "sub-42-attempt")
        .send()
        .await
        .unwrap();
    let answer = accepted(response).await;

    let stored = web.intake().await;
    assert_eq!(stored.len(), 1);
    let s = &stored[0];
    let c = &s.contact;
    assert_eq!(
        s.subject,
        subjects::intake_keyed(Channel::Web, "web:voirie:sub-42-attempt")
    );
    assert_eq!(s.msg_id, "web:voirie:sub-42-attempt");
    assert_eq!(c.idempotency_key, s.msg_id);
    assert_eq!(c.id, answer.contact_id);
    assert_eq!(c.reference, answer.reference);
    let at = proto::to_datetime(c.received_at.as_ref().unwrap()).unwrap();
    assert_eq!(
        at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        answer.received_at
    );
    assert!(guichet_core::ids::parse_reference(&answer.reference).is_some());
    assert_eq!(c.channel, i32::from(Channel::Web));
    let source = c.source.as_ref().unwrap();
    assert_eq!(
        (source.name.as_str(), source.adapter_instance.as_str()),
        ("voirie", "test")
    );
    let claims = c.claims.as_ref().unwrap();
    assert_eq!(claims.email, "jeanne.martin@example.fr");
    assert_eq!(claims.phone, "06 12 34 56 78");
    assert_eq!(claims.name, "Jeanne Martin");
    let address = claims.postal_address.as_ref().unwrap();
    assert_eq!(address.lines, vec!["12 rue des Lilas"]);
    assert_eq!((address.postal_code.as_str(), address.city.as_str()), ("69003", "Lyon"));
    assert_eq!(c.subject, "Nid de poule");
    assert_eq!(c.body, "Un nid de poule profond devant le 12.");
    let w = s.web();
    assert_eq!(w.form_id, "voirie");
    assert_eq!(w.typology_hint, "voirie.signalement");
    assert_eq!(w.submission_id, "SUB-42");
    assert_eq!(w.fields.len(), 2, "only kept fields: {:?}", w.fields);
    assert_eq!(w.fields["categorie"], "chaussée");
    assert_eq!(w.fields["lieu"], r#"{"lat":45.76,"lon":4.85}"#);
    assert!(c.flags.is_empty(), "{:?}", c.flags);
    assert!(c.attachments.is_empty());
}

#[tokio::test]
async fn urlencoded_submission_maps_field_names() {
    let web = Web::start(common::config(FORMS)).await;
    let body = "email=paul%40example.fr&telephone=%2B33612345678&nom=Paul+Dupont&description=Lampadaire+%C3%A9teint\
                &categorie=eclairage&categorie=nuit&rue=3+place+Bellecour&code_postal=69002&telephone2=ignored";
    let answer = accepted(
        web.signed("voirie", "application/x-www-form-urlencoded", body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let stored = web.intake().await;
    assert_eq!(stored.len(), 1);
    let c = &stored[0].contact;
    assert_eq!(c.id, answer.contact_id);
    let claims = c.claims.as_ref().unwrap();
    assert_eq!(claims.email, "paul@example.fr");
    assert_eq!(claims.phone, "+33612345678");
    assert_eq!(claims.name, "Paul Dupont");
    assert_eq!(claims.postal_address.as_ref().unwrap().postal_code, "69002");
    assert_eq!(c.body, "Lampadaire éteint");
    assert_eq!(stored[0].web().fields["categorie"], "eclairage, nuit");
    // No Idempotency-Key: the key is the hash of the body, under the form.
    let key = format!(
        "web:voirie:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(body))
    );
    assert_eq!(stored[0].msg_id, key);
}

#[tokio::test]
async fn multipart_files_go_to_the_object_store() {
    let web = Web::start(common::config(FORMS)).await;
    let photo: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let form = reqwest::multipart::Form::new()
        .text("email", "lea@example.fr")
        .text("description", "Tag sur le mur de l'école")
        .part(
            "photo",
            reqwest::multipart::Part::bytes(photo.clone())
                .file_name("../../mur.jpg")
                .mime_str("image/jpeg")
                .unwrap(),
        );
    let boundary = form.boundary().to_owned();
    // Sign the exact bytes reqwest will send.
    use futures::TryStreamExt;
    let body: Vec<u8> = form
        .into_stream()
        .try_fold(Vec::new(), |mut acc, chunk| async move {
            acc.extend_from_slice(&chunk);
            Ok(acc)
        })
        .await
        .unwrap();
    let answer = accepted(
        web.signed("voirie", &format!("multipart/form-data; boundary={boundary}"), body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let stored = web.intake().await;
    assert_eq!(stored.len(), 1);
    let c = &stored[0].contact;
    assert_eq!(c.id, answer.contact_id);
    assert_eq!(c.body, "Tag sur le mur de l'école");
    assert_eq!(c.attachments.len(), 1);
    let a = &c.attachments[0];
    assert_eq!(
        (a.file_name.as_str(), a.media_type.as_str(), a.size),
        ("mur.jpg", "image/jpeg", 5000)
    );
    assert_eq!(web.bus.get_attachment(&a.key).await.unwrap(), photo);
}

/// A `v2` form: the signature covers the Idempotency-Key, so a captured
/// request cannot be resent under another key to make a second contact.
#[tokio::test]
async fn a_v2_form_refuses_a_signed_request_replayed_under_another_key() {
    let forms = format!(
        "{FORMS}\n[web.forms.permis]\nsecret = \"{}\"\nsignature_scheme = \"v2\"\ndescription = \"description\"\n",
        common::SECRET
    );
    let web = Web::start(common::config(&forms)).await;
    let body = serde_json::to_vec(&serde_json::json!({"description": "permis de construire"})).unwrap();
    let now = chrono::Utc::now().timestamp();
    let signed = guichet_web::signature::header_value_v2(common::SECRET.as_bytes(), now, "sub-1", &body);
    let post = |key: &str, signature: &str| {
        web.client
            .post(web.url("permis"))
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .header("x-guichet-signature", signature)
            .body(body.clone())
    };
    let first = accepted(post("sub-1", &signed).send().await.unwrap()).await;
    // The platform's own retry, same key: the first answer.
    let retry = accepted(post("sub-1", &signed).send().await.unwrap()).await;
    assert_eq!(first, retry);
    // The same signed bytes under another key: refused, nothing stored.
    let (status, problem_body) = problem(post("sub-2", &signed).send().await.unwrap()).await;
    assert_eq!(status, 401);
    assert_eq!(problem_body.kind, problem_type("invalid-signature"));
    // A v1 signature is not enough for this form, and says what is wanted.
    let v1 = guichet_web::signature::header_value(common::SECRET.as_bytes(), now, &body);
    let (status, problem_body) = problem(post("sub-3", &v1).send().await.unwrap()).await;
    assert_eq!(status, 401);
    assert!(
        problem_body.detail.contains("requires `v2=`"),
        "{}",
        problem_body.detail
    );
    assert_eq!(web.intake_count().await, 1);
}

#[tokio::test]
async fn a_retry_gets_the_same_ids_and_stores_one_message() {
    let web = Web::start(common::config(FORMS)).await;
    // With an Idempotency-Key: the retry is signed again (new timestamp) and
    // may even differ in body; the key decides.
    let first = accepted(
        web.json("voirie", &voirie_json())
            .header("idempotency-key", "k-1")
            .send()
            .await
            .unwrap(),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let retry = accepted(
        web.json("voirie", &voirie_json())
            .header("idempotency-key", "k-1")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(first, retry);
    assert_eq!(web.intake_count().await, 1);

    // Without: the same body is the same submission.
    let body = serde_json::json!({"usager": {"email": "a@example.fr"}, "description": "x"});
    let a = accepted(web.json("voirie", &body).send().await.unwrap()).await;
    let b = accepted(web.json("voirie", &body).send().await.unwrap()).await;
    assert_eq!(a, b);
    assert_ne!(a.contact_id, first.contact_id);
    assert_eq!(web.intake_count().await, 2);

    // A third attempt is recognized again, still with the first ids.
    let c = accepted(web.json("voirie", &body).send().await.unwrap()).await;
    assert_eq!(a, c);
    let stored = web.intake().await;
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[1].contact.id, a.contact_id);
}

#[tokio::test]
async fn unsigned_forms_and_the_catch_all() {
    let text = format!("{FORMS}\n[web.forms.autre]\ninsecure_no_signature = true\ndescription = \"texte\"\n");
    let text = text.replacen("[web]\n", "[web]\ncatch_all = \"autre\"\n", 1);
    let web = Web::start(common::config(&text)).await;
    // An unsigned form needs no header.
    let response = web
        .client
        .post(web.url("ouvert"))
        .json(&serde_json::json!({"description": "Bonjour"}))
        .send()
        .await
        .unwrap();
    let ouvert = accepted(response).await;
    // A form id that is not configured goes to the catch-all.
    let response = web
        .client
        .post(web.url("enquete-2026"))
        .json(&serde_json::json!({"texte": "Avis"}))
        .send()
        .await
        .unwrap();
    let other = accepted(response).await;
    let stored = web.intake().await;
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].contact.id, ouvert.contact_id);
    assert_eq!(stored[1].contact.id, other.contact_id);
    assert_eq!(stored[1].contact.source.as_ref().unwrap().name, "enquete-2026");
    assert_eq!(stored[1].web().form_id, "autre");
    assert_eq!(stored[1].contact.body, "Avis");
    // The signed form still needs its signature.
    let response = web
        .client
        .post(web.url("voirie"))
        .json(&voirie_json())
        .send()
        .await
        .unwrap();
    let (status, p) = problem(response).await;
    assert_eq!(
        (status, p.kind.as_str()),
        (401, problem_type("missing-signature").as_str())
    );
    assert_eq!(web.intake_count().await, 2);
}

#[tokio::test]
async fn an_optional_invalid_phone_is_dropped_and_flagged() {
    let web = Web::start(common::config(FORMS)).await;
    let mut body = voirie_json();
    body["usager"]["telephone"] = "0612".into();
    accepted(web.json("voirie", &body).send().await.unwrap()).await;
    let stored = web.intake().await;
    let c = &stored[0].contact;
    assert_eq!(c.claims.as_ref().unwrap().phone, "");
    assert_eq!(c.flags.len(), 1);
    assert_eq!(c.flags[0].kind, i32::from(FlagKind::MalformedHeader));
}

#[tokio::test]
async fn no_forms_configured_means_404_and_shutdown_is_clean() {
    let mut web = Web::start(common::config("")).await;
    let response = web
        .client
        .post(web.url("voirie"))
        .json(&voirie_json())
        .send()
        .await
        .unwrap();
    let (status, p) = problem(response).await;
    assert_eq!((status, p.kind.as_str()), (404, problem_type("unknown-form").as_str()));
    assert!(p.detail.contains("voirie"), "{}", p.detail);
    let (ready, waiting) = web.health.check();
    assert!(ready, "{waiting:?}");
    web.stop().await.unwrap();
    assert!(web.client.post(web.url("voirie")).send().await.is_err(), "port closed");
}
