//! `POST /v1/forms/{form}/submissions`: one submission in, one contact on
//! `guichet.intake.web`, and a 202 only once JetStream has stored it.
//!
//! The order of the checks is deliberate: what costs nothing comes first
//! (form, media type, declared length), the body is read bounded in size
//! and time, its signature is checked on the exact bytes received before
//! anything parses them, then the rate limit (authentic submissions only
//! count against a form's budget), parsing, mapping, files and publish.

use std::{sync::Arc, time::Duration};

use axum::{
    Json,
    body::Body,
    extract::{Path, State, rejection::PathRejection},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::{Bytes, BytesMut};
use chrono::Utc;
use futures::StreamExt;
use guichet_core::{
    bus::IntakeReceipt,
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
    body::{self, BodyKind, Limits},
    mapping,
    problem::Problem,
    signature::{self, SignatureError},
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
        let Ok(_permit) = app.in_flight.try_acquire() else {
            tracing::warn!(limit = app.config.max_concurrent, "too many submissions in progress");
            return Err(Problem::unavailable());
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
        return Err(too_large(config.max_request_bytes));
    }
    let bytes = tokio::time::timeout(config.body_timeout, read_body(body, config.max_request_bytes))
        .await
        .map_err(|_| Problem::request_timeout())??;

    if let Some(key) = &form.key {
        let signed = signature::Signed {
            header: headers.get(signature::HEADER).map(|v| v.as_bytes()),
            idempotency_key: idempotency.as_deref(),
            body: &bytes,
        };
        let scheme = form.config.signature_scheme;
        signature::verify(key, scheme, signed, Utc::now().timestamp(), config.signature_window).map_err(|e| {
            tracing::info!(reason = ?e, "submission refused: signature");
            signature_problem(e, config.signature_window)
        })?;
    }
    if let Err(wait) = form.limiter.take() {
        return Err(Problem::rate_limited(Duration::from_secs(wait.as_secs().max(1) + 1)));
    }

    let limits = Limits {
        max_fields: config.max_fields,
        max_json_depth: config.max_json_depth,
        max_file_bytes: config.max_file_bytes,
    };
    let submission = body::parse(&kind, bytes.clone(), limits).await?;
    let mapped = mapping::map(&form.config, &submission.payload)?;

    let idempotency_key = match idempotency {
        Some(key) => format!("web:{requested}:{key}"),
        None => format!("web:{requested}:{}", hex::encode(Sha256::digest(&bytes))),
    };
    if !app.bus.is_connected() {
        tracing::warn!("submission not stored: NATS is disconnected");
        return Err(Problem::unavailable());
    }

    let store = async {
        let mut attachments = Vec::with_capacity(submission.uploads.len());
        for upload in &submission.uploads {
            attachments.push(
                app.bus
                    .put_attachment(&upload.data, &upload.file_name, &upload.media_type)
                    .await?,
            );
        }
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

/// Reads the body, refusing it as soon as it passes `limit` bytes.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, Problem> {
    let mut stream = body.into_data_stream();
    let mut buffer = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| Problem::malformed("the body could not be read to its end"))?;
        if buffer.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok(buffer.freeze())
}

fn too_large(limit: usize) -> Problem {
    Problem::too_large(format!("the body is larger than the limit of {limit} bytes"))
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
