//! How the API shows a request: the record without its internals, and
//! whether it is overdue.

use chrono::{DateTime, Utc};
use guichet_core::{
    proto::v1::{RequestContact, RequestHistoryEntry, RequestStatus, RequestView},
    request::{RequestRecord, parse_outcome, parse_status, parse_transition},
};

use crate::clock;

/// Whether a deadline has passed without ANSWER or CLOSE. The clocks do
/// not run while the request waits for the usager.
pub fn is_overdue(record: &RequestRecord, now: DateTime<Utc>) -> bool {
    record.is_overdue(now)
}

/// The request as GetRequest shows it (`with_history`: ListRequests
/// leaves the history out).
pub fn view(record: &RequestRecord, with_history: bool, now: DateTime<Utc>) -> RequestView {
    let at = |s: &str| clock::parse(s).map(guichet_core::proto::timestamp);
    RequestView {
        reference: record.reference.clone(),
        service: record.service.clone(),
        typology: record.typology.clone(),
        usager_id: record.usager_id.clone(),
        channel: record.channel().into(),
        status: record.status().into(),
        opened_at: at(&record.opened_at),
        deadlines: Some(record.deadlines()),
        contacts: record
            .contacts
            .iter()
            .map(|id| RequestContact { contact_id: id.clone() })
            .collect(),
        history: if with_history { history(record) } else { Vec::new() },
        version: record.current_version(),
        outcome: parse_outcome(&record.outcome).unwrap_or_default().into(),
        first_answered_at: at(&record.first_answered_at),
        continues: record.continues.clone(),
        assigned_to: record.assigned_to.clone(),
        overdue: is_overdue(record, now),
    }
}

/// The opening, then every transition.
fn history(record: &RequestRecord) -> Vec<RequestHistoryEntry> {
    let at = |s: &str| clock::parse(s).map(guichet_core::proto::timestamp);
    let opening = RequestHistoryEntry {
        version: 1,
        transition: guichet_core::proto::v1::Transition::Open.into(),
        from_status: RequestStatus::Unspecified.into(),
        to_status: RequestStatus::Open.into(),
        agent_id: guichet_core::request::GATEWAY_AGENT.into(),
        occurred_at: at(&record.opened_at),
        to_service: String::new(),
        ..Default::default()
    };
    std::iter::once(opening)
        .chain(record.history.iter().map(|h| RequestHistoryEntry {
            version: h.version,
            transition: parse_transition(&h.transition).unwrap_or_default().into(),
            from_status: parse_status(&h.from_status).unwrap_or_default().into(),
            to_status: parse_status(&h.to_status).unwrap_or_default().into(),
            agent_id: h.agent_id.clone(),
            client: h.client.clone(),
            note: h.note.clone(),
            occurred_at: at(&h.occurred_at),
            outcome: parse_outcome(&h.outcome).unwrap_or_default().into(),
            from_service: h.from_service.clone(),
            to_service: h.to_service.clone(),
        }))
        .collect()
}
