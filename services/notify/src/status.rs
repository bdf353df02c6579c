//! Status messages: when an update asks for it (`notify_usager` on
//! UpdateRequest), the usager is told that documents are requested (with
//! the agent's list), that the request was answered, or that it was
//! closed (with the outcome).
//!
//! notify's durable consumer `notify-status` reads the request journal on
//! EVENTS (`guichet.events.request.<transition>.<reference>`, new events
//! only) for those three transitions. The documents come from the request
//! record (they are kept off the journal, like the note); the address and
//! the thread from the `Routed` of the contact that opened the request.
//! One message per event: `<kind>:<reference>:<version>` on OUTBOX.

use async_nats::jetstream::consumer::pull;
use chrono::Utc;
use guichet_core::{
    proto::{
        self,
        v1::{RequestEvent, Transition},
    },
    request::{RequestRecord, event_subject, outcome_token, request_key, transition_token},
};

use crate::{
    NotifyConfig, NotifyError, consume,
    queue::{self, Draft, Outcome, Queuer},
    templates,
};

/// The subjects of the journal (how [`Queuer::handle`] tells an event from a `Routed`).
pub const EVENTS_PREFIX: &str = "guichet.events.";

/// The transitions that can carry a status message, and its kind.
const TOLD: [(Transition, &str); 3] = [
    (Transition::RequestDocuments, templates::DOCUMENTS_REQUESTED),
    (Transition::Answer, templates::ANSWERED),
    (Transition::Close, templates::CLOSED),
];

/// The EVENTS consumer of notify: those three transitions, new events only.
pub fn consumer_config(config: &NotifyConfig) -> pull::Config {
    consume::new_messages(
        &config.status_consumer,
        "guichet: notify, status messages on request transitions",
        TOLD.iter()
            .map(|(t, _)| event_subject(transition_token(*t), "*"))
            .collect(),
        config.max_deliveries,
    )
}

/// The status message kind of an event's transition, if it has one.
pub fn kind_of(event: &RequestEvent) -> Option<&'static str> {
    let transition = Transition::try_from(event.transition).ok()?;
    TOLD.iter().find(|(t, _)| *t == transition).map(|(_, kind)| *kind)
}

/// Whether `kind` is a status message (not limited per hour: the agent asked).
pub fn is_status(kind: &str) -> bool {
    TOLD.iter().any(|(_, k)| *k == kind)
}

impl Queuer {
    /// One journal event: its status message when the update asked for one.
    pub(crate) async fn status(&self, event: &RequestEvent) -> Result<Outcome, NotifyError> {
        let Some(kind) = kind_of(event) else {
            return Ok(Outcome::NotApplicable("no_status_message"));
        };
        if !event.notify_usager {
            return Ok(Outcome::NotApplicable("not_asked"));
        }
        let record = self.request(&event.reference).await?;
        let Some(record) = record else {
            // Erased (RGPD) since: nothing to tell, no one to tell it to.
            return Ok(Outcome::NotApplicable("no_request"));
        };
        let Some(mut routed) = self.bus.routed_contact(&record.opened_by).await? else {
            return Ok(Outcome::NotApplicable("no_contact"));
        };
        // The request as it is now (a transfer changed its service).
        routed.reference.clone_from(&record.reference);
        routed.usager_id.clone_from(&record.usager_id);
        if let Some(q) = routed.qualification.as_mut() {
            q.typology.clone_from(&record.typology);
        }
        let occurred = event
            .occurred_at
            .as_ref()
            .and_then(proto::to_datetime)
            .unwrap_or_else(Utc::now);
        let transition = record.history.iter().find(|h| h.version == event.version);
        let draft = Draft {
            occurred_on: queue::paris(occurred, "%d/%m/%Y"),
            documents: transition.map(|h| h.documents.clone()).unwrap_or_default(),
            outcome: event
                .outcome
                .try_into()
                .map(|o| outcome_token(o).to_owned())
                .unwrap_or_default(),
            ..Draft::new(kind, &event.version.to_string(), &event.service)
        };
        self.compose(&routed, &draft).await
    }

    async fn request(&self, reference: &str) -> Result<Option<RequestRecord>, NotifyError> {
        let entry = self
            .bus
            .stores()
            .requests
            .entry(request_key(reference))
            .await
            .map_err(|e| NotifyError::jetstream(format!("reading request {reference}"), e))?;
        match entry {
            Some(entry) if entry.operation == async_nats::jetstream::kv::Operation::Put => {
                serde_json::from_slice(&entry.value)
                    .map(Some)
                    .map_err(|e| NotifyError::Unusable(format!("request {reference}: unreadable record: {e}")))
            }
            _ => Ok(None),
        }
    }
}
