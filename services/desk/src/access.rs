//! The access journal: every page of a usager's history that desk returns
//! is first recorded as a `history_read` event on
//! `guichet.events.history_read` (the EVENTS stream, kept as long as
//! ROUTED), so that the town hall can say afterwards who read whose
//! history and when (CNIL: traceability of access to personal data).
//!
//! The event holds the site (the token's), the agent id the caller gave,
//! the usager ids, how many contacts were returned and when: no name,
//! e-mail, phone or content, and not the identifier that was looked up.
//! A read that cannot be recorded is refused: no untraced read.

use bytes::Bytes;
use chrono::{SecondsFormat, Utc};
use guichet_core::bus::subjects;
use tonic::Status;

use crate::{auth::Site, config::HistoryScope, state::State, status::bus_status};

/// The event kind, and the last token of its subject.
pub const HISTORY_READ: &str = "history_read";

/// One history page about to be returned.
pub struct HistoryRead<'a> {
    pub site: &'a Site,
    /// As the caller gave it (may be empty).
    pub agent_id: &'a str,
    /// The usager, then the ids merged into it.
    pub usager_ids: &'a [String],
    /// `usager_id`, `email` or `phone`: how the usager was designated (not
    /// the value).
    pub looked_up_by: &'static str,
    pub scope: HistoryScope,
    pub contacts: usize,
    /// Whether this was the first (newest) page.
    pub first_page: bool,
}

/// Publishes the event and waits for JetStream's PubAck; UNAVAILABLE (or
/// the broker's refusal) when it cannot be stored: the caller then returns
/// nothing.
pub async fn record(state: &State, read: &HistoryRead<'_>) -> Result<(), Status> {
    let (usager_id, merged) = match read.usager_ids.split_first() {
        Some((first, rest)) => (first.as_str(), rest),
        None => ("", &[][..]),
    };
    let event = serde_json::json!({
        "kind": HISTORY_READ,
        "site": read.site.0,
        "agent_id": read.agent_id,
        "usager_id": usager_id,
        "merged_usager_ids": merged,
        "looked_up_by": read.looked_up_by,
        "scope": read.scope.as_str(),
        "contacts": read.contacts,
        "first_page": read.first_page,
        "instance": state.instance,
        "at": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
    });
    // A fresh id per read: two identical reads are two accesses.
    let msg_id = format!("history-read-{}", guichet_core::ids::contact_id());
    match state
        .bus
        .publish(subjects::event(HISTORY_READ), &msg_id, Bytes::from(event.to_string()))
        .await
    {
        Ok(_) => {
            metrics::counter!("guichet_desk_history_reads_recorded_total", "site" => read.site.0.clone()).increment(1);
            Ok(())
        }
        Err(e) => {
            metrics::counter!("guichet_desk_history_reads_unrecorded_total").increment(1);
            if e.is_transient() {
                tracing::warn!(site = %read.site.0, error = %e, "history read refused: the access journal could not record it");
                Err(Status::unavailable(
                    "the read could not be recorded in the access journal (the message broker is unavailable), \
                     so nothing was returned; retry with backoff",
                ))
            } else {
                Err(bus_status(&e, "recording the history read"))
            }
        }
    }
}
