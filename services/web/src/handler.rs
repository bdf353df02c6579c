//! `POST /v1/forms/{form}/submissions`: one submission, from the bytes on
//! the wire to the PubAck.
//!
//! The order of the checks is deliberate: the cheap ones that need no body
//! first (form, media type, declared length), then the signature over the
//! exact bytes, the rate limit (only authentic requests spend the budget),
//! parsing, mapping, and only then the bus. Nothing is written to NATS
//! before every check has passed.

use std::{collections::HashMap, sync::Arc, time::Duration};

use axum::{
    Json,
    body::Body,
    extract::{Path, State, rejection::PathRejection},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::Utc;
use guichet_core::{
    Bus,
    bus::{IntakeReceipt, subjects::is_token},
    ids,
    proto::{
        self,
        v1::{Channel, Contact, Source, WebDetails, contact::Details},
    },
};
use prost::Message;
use serde_json::json;
use sha2::{Digest, Sha256};
use tracing::{Instrument, field::Empty};

use crate::{
    body::{self, FilePart, Limits, Parsed},
    config::FormConfig,
    mapping,
    problem::Problem,
    rate_limit::Bucket,
    signature::{self, SignatureError},
};

/// One configured form, ready to serve.
pub struct Form {
    pub id: String,
    /// `None` only with `insecure_no_signature = true`.
    pub secret: Option<Vec<u8>>,
    pub config: FormConfig,
    pub bucket: Bucket,
}

/// What every request shares.
pub struct App {
    pub bus: Bus,
    pub instance: String,
    pub forms: HashMap<String, Arc<Form>>,
    pub catch_all: Option<Arc<Form>>,
    pub limits: Limits,
    pub signature_window: Duration,
    pub publish_wait: Duration,
    /// The largest encoded contact the bus takes (stream and server limits).
    pub max_contact_bytes: usize,
}

impl App {
    fn form(&self, id: &str) -> Option<&Arc<Form>> {
        if !is_token(id) {
            return None;
        }
        self.forms.get(id).or(self.catch_all.as_ref())
    }
}

/// The axum handler.
pub async fn submit(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = tokio::time::Instant::now();
    let requested = path.map(|Path(f)| f).unwrap_or_default();
    let form = app.form(&requested).cloned();
    // The metric label is a configured id, never the raw path (bounded cardinality).
    let label = form.as_ref().map_or_else(|| "unknown".to_owned(), |f| f.id.clone());
    let span = tracing::info_span!(
        "web.submission",
        form = %label,
        contact_id = Empty,
        reference = Empty,
        outcome = Empty,
    );
    let outcome = handle(&app, &requested, form, &headers, body)
        .instrument(span.clone())
        .await;
    let (response, outcome_label) = match outcome {
        Ok(receipt) => {
            span.record("contact_id", receipt.contact_id.as_str());
            span.record("reference", receipt.reference.as_str());
            let label = if receipt.duplicate { "duplicate" } else { "accepted" };
            let body = json!({
                "contact_id": receipt.contact_id,
                "reference": receipt.reference,
                "received_at": receipt.received_at,
            });
            ((StatusCode::ACCEPTED, Json(body)).into_response(), label)
        }
        Err(problem) => {
            let kind = problem.kind;
            (problem.into_response(), kind)
        }
    };
    span.record("outcome", outcome_label);
    span.in_scope(|| tracing::info!(status = response.status().as_u16(), "submission answered"));
    metrics::counter!("guichet_web_submissions_total", "form" => label.clone(), "outcome" => outcome_label)
        .increment(1);
    metrics::histogram!("guichet_web_submission_seconds", "form" => label).record(started.elapsed().as_secs_f64());
    response
}

async fn handle(
    app: &App,
    requested: &str,
    form: Option<Arc<Form>>,
    headers: &HeaderMap,
    body: Body,
) -> Result<IntakeReceipt, Problem> {
    let form = form.ok_or_else(|| Problem::unknown_form(requested))?;
    let kind = body::kind(headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes()))?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let bytes = body::read(body, declared, &app.limits).await?;

    if let Some(secret) = &form.secret {
        let header = headers.get(signature::HEADER).map(|v| v.as_bytes());
        signature::verify(secret, header, &bytes, Utc::now().timestamp(), app.signature_window).map_err(
            |e| match e {
                SignatureError::Missing => Problem::missing_signature(),
                SignatureError::Malformed(why) => {
                    Problem::invalid_signature(format!("malformed X-Guichet-Signature: {why}"))
                }
                SignatureError::Mismatch => Problem::invalid_signature(
                    "the signature does not match this body (HMAC-SHA256 of \"<t>.<raw body>\" with the \
                     form's secret, lower-case hex)",
                ),
                SignatureError::Expired => Problem::expired_signature(app.signature_window),
            },
        )?;
    }
    form.bucket.take().map_err(Problem::rate_limited)?;

    let idempotency_key = idempotency_key(requested, headers, &bytes)?;
    let parsed = body::parse(&kind, bytes, &app.limits).await?;
    let mapped = mapping::apply(&form.config, &parsed)?;
    let files = match parsed {
        Parsed::Form { files, .. } => files,
        Parsed::Json(_) => Vec::new(),
    };

    let now = Utc::now();
    let contact = Contact {
        id: ids::contact_id(),
        received_at: Some(proto::timestamp(now)),
        channel: Channel::Web as i32,
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
            form_id: requested.to_owned(),
            fields: mapped.fields,
            typology_hint: form.config.typology_hint.clone().unwrap_or_default(),
            submission_id: mapped.submission_id,
        })),
        attachments: Vec::new(),
        flags: mapped.flags,
    };
    // Each attachment adds its reference: key and digest (2 x 71), name, type, size.
    let estimated = contact.encoded_len()
        + files
            .iter()
            .map(|f| 160 + f.file_name.len().min(800) + f.media_type.len())
            .sum::<usize>();
    if estimated > app.max_contact_bytes {
        return Err(Problem::too_large(format!(
            "the submission's text is over {} bytes once normalized: send long content as files",
            app.max_contact_bytes
        )));
    }

    if !app.bus.is_connected() {
        tracing::warn!("NATS disconnected: answering 503");
        return Err(Problem::unavailable());
    }
    let store = store(&app.bus, contact, files);
    match tokio::time::timeout(app.publish_wait, store).await {
        Ok(Ok(receipt)) => Ok(receipt),
        Ok(Err(e)) if e.is_transient() => {
            tracing::warn!(error = %e, "submission not stored: answering 503");
            Err(Problem::unavailable())
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "submission refused by the bus");
            Err(Problem::internal())
        }
        Err(_) => {
            tracing::warn!(wait = ?app.publish_wait, "no PubAck in time: answering 503");
            Err(Problem::unavailable())
        }
    }
}

/// Files first (the contact refers to them), then the contact.
async fn store(bus: &Bus, mut contact: Contact, files: Vec<FilePart>) -> Result<IntakeReceipt, guichet_core::Error> {
    for file in files {
        let reference = bus
            .put_attachment(&file.data, &file.file_name, &file.media_type)
            .await?;
        contact.attachments.push(reference);
    }
    bus.publish_contact(&contact).await
}

/// `web:<form>:<Idempotency-Key>`, or `web:<form>:<sha256 of the body>`.
fn idempotency_key(form: &str, headers: &HeaderMap, body: &[u8]) -> Result<String, Problem> {
    match headers.get("idempotency-key") {
        Some(value) => {
            let v = value.as_bytes();
            if v.is_empty() || v.len() > 200 || !v.iter().all(|b| (0x21..=0x7e).contains(b)) {
                return Err(Problem::invalid_idempotency_key());
            }
            Ok(format!("web:{form}:{}", String::from_utf8_lossy(v)))
        }
        None => Ok(format!("web:{form}:{}", hex::encode(Sha256::digest(body)))),
    }
}

/// Any other path.
pub async fn not_found() -> Response {
    Problem::not_found().into_response()
}

/// Any other method on the submissions path.
pub async fn method_not_allowed() -> Response {
    Problem::method_not_allowed().into_response()
}
