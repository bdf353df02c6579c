//! Follow-ups meet the lifecycle: a contact on a request that waits for
//! the usager resumes it; on a closed request it reopens it within
//! `router.reopen_window`, and after that opens a new request that
//! references the closed one. The transitions are made by agent
//! `guichet`, with the contact id as their idempotency id, so a
//! redelivered contact does not apply them twice.

use std::time::Duration;

use chrono::Utc;
use guichet_core::{
    Bus,
    proto::v1::{Contact, Transition},
    request::{GATEWAY_AGENT, RequestRecord},
};
use guichet_requests::{RequestsError, events, store};

use crate::RouterError;

/// Whether a follow-up joins `request`: not when it was closed more than
/// `window` ago; then `continues` is set to its reference, for the new
/// request the contact opens.
pub fn joins(request: &RequestRecord, window: Duration, continues: &mut String) -> bool {
    if request.status != "closed" {
        return true;
    }
    let closed_at = request
        .history
        .iter()
        .rev()
        .find(|h| h.transition == "close")
        .and_then(|h| chrono::DateTime::parse_from_rfc3339(&h.occurred_at).ok());
    let window = chrono::Duration::from_std(window).unwrap_or(chrono::TimeDelta::MAX);
    match closed_at {
        Some(at) if Utc::now().signed_duration_since(at) > window => {
            continues.clone_from(&request.reference);
            false
        }
        _ => true,
    }
}

/// After `contact` joined `reference`: RESUME a request waiting for the
/// usager, REOPEN a closed one. `rules`: the rules the contact is routed
/// with (their calendar counts the time waited).
pub async fn move_on(
    bus: &Bus,
    reference: &str,
    status: &str,
    contact: &Contact,
    rules: Option<&guichet_rules::RuleSet>,
) -> Result<(), RouterError> {
    let transition = match status {
        "waiting_usager" => Transition::Resume,
        "closed" => Transition::Reopen,
        _ => return Ok(()),
    };
    let change = store::Change {
        transition,
        agent_id: GATEWAY_AGENT.into(),
        client: String::new(),
        client_request_id: format!("contact:{}", contact.id),
        note: format!("the usager wrote again (contact {})", contact.id),
        expected_version: None,
        outcome: Default::default(),
        to_service: String::new(),
        notify_usager: false,
        documents: Vec::new(),
    };
    let stream = events::events_stream(bus).await?;
    let allow = |_: &str| Ok(());
    let rules = rules.map_or(
        guichet_requests::clock::Rules::Builtin,
        guichet_requests::clock::Rules::Given,
    );
    match store::update(bus, &stream, reference, &change, &allow, rules, Utc::now()).await {
        Ok(_) => {
            metrics::counter!("guichet_router_follow_up_transitions_total",
                "transition" => guichet_core::request::transition_token(transition))
            .increment(1);
            Ok(())
        }
        // An agent moved the request meanwhile: the contact still joined it.
        Err(RequestsError::NotAllowed { status, .. }) => {
            tracing::info!(%reference, status, "follow-up: the request is no longer waiting or closed");
            Ok(())
        }
        Err(RequestsError::Core(e)) => Err(RouterError::Core(e)),
        Err(e) => Err(RouterError::Requests(format!("follow-up of request {reference}: {e}"))),
    }
}
