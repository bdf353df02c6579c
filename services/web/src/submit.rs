//! `POST /v1/forms/{form}/submissions`: one submission in, one contact on
//! `guichet.intake.web`, and a 202 only once JetStream has stored it.
//!
//! The order of the checks is deliberate: what costs nothing comes first
//! (form, media type, declared length, the signature header's shape), the
//! body is read under the bounds of [`crate::receive`] (time, count, bytes
//! held; spooled to disk when large) while its MAC is computed, the
//! signature is checked on the exact bytes received before anything parses
//! them; only then does the submission take a publish slot
//! (`web.max_concurrent`: unauthenticated clients never hold one), then
//! the rate limit (authentic submissions only count against a form's
//! budget), parsing, mapping, the contact built and size-checked with its
//! files' references, and only then the files stored and the contact
//! published (a refused submission stores no file).

use std::{sync::Arc, time::Duration};

use axum::{
    Json,
    body::Body,
    extract::{Path, State, rejection::PathRejection},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::Utc;
use guichet_core::{
    bus::{IntakeReceipt, attachment_ref},
    ids,
    proto::{
        self,
        v1::{Channel, Contact, Source, WebDetails, contact::Details},
    },
    telemetry::pseudonym,
};
use prost::Message;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tracing::Instrument;

use crate::{
    app::{App, Form},
    body::{self, BodyKind, Limits, UploadData},
    mapping,
    problem::Problem,
    receive::{self, Received},
    signature::{self, SignatureError, Verifier},
};

/// The 202 body.
#[derive(Debug, Serialize)]
pub struct Accepted {
    pub contact_id: String,
    pub reference: String,
    pub received_at: String,
}

/// Room left in a NATS message for its headers (`Nats-Msg-Id` …).
const HEADER_ROOM: usize = 4096;

pub async fn submit(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let requested = path.map(|Path(id)| id).unwrap_or_default();
    let form = app.form(&requested);
    // Metric labels only take configured ids: made-up ones must not grow the series.
    let label = form.as_ref().map_or_else(|| "_unknown".to_owned(), |f| f.id.clone());
    let span = tracing::info_span!(
        "web_submission",
        form = %label,
        contact_id = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    let outcome = async {
        let Some(form) = form else {
            return Err(Problem::unknown_form(&requested));
        };
        handle(&app, &requested, &form, &headers, body).await
    }
    .instrument(span.clone())
    .await;

    let (response, outcome) = match outcome {
        Ok(receipt) => {
            let outcome = if receipt.duplicate { "duplicate" } else { "accepted" };
            span.record("contact_id", receipt.contact_id.as_str());
            let body = Accepted {
                contact_id: receipt.contact_id,
                reference: receipt.reference,
                received_at: receipt.received_at,
            };
            ((StatusCode::ACCEPTED, Json(body)).into_response(), outcome)
        }
        Err(problem) => {
            let kind = problem.kind;
            (problem.into_response(), kind)
        }
    };
    span.record("outcome", outcome);
    metrics::counter!("guichet_web_submissions_total", "form" => label.clone(), "outcome" => outcome).increment(1);
    metrics::histogram!("guichet_web_request_seconds", "form" => label).record(started.elapsed().as_secs_f64());
    response
}

async fn handle(
    app: &App,
    requested: &str,
    form: &Form,
    headers: &HeaderMap,
    body: Body,
) -> Result<IntakeReceipt, Problem> {
    let config = &app.config;
    let kind = BodyKind::of(headers)?;
    let idempotency = idempotency_key(headers)?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > config.max_request_bytes as u64) {
        return Err(receive::too_large(config.max_request_bytes));
    }
    // The header is read before the body: a request that cannot be
    // authentic is refused before it can send (and hold) anything.
    let refused = |e: SignatureError| {
        tracing::info!(reason = ?e, "submission refused: signature");
        signature_problem(e, config.signature_window)
    };
    let mut verifier = match &form.key {
        Some(key) => Some(
            Verifier::new(
                key,
                form.config.signature_scheme,
                headers.get(signature::HEADER).map(|v| v.as_bytes()),
                idempotency.as_deref(),
            )
            .map_err(refused)?,
        ),
        None => None,
    };
    let Received {
        mut content,
        held: _held,
        ..
    } = app.gate.receive(body, declared, verifier.as_mut()).await?;
    if let Some(verifier) = verifier {
        verifier
            .finish(Utc::now().timestamp(), config.signature_window)
            .map_err(refused)?;
    }
    // Authentic: only now may it hold what protects files, publish and PubAck.
    let Ok(_slot) = app.in_flight.try_acquire() else {
        tracing::warn!(limit = config.max_concurrent, "too many submissions in progress");
        return Err(Problem::unavailable());
    };
    if let Err(wait) = form.limiter.take() {
        return Err(Problem::rate_limited(Duration::from_secs(wait.as_secs().max(1) + 1)));
    }

    let limits = Limits {
        max_fields: config.max_fields,
        max_json_depth: config.max_json_depth,
        max_file_bytes: config.max_file_bytes,
    };
    let idempotency_key = match idempotency {
        Some(key) => format!("web:{requested}:{key}"),
        None => format!("web:{requested}:{}", hex::encode(content.sha256().await?)),
    };
    let mut submission = body::parse(&kind, content, limits, &app.gate).await?;
    let mapped = mapping::map(&form.config, &submission.payload)?;

    if !app.bus.is_connected() {
        tracing::warn!("submission not stored: NATS is disconnected");
        return Err(Problem::unavailable());
    }

    let store = async {
        // The files' references are known before they are stored: the
        // contact is built and size-checked first, so that a submission
        // refused here leaves no file behind that nothing points at.
        let attachments = submission
            .uploads
            .iter()
            .map(|upload| {
                let (sha256, size) = match &upload.data {
                    UploadData::Memory(data) => (Sha256::digest(data).into(), data.len() as u64),
                    UploadData::Spooled { sha256, size, .. } => (*sha256, *size),
                };
                attachment_ref(sha256, size, &upload.file_name, &upload.media_type)
            })
            .collect();
        let now = Utc::now();
        let contact = Contact {
            id: ids::contact_id(),
            received_at: Some(proto::timestamp(now)),
            channel: Channel::Web.into(),
            source: Some(Source {
                name: requested.to_owned(),
                agent_id: String::new(),
                adapter_instance: app.instance.clone(),
            }),
            claims: Some(mapped.claims),
            subject: mapped.subject,
            body: mapped.body,
            language: String::new(),
            reference: ids::reference(now),
            idempotency_key,
            details: Some(Details::Web(WebDetails {
                form_id: form.id.clone(),
                fields: mapped.fields,
                typology_hint: form.config.typology_hint.clone().unwrap_or_default(),
                submission_id: mapped.submission_id,
            })),
            attachments,
            flags: mapped.flags,
        };
        let max = app.bus.client().server_info().max_payload.saturating_sub(HEADER_ROOM);
        let size = contact.encoded_len();
        if size > max {
            return Ok(Err(Problem::too_large(format!(
                "the submission's text is {size} bytes once normalized, over the {max} bytes a contact may \
                 carry: send long content as files (multipart/form-data)"
            ))));
        }
        for upload in &mut submission.uploads {
            let (name, media) = (&upload.file_name, &upload.media_type);
            match &mut upload.data {
                UploadData::Memory(data) => app.bus.put_attachment(data, name, media).await?,
                UploadData::Spooled { file, sha256, .. } => {
                    app.bus.put_attachment_stream(file, *sha256, name, media).await?
                }
            };
        }
        let email = contact.claims.as_ref().map(|c| c.email.as_str()).unwrap_or_default();
        let who = (!email.is_empty()).then(|| pseudonym(email));
        app.bus.publish_contact(&contact).await.map(|receipt| {
            tracing::info!(
                contact_id = %receipt.contact_id,
                reference = %receipt.reference,
                usager = who.as_deref().unwrap_or("-"),
                attachments = contact.attachments.len(),
                duplicate = receipt.duplicate,
                "submission stored"
            );
            Ok(receipt)
        })
    };
    match tokio::time::timeout(config.publish_wait, store).await {
        Err(_) => {
            tracing::warn!(wait = ?config.publish_wait, "submission not stored: JetStream did not answer in time");
            Err(Problem::unavailable())
        }
        Ok(Ok(outcome)) => outcome,
        Ok(Err(e)) if e.is_transient() => {
            tracing::warn!(error = %e, "submission not stored: NATS unavailable");
            Err(Problem::unavailable())
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "submission not stored: refused by NATS");
            Err(Problem::internal())
        }
    }
}

/// The `Idempotency-Key` header, if sent: 1-200 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > 200 || !bytes.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(Problem::invalid_idempotency_key());
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

fn signature_problem(e: SignatureError, window: Duration) -> Problem {
    match e {
        SignatureError::Missing => Problem::missing_signature(),
        SignatureError::Malformed(why) => Problem::invalid_signature(format!(
            "malformed X-Guichet-Signature ({why}): expected `t=<unix seconds>,v1=<hex>` or `t=<unix seconds>,v2=<hex>`"
        )),
        SignatureError::V2Required => Problem::invalid_signature(
            "this form requires `v2=`: the hex HMAC-SHA256, keyed with the form's secret, of `<t>.`, \
             the Idempotency-Key header (empty if none), `.` and the exact bytes of the body",
        ),
        SignatureError::Mismatch => Problem::invalid_signature(
            "the signature does not match: `v1` must be the hex HMAC-SHA256, keyed with the form's secret, \
             of `<t>.` followed by the exact bytes of the body; `v2` the same of `<t>.<Idempotency-Key>.<body>`",
        ),
        SignatureError::OutsideWindow => Problem::expired_signature(window),
    }
}
