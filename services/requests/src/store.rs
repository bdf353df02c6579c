//! Reading a request and applying one transition to it.
//!
//! An update is: read the record and its KV revision; make sure the
//! journal has the event of the current version ([`events::ensure_published`]);
//! check idempotency, version and state machine; write the new version
//! with the revision it was read at (another writer meanwhile: read again
//! and decide again); publish the new version's event. Nothing is written
//! when a check fails.

use async_nats::jetstream::{
    kv::{self, Operation, UpdateErrorKind},
    stream::Stream,
};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use guichet_core::{
    Bus, Error,
    ids::parse_reference,
    proto::v1::{Outcome, RequestStatus, Transition},
    request::{HistoryRecord, RequestRecord, outcome_token, request_key, status_token, transition_token},
};

use crate::{RequestsError, clock, events, lifecycle};

/// One transition asked for.
#[derive(Debug, Clone)]
pub struct Change {
    pub transition: Transition,
    /// An agent id, or [`guichet_core::request::GATEWAY_AGENT`].
    pub agent_id: String,
    /// The back-office client that called (empty for the gateway).
    pub client: String,
    pub client_request_id: String,
    pub note: String,
    /// The version the caller read, if it wants the check.
    pub expected_version: Option<u64>,
    pub outcome: Outcome,
    pub to_service: String,
    /// Tell the usager by e-mail (REQUEST_DOCUMENTS, ANSWER, CLOSE).
    pub notify_usager: bool,
    /// REQUEST_DOCUMENTS: the pieces asked for.
    pub documents: Vec<String>,
}

/// At most this many documents asked for in one REQUEST_DOCUMENTS.
pub const MAX_DOCUMENTS: usize = 20;
/// The longest name of one document asked for.
pub const MAX_DOCUMENT_LEN: usize = 200;

/// What is wrong with a change's `notify_usager` and `documents`, as
/// (field, reason): a status message exists for REQUEST_DOCUMENTS, ANSWER
/// and CLOSE only; documents go with REQUEST_DOCUMENTS, a bounded list.
pub fn check_notice(transition: Transition, notify_usager: bool, documents: &[String]) -> Vec<(&'static str, String)> {
    let mut problems = Vec::new();
    let told = [Transition::RequestDocuments, Transition::Answer, Transition::Close];
    if notify_usager && !told.contains(&transition) {
        problems.push((
            "notify_usager",
            "only REQUEST_DOCUMENTS, ANSWER and CLOSE send the usager a status message".to_owned(),
        ));
    }
    if !documents.is_empty() && transition != Transition::RequestDocuments {
        problems.push((
            "documents",
            "only REQUEST_DOCUMENTS takes a list of documents".to_owned(),
        ));
    } else if documents.len() > MAX_DOCUMENTS {
        problems.push((
            "documents",
            format!(
                "{} documents, over the limit of {MAX_DOCUMENTS}: group them",
                documents.len()
            ),
        ));
    } else if let Some(i) = documents.iter().position(|d| {
        let d = d.trim();
        d.is_empty() || d.chars().count() > MAX_DOCUMENT_LEN || d.chars().any(char::is_control)
    }) {
        problems.push((
            "documents",
            format!("documents[{i}]: 1 to {MAX_DOCUMENT_LEN} characters, no control characters"),
        ));
    }
    problems
}

/// What an update did.
#[derive(Debug, Clone)]
pub struct Applied {
    pub record: RequestRecord,
    /// The version the change produced (on a retry, the first call's).
    pub version: u64,
    /// A retry of a change already applied: nothing changed.
    pub duplicate: bool,
}

fn store_error(what: &str, e: impl std::fmt::Display) -> RequestsError {
    RequestsError::Core(Error::Unavailable(format!("{what}: {e}")))
}

/// The canonical reference, or INVALID_ARGUMENT.
pub fn canonical_reference(reference: &str) -> Result<String, RequestsError> {
    if reference.trim().is_empty() {
        return Err(RequestsError::Invalid {
            field: "reference",
            reason: "required: the request's reference, e.g. 2026-7K3F-9QXM".into(),
        });
    }
    parse_reference(reference).ok_or_else(|| RequestsError::Invalid {
        field: "reference",
        reason: format!(
            "`{}` is not a reference (YYYY-XXXX-XXXX)",
            guichet_desk::status::printable(reference, 40)
        ),
    })
}

/// The record of `reference` (following the alias a follow-up's own
/// reference became) and its KV revision.
pub async fn read(kv: &kv::Store, reference: &str) -> Result<Option<(RequestRecord, u64)>, RequestsError> {
    if let Some(found) = read_key(kv, reference).await? {
        return Ok(Some(found));
    }
    let alias = kv
        .get(format!("alias.{reference}"))
        .await
        .map_err(|e| store_error("reading a reference alias", e))?;
    match alias {
        Some(target) => read_key(kv, &String::from_utf8_lossy(&target)).await,
        None => Ok(None),
    }
}

async fn read_key(kv: &kv::Store, reference: &str) -> Result<Option<(RequestRecord, u64)>, RequestsError> {
    let key = request_key(reference);
    let entry = kv
        .entry(key.as_str())
        .await
        .map_err(|e| store_error("reading a request", e))?;
    match entry {
        Some(entry) if entry.operation == Operation::Put => {
            let record = serde_json::from_slice(&entry.value).map_err(|e| RequestsError::Corrupt {
                key,
                reason: e.to_string(),
            })?;
            Ok(Some((record, entry.revision)))
        }
        _ => Ok(None),
    }
}

/// The history entry a retry of `change` finds: same client, same id.
fn first_answer<'r>(record: &'r RequestRecord, change: &Change) -> Option<&'r HistoryRecord> {
    if change.client_request_id.is_empty() {
        return None;
    }
    record
        .history
        .iter()
        .rev()
        .find(|h| h.client == change.client && h.client_request_id == change.client_request_id)
}

/// Applies `change` to `reference`. `allowed` says whether the caller may
/// touch a request of a service (PERMISSION_DENIED is the caller's to
/// raise: it returns the error to give).
pub async fn update(
    bus: &Bus,
    events_stream: &Stream,
    reference: &str,
    change: &Change,
    allowed: &(dyn Fn(&str) -> Result<(), tonic::Status> + Send + Sync),
    rules: clock::Rules<'_>,
    now: DateTime<Utc>,
) -> Result<Result<Applied, tonic::Status>, RequestsError> {
    let kv = &bus.stores().requests;
    // Read once, and only when a suspension ends.
    let mut resolved = None;
    // Bounded: each round lost to another writer re-reads; an agent's
    // version check turns a real conflict into ABORTED on the next read.
    for _ in 0..16 {
        let Some((record, revision)) = read(kv, reference).await? else {
            return Err(RequestsError::NotFound(reference.to_owned()));
        };
        // The journal gets version n before version n+1 is written.
        events::ensure_published(bus, events_stream, &record).await?;
        if let Some(first) = first_answer(&record, change) {
            if first.transition != transition_token(change.transition) {
                return Err(RequestsError::Invalid {
                    field: "client_request_id",
                    reason: format!(
                        "already used for a {} of this request (version {}): use a new id for a new change",
                        first.transition, first.version
                    ),
                });
            }
            let version = first.version;
            return Ok(Ok(Applied {
                record,
                version,
                duplicate: true,
            }));
        }
        if let Err(denied) = allowed(&record.service) {
            return Ok(Err(denied));
        }
        if let Some(expected) = change.expected_version
            && expected != record.current_version()
        {
            return Err(RequestsError::StaleVersion {
                expected,
                current: record.current_version(),
            });
        }
        let from = record.status();
        let Some(to) = lifecycle::next(from, change.transition) else {
            let allowed_now = lifecycle::allowed_from(from);
            return Err(RequestsError::NotAllowed {
                transition: transition_token(change.transition),
                status: status_token(from),
                allowed: if allowed_now.is_empty() {
                    "nothing".into()
                } else {
                    allowed_now
                        .iter()
                        .map(|t| transition_token(*t).to_uppercase())
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            });
        };
        if change.transition == Transition::Transfer && change.to_service == record.service {
            return Err(RequestsError::Invalid {
                field: "to_service",
                reason: format!("the request is already in service `{}`", record.service),
            });
        }
        if from == RequestStatus::WaitingUsager && resolved.is_none() {
            resolved = Some(rules.resolve(bus).await?);
        }
        let next = advance(record, change, from, to, resolved.as_ref(), now);
        let value = Bytes::from(serde_json::to_vec(&next).map_err(|e| RequestsError::Corrupt {
            key: request_key(&next.reference),
            reason: format!("encoding: {e}"),
        })?);
        match kv.update(request_key(&next.reference), value, revision).await {
            Ok(_) => {}
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                metrics::counter!("guichet_requests_update_conflicts_total").increment(1);
                continue;
            }
            Err(e) => return Err(store_error("writing the request", e)),
        }
        if change.transition == Transition::Transfer {
            events::publish_transfer(bus, &next).await?;
        }
        events::publish(bus, &next).await?;
        let version = next.current_version();
        return Ok(Ok(Applied {
            record: next,
            version,
            duplicate: false,
        }));
    }
    Err(store_error(
        "updating the request",
        "too many concurrent updates; retry with the same client_request_id",
    ))
}

/// The record after `change`: status, history, clocks.
fn advance(
    mut record: RequestRecord,
    change: &Change,
    from: RequestStatus,
    to: RequestStatus,
    rules: Option<&clock::Resolved<'_>>,
    now: DateTime<Utc>,
) -> RequestRecord {
    let version = record.current_version() + 1;
    let mut entry = HistoryRecord {
        version,
        transition: transition_token(change.transition).into(),
        from_status: status_token(from).into(),
        to_status: status_token(to).into(),
        agent_id: change.agent_id.clone(),
        client: change.client.clone(),
        client_request_id: change.client_request_id.clone(),
        note: change.note.clone(),
        notify_usager: change.notify_usager,
        documents: change.documents.clone(),
        occurred_at: clock::rfc3339(now),
        ..Default::default()
    };
    match change.transition {
        Transition::Take => record.assigned_to = change.agent_id.clone(),
        Transition::RequestDocuments => record.suspended_since = clock::rfc3339(now),
        Transition::Answer if record.first_answered_at.is_empty() => {
            record.first_answered_at = clock::rfc3339(now);
        }
        Transition::Close => {
            entry.outcome = outcome_token(change.outcome).into();
            record.outcome = entry.outcome.clone();
        }
        Transition::Reopen => {
            record.outcome.clear();
            record.assigned_to.clear();
        }
        Transition::Transfer => {
            entry.from_service = record.service.clone();
            entry.to_service = change.to_service.clone();
            record.service = change.to_service.clone();
            record.assigned_to.clear();
        }
        _ => {}
    }
    // Leaving WAITING_USAGER (RESUME, or CLOSE while waiting): the
    // engagement clock gets the waiting time back; on RESUME the legal
    // clock starts again from now (the pieces arrived).
    if from == RequestStatus::WaitingUsager
        && let Some(rules) = rules
    {
        resume_clocks(&mut record, now, change.transition == Transition::Resume, rules);
    }
    record.status = status_token(to).into();
    record.version = version;
    record.history.push(entry);
    record
}

/// Ends a suspension at `now`: the engagement deadline gets the time
/// waited back on the rules' calendar, in its own unit (business days,
/// calendar days or hours): the one recorded when the request opened,
/// else (older records) the deciding rule's, else inferred from the due time.
pub fn resume_clocks(record: &mut RequestRecord, now: DateTime<Utc>, restart_legal: bool, rules: &clock::Resolved<'_>) {
    if let Some(since) = clock::parse(&record.suspended_since) {
        let waited = now.signed_duration_since(since).max(chrono::TimeDelta::zero());
        record.suspended_seconds = record
            .suspended_seconds
            .saturating_add(u64::try_from(waited.num_seconds()).unwrap_or(0));
        if let Some(due) = clock::parse(&record.due_at) {
            let deadline = guichet_rules::Deadline::parse(&record.deadline)
                .ok()
                .or_else(|| rules.deadline_of(&record.rule_id));
            let moved = rules.calendar().after_suspension(due, deadline, since, now);
            record.due_at = clock::rfc3339(moved.at);
            record.due_date = moved.date_string();
        }
    }
    record.suspended_since.clear();
    if restart_legal && let Ok(delay) = clock::LegalDelay::parse(&record.legal_delay) {
        record.legal_due_at = clock::rfc3339(delay.after(now));
    }
}
