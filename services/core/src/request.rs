//! The request record (`ref.<reference>` in `guichet_requests`) and its
//! journal event.
//!
//! The router opens a request and adds contacts to it; the `requests`
//! service moves it through its lifecycle. Both read and write the whole
//! record with a revision check, so the type lives here, below both: a
//! field one of them did not know would otherwise be dropped by its next
//! write.

use serde::{Deserialize, Serialize};

use crate::proto::{
    self,
    v1::{
        Channel, DeadlineAlert, DeadlineKind, Deadlines, ImplicitDecision, Outcome, RequestEvent, RequestStatus,
        Transition,
    },
};

/// One request: what a reference stands for.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RequestRecord {
    pub reference: String,
    pub service: String,
    pub usager_id: String,
    pub typology: String,
    /// The engagement deadline, RFC 3339, with the time spent waiting for
    /// the usager added back; empty when the rules gave no deadline.
    pub due_at: String,
    pub due_date: String,
    /// The engagement deadline as the rule that decided it wrote it
    /// ("48 hours", "10 business days"): RESUME gives the time waited back
    /// in its unit even once that rule is gone. Empty on records written
    /// before it was kept (the unit is then inferred) or without a deadline.
    pub deadline: String,
    /// [`status_token`] of the status: "open" when created.
    pub status: String,
    /// The contact that opened it.
    pub opened_by: String,
    /// RFC 3339.
    pub opened_at: String,
    pub rule_id: String,
    pub rules_revision: u64,
    /// Every contact of the request, in arrival order.
    pub contacts: Vec<String>,
    /// SHA-256 (hex) of the Message-IDs of its e-mails.
    pub message_ids: Vec<String>,
    /// The channel token of the contact that opened it ("web", "email" ...).
    pub channel: String,
    /// Increases by one on every transition; 1 when opened. Records
    /// written before the lifecycle existed read as 0 and count as 1.
    pub version: u64,
    /// Every transition after the opening, oldest first.
    pub history: Vec<HistoryRecord>,
    /// Set by CLOSE ("granted" ...), cleared by REOPEN.
    pub outcome: String,
    /// RFC 3339, the first ANSWER.
    pub first_answered_at: String,
    /// The agent who took it.
    pub assigned_to: String,
    /// The legal deadline, RFC 3339, for demands with an implicit decision.
    pub legal_due_at: String,
    /// "acceptance" or "rejection" when the demand has an implicit decision.
    pub implicit_decision: String,
    /// The delay of the implicit decision ("2 months"), to restart the
    /// legal clock on RESUME.
    pub legal_delay: String,
    /// RFC 3339, set while waiting for the usager.
    pub suspended_since: String,
    /// Seconds spent waiting for the usager so far (already in `due_at`).
    pub suspended_seconds: u64,
    /// The closed request this one continues, if any.
    pub continues: String,
    /// RFC 3339: when the SMTP server took the accusé de réception (`250`).
    pub acknowledged_at: String,
    /// From the receipt of the contact to that `250` (the indicator).
    pub receipt_to_acknowledgment_seconds: f64,
}

/// One transition, as the record keeps it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct HistoryRecord {
    pub version: u64,
    /// [`transition_token`].
    pub transition: String,
    pub from_status: String,
    pub to_status: String,
    pub agent_id: String,
    pub client: String,
    /// The caller's idempotency id: a retry finds its first answer here.
    pub client_request_id: String,
    pub note: String,
    /// RFC 3339.
    pub occurred_at: String,
    pub outcome: String,
    pub from_service: String,
    pub to_service: String,
    /// The agent asked notify to tell the usager of this transition.
    pub notify_usager: bool,
    /// REQUEST_DOCUMENTS: the pieces asked for (for the usager's message).
    pub documents: Vec<String>,
}

/// The KV key of a request.
pub fn request_key(reference: &str) -> String {
    format!("ref.{reference}")
}

/// The agent id of the gateway's own transitions.
pub const GATEWAY_AGENT: &str = "guichet";

pub fn status_token(status: RequestStatus) -> &'static str {
    match status {
        RequestStatus::Unspecified => "unspecified",
        RequestStatus::Open => "open",
        RequestStatus::Taken => "taken",
        RequestStatus::WaitingUsager => "waiting_usager",
        RequestStatus::Answered => "answered",
        RequestStatus::Closed => "closed",
    }
}

pub fn parse_status(token: &str) -> Option<RequestStatus> {
    [
        RequestStatus::Open,
        RequestStatus::Taken,
        RequestStatus::WaitingUsager,
        RequestStatus::Answered,
        RequestStatus::Closed,
    ]
    .into_iter()
    .find(|s| status_token(*s) == token)
}

/// The subject token of a transition (`guichet.events.request.<token>.<reference>`).
pub fn transition_token(transition: Transition) -> &'static str {
    match transition {
        Transition::Unspecified => "unspecified",
        Transition::Take => "take",
        Transition::RequestDocuments => "request_documents",
        Transition::Resume => "resume",
        Transition::Answer => "answer",
        Transition::Close => "close",
        Transition::Reopen => "reopen",
        Transition::Transfer => "transfer",
        Transition::Open => "open",
    }
}

pub fn parse_transition(token: &str) -> Option<Transition> {
    [
        Transition::Take,
        Transition::RequestDocuments,
        Transition::Resume,
        Transition::Answer,
        Transition::Close,
        Transition::Reopen,
        Transition::Transfer,
        Transition::Open,
    ]
    .into_iter()
    .find(|t| transition_token(*t) == token)
}

pub fn outcome_token(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Unspecified => "",
        Outcome::Granted => "granted",
        Outcome::Refused => "refused",
        Outcome::Informed => "informed",
        Outcome::Redirected => "redirected",
        Outcome::Withdrawn => "withdrawn",
        Outcome::NoAction => "no_action",
    }
}

pub fn parse_outcome(token: &str) -> Option<Outcome> {
    [
        Outcome::Granted,
        Outcome::Refused,
        Outcome::Informed,
        Outcome::Redirected,
        Outcome::Withdrawn,
        Outcome::NoAction,
    ]
    .into_iter()
    .find(|o| outcome_token(*o) == token)
}

pub fn alert_token(alert: DeadlineAlert) -> &'static str {
    match alert {
        DeadlineAlert::Unspecified => "unspecified",
        DeadlineAlert::DueSoon => "due_soon",
        DeadlineAlert::Overdue => "overdue",
    }
}

/// `guichet.events.request.<kind>.<reference>`.
pub fn event_subject(kind: &str, reference: &str) -> String {
    crate::bus::subjects::event(&format!("request.{kind}.{reference}"))
}

/// The `Nats-Msg-Id` of the event of a version: one event per version.
pub fn event_msg_id(reference: &str, version: u64) -> String {
    format!("{reference}:{version}")
}

fn timestamp_of(rfc3339: &str) -> Option<pbjson_types::Timestamp> {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .ok()
        .map(|t| proto::timestamp(t.with_timezone(&chrono::Utc)))
}

impl RequestRecord {
    /// The version, counting a record written before versions as 1.
    pub fn current_version(&self) -> u64 {
        self.version.max(1)
    }

    pub fn status(&self) -> RequestStatus {
        parse_status(&self.status).unwrap_or(RequestStatus::Open)
    }

    pub fn channel(&self) -> Channel {
        Channel::from_token(&self.channel).unwrap_or(Channel::Unspecified)
    }

    /// Whether a deadline has passed without ANSWER or CLOSE. The clocks
    /// do not run while the request waits for the usager.
    pub fn is_overdue(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        if !matches!(self.status(), RequestStatus::Open | RequestStatus::Taken) {
            return false;
        }
        [&self.due_at, &self.legal_due_at]
            .into_iter()
            .filter_map(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
            .any(|due| due < now)
    }

    /// Both clocks, as the contract shows them.
    pub fn deadlines(&self) -> Deadlines {
        Deadlines {
            engagement_due_at: timestamp_of(&self.due_at),
            engagement_due_date: self.due_date.clone(),
            legal_due_at: timestamp_of(&self.legal_due_at),
            implicit_decision: match self.implicit_decision.as_str() {
                "acceptance" => ImplicitDecision::Acceptance,
                "rejection" => ImplicitDecision::Rejection,
                _ => ImplicitDecision::Unspecified,
            }
            .into(),
            suspended_since: timestamp_of(&self.suspended_since),
            suspended: (self.suspended_seconds > 0).then(|| pbjson_types::Duration {
                seconds: i64::try_from(self.suspended_seconds).unwrap_or(i64::MAX),
                nanos: 0,
            }),
        }
    }

    /// The transition that produced the current version: the last history
    /// entry, or the opening.
    pub fn last_transition(&self) -> Option<&HistoryRecord> {
        self.history.last().filter(|h| h.version == self.current_version())
    }

    /// The journal event of the current version.
    pub fn event(&self) -> RequestEvent {
        let mut event = RequestEvent {
            reference: self.reference.clone(),
            service: self.service.clone(),
            typology: self.typology.clone(),
            channel: self.channel().into(),
            usager_id: self.usager_id.clone(),
            opened_at: timestamp_of(&self.opened_at),
            deadlines: Some(self.deadlines()),
            version: self.current_version(),
            outcome: parse_outcome(&self.outcome).unwrap_or_default().into(),
            first_answered_at: timestamp_of(&self.first_answered_at),
            ..Default::default()
        };
        match self.last_transition() {
            Some(h) => {
                event.transition = parse_transition(&h.transition).unwrap_or_default().into();
                event.from_status = parse_status(&h.from_status).unwrap_or_default().into();
                event.to_status = parse_status(&h.to_status).unwrap_or_default().into();
                event.agent_id = h.agent_id.clone();
                event.client = h.client.clone();
                event.occurred_at = timestamp_of(&h.occurred_at);
                event.from_service = h.from_service.clone();
                event.notify_usager = h.notify_usager;
            }
            None => {
                event.transition = Transition::Open.into();
                event.to_status = RequestStatus::Open.into();
                event.agent_id = GATEWAY_AGENT.into();
                event.occurred_at = timestamp_of(&self.opened_at);
            }
        }
        event
    }

    /// The subject token of the current version's event.
    pub fn event_kind(&self) -> &str {
        self.last_transition().map_or("open", |h| h.transition.as_str())
    }

    /// A deadline alert about this request (no transition, no version change).
    pub fn alert(&self, alert: DeadlineAlert, kind: DeadlineKind, at: chrono::DateTime<chrono::Utc>) -> RequestEvent {
        RequestEvent {
            transition: Transition::Unspecified.into(),
            from_status: self.status().into(),
            to_status: self.status().into(),
            agent_id: GATEWAY_AGENT.into(),
            client: String::new(),
            occurred_at: Some(proto::timestamp(at)),
            from_service: String::new(),
            alert: alert.into(),
            deadline_kind: kind.into(),
            ..self.event()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        for s in [
            RequestStatus::Open,
            RequestStatus::Taken,
            RequestStatus::WaitingUsager,
            RequestStatus::Answered,
            RequestStatus::Closed,
        ] {
            assert_eq!(parse_status(status_token(s)), Some(s));
        }
        for t in [
            Transition::Take,
            Transition::RequestDocuments,
            Transition::Resume,
            Transition::Answer,
            Transition::Close,
            Transition::Reopen,
            Transition::Transfer,
            Transition::Open,
        ] {
            assert_eq!(parse_transition(transition_token(t)), Some(t));
        }
        assert_eq!(parse_outcome("no_action"), Some(Outcome::NoAction));
        assert_eq!(parse_outcome(""), None);
    }

    #[test]
    fn a_record_written_before_the_lifecycle_reads_as_version_one_opened() {
        let old = r#"{"reference":"2026-AAAA-BBBB","service":"voirie","usager_id":"U1","typology":"t",
            "due_at":"","due_date":"","status":"open","opened_by":"C1","opened_at":"2026-03-02T09:00:00Z",
            "rule_id":"r","rules_revision":3,"contacts":["C1"],"message_ids":[]}"#;
        let record: RequestRecord = serde_json::from_str(old).unwrap();
        assert_eq!(record.current_version(), 1);
        assert_eq!(record.status(), RequestStatus::Open);
        let event = record.event();
        assert_eq!(event.transition(), Transition::Open);
        assert_eq!(event.version, 1);
        assert_eq!(record.event_kind(), "open");
        assert_eq!(
            event_subject("open", "2026-AAAA-BBBB"),
            "guichet.events.request.open.2026-AAAA-BBBB"
        );
    }
}
