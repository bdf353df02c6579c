//! From ROUTED to OUTBOX: which routed contact gets an acknowledgment or
//! a follow-up message, rendered from the templates in force.
//!
//! A `Routed` that opens a request (no `follow_up_of`), is not noise
//! (`qualification.discarded`) nor a copy of an e-mail already routed, and
//! whose usager gave an e-mail address, gets one acknowledgment unless a
//! guard ([`crate::guards`], [`crate::rate`]) suppresses it — recorded
//! with its reason. A contact that joins an existing request gets the
//! short follow-up message, on the same terms, when the templates have
//! one for its service (opt-in per service). A notification that cannot be made (template error,
//! service without contact details) is dead-lettered and the rest goes on.

use async_nats::jetstream::{AckKind, Message, consumer::pull, kv};
use chrono::{DateTime, Utc};
use guichet_core::{
    Bus,
    bus::subjects,
    proto::{
        self,
        v1::{Channel, FlagKind, Qualification, RequestEvent, Routed, contact::Details},
    },
};
use prost::Message as _;

use crate::{
    NotifyConfig, NotifyError, consume, events,
    guards::{self, OwnAddresses, Suppressed},
    outbox::{self, Notification},
    rate,
    services::ServiceDirectory,
    status,
    template_revisions::LiveTemplates,
    templates::{self, AckContext, ImplicitDecision, ServiceContext, UsagerContext},
};

/// The ROUTED consumer of notify. New requests only: turning notify on
/// does not acknowledge the whole journal.
pub fn consumer_config(config: &NotifyConfig) -> pull::Config {
    consume::new_messages(
        &config.consumer,
        "guichet: notify, acknowledging new requests",
        vec![subjects::ROUTED_ALL.to_owned()],
        config.max_deliveries,
    )
}

/// What one queueing needs.
pub struct Queuer {
    pub bus: Bus,
    pub config: NotifyConfig,
    pub own: OwnAddresses,
    pub rate: kv::Store,
    pub services: ServiceDirectory,
    pub templates: LiveTemplates,
}

/// The outcome of one routed contact or event, for the metric.
pub(crate) enum Outcome {
    Queued,
    AlreadyQueued,
    NotApplicable(&'static str),
    Suppressed(Suppressed),
}

impl Queuer {
    /// Handles one ROUTED message (acknowledgment, follow-up) or one
    /// request event (status message): ack, NAK with backoff, or dead-letter.
    pub async fn handle(&self, message: Message) {
        let delivered = message
            .info()
            .map_or(1, |i| u32::try_from(i.delivered).unwrap_or(u32::MAX));
        let (kind, reference, result) = if message.subject.starts_with(status::EVENTS_PREFIX) {
            let event = match RequestEvent::decode(message.payload.clone()) {
                Ok(e) => e,
                Err(e) => {
                    let reason = format!("not a guichet.v1.RequestEvent: {e}");
                    consume::dead_letter(&self.bus, &message, reason, true).await;
                    return;
                }
            };
            let kind = status::kind_of(&event).unwrap_or("status");
            (kind, event.reference.clone(), self.status(&event).await)
        } else {
            let routed = match Routed::decode(message.payload.clone()) {
                Ok(r) => r,
                Err(e) => {
                    consume::dead_letter(&self.bus, &message, format!("not a guichet.v1.Routed: {e}"), true).await;
                    return;
                }
            };
            (kind_of(&routed), routed.reference.clone(), self.queue(&routed).await)
        };
        match result {
            Ok(outcome) => {
                let label = match outcome {
                    Outcome::Queued => "queued",
                    Outcome::AlreadyQueued => "already_queued",
                    Outcome::NotApplicable(why) => why,
                    Outcome::Suppressed(s) => s.as_str(),
                };
                metrics::counter!("guichet_notify_messages_total", "kind" => kind, "outcome" => label).increment(1);
                if let Err(e) = message.double_ack().await {
                    tracing::warn!(reference = %reference, error = %e, "ack failed; the message comes back and is recognized");
                }
            }
            Err(e) if !e.is_transient() => {
                metrics::counter!("guichet_notify_messages_total", "kind" => kind, "outcome" => "dead_letter")
                    .increment(1);
                consume::dead_letter(&self.bus, &message, format!("{kind} of {reference}: {e}"), false).await;
            }
            Err(e) if delivered >= self.config.max_deliveries => {
                consume::dead_letter(
                    &self.bus,
                    &message,
                    format!("queueing failed {delivered} times; last error: {e}"),
                    false,
                )
                .await;
            }
            Err(e) => {
                let delay = self.config.backoff_after(delivered);
                tracing::warn!(reference = %reference, kind, delivered, retry_in = ?delay, error = %e, "queueing the notification failed; will retry");
                let _ = message.ack_with(AckKind::Nak(Some(delay))).await;
            }
        }
    }

    async fn queue(&self, routed: &Routed) -> Result<Outcome, NotifyError> {
        let Some(contact) = routed.contact.as_ref() else {
            return Ok(Outcome::NotApplicable("no_contact"));
        };
        let q = routed.qualification.clone().unwrap_or_default();
        let kind = kind_of(routed);
        if q.discarded {
            return Ok(Outcome::NotApplicable("discarded"));
        }
        if q.service.starts_with('_') || contact.flags.iter().any(|f| f.kind == FlagKind::Copy as i32) {
            return Ok(Outcome::NotApplicable("copy"));
        }
        // The follow-up message is opt-in, per service, by its template.
        if kind == templates::FOLLOW_UP && !self.templates.current().1.has(kind, &q.service) {
            return Ok(Outcome::NotApplicable("follow_up"));
        }
        // One acknowledgment per request; one follow-up message per contact.
        let event = if kind == templates::ACKNOWLEDGMENT {
            "opened"
        } else {
            contact.id.as_str()
        };
        self.compose(routed, &Draft::new(kind, event, &q.service)).await
    }

    /// Renders one notification about `routed`'s request and queues it
    /// on OUTBOX, unless a guard or the hourly limit suppresses it.
    pub(crate) async fn compose(&self, routed: &Routed, draft: &Draft) -> Result<Outcome, NotifyError> {
        let Some(contact) = routed.contact.as_ref() else {
            return Ok(Outcome::NotApplicable("no_contact"));
        };
        let address = contact.claims.as_ref().map_or("", |c| c.email.trim());
        if address.is_empty() {
            return Ok(Outcome::NotApplicable("no_email"));
        }
        let (kind, event) = (draft.kind, draft.event.as_str());
        let mut q = routed.qualification.clone().unwrap_or_default();
        q.service.clone_from(&draft.service);
        let (_, templates) = self.templates.current();
        if let Err(reason) = guards::check(contact, address, &self.own) {
            self.suppressed(routed, kind, event, reason).await?;
            return Ok(Outcome::Suppressed(reason));
        }
        let services = self.services.current(&self.bus, &self.config.rules_key).await?;
        let service = services.get(&q.service).filter(|s| s.is_complete()).ok_or_else(|| {
            NotifyError::Unusable(format!(
                "service `{}` has no designation, postal_address, email and phone in the rules file: \
                     the accusé de réception must give them (R112-5); add them to its [[services]] and push the rules",
                q.service
            ))
        })?;
        let received = contact
            .received_at
            .as_ref()
            .and_then(proto::to_datetime)
            .unwrap_or_else(Utc::now);
        // The rate counter's idempotency token: the reference for the
        // acknowledgment, the notification for a follow-up (each counts).
        // A status message answers the agent's own request: not limited.
        let token = if kind == templates::ACKNOWLEDGMENT {
            routed.reference.clone()
        } else {
            format!("{kind}:{}:{event}", routed.reference)
        };
        if !status::is_status(kind)
            && !rate::admit(
                &self.rate,
                &routed.usager_id,
                &token,
                Utc::now(),
                self.config.max_per_usager,
            )
            .await?
        {
            self.suppressed(routed, kind, event, Suppressed::RateLimit).await?;
            return Ok(Outcome::Suppressed(Suppressed::RateLimit));
        }
        let context = AckContext {
            reference: routed.reference.clone(),
            received_on: paris(received, "%d/%m/%Y"),
            received_at: paris(received, "%H:%M"),
            channel: Channel::try_from(contact.channel)
                .unwrap_or(Channel::Unspecified)
                .token()
                .to_owned(),
            subject: contact.subject.clone(),
            usager: UsagerContext {
                name: contact.claims.as_ref().map(|c| c.name.clone()).unwrap_or_default(),
            },
            service: ServiceContext {
                name: q.service.clone(),
                designation: service.designation.clone(),
                postal_address: service.postal_address.clone(),
                email: service.email.clone(),
                phone: service.phone.clone(),
            },
            typology: q.typology.clone(),
            due_date: french_date(&q.due_date),
            implicit_decision: implicit_decision(&q),
            occurred_on: draft.occurred_on.clone(),
            documents: draft.documents.clone(),
            outcome: draft.outcome.clone(),
        };
        let language = if contact.language.is_empty() {
            templates::DEFAULT_LANGUAGE
        } else {
            contact.language.as_str()
        };
        let mut rendered = templates.render(kind, &q.service, &q.typology, language, &context)?;
        let tag = format!("[{}]", routed.reference);
        if !rendered.subject.contains(&tag) {
            rendered.subject = format!("{tag} {}", rendered.subject);
        }
        let (in_reply_to, references) = match &contact.details {
            Some(Details::Email(email)) if !email.message_id.is_empty() => {
                let mut refs = email.references.clone();
                refs.push(email.message_id.clone());
                (email.message_id.clone(), refs)
            }
            _ => (String::new(), Vec::new()),
        };
        let domain = self
            .config
            .from_address()
            .rsplit('@')
            .next()
            .unwrap_or("guichet.invalid")
            .to_owned();
        let notification = Notification {
            kind: kind.into(),
            reference: routed.reference.clone(),
            event: event.into(),
            usager_id: routed.usager_id.clone(),
            service: q.service.clone(),
            to: address.to_owned(),
            reply_to: if self.config.reply_to.is_empty() {
                service.email.clone()
            } else {
                self.config.reply_to.clone()
            },
            subject: rendered.subject,
            text: rendered.text,
            html: rendered.html,
            message_id: format!("{kind}.{}.{event}@{domain}", routed.reference),
            in_reply_to,
            references,
            received_at: received.to_rfc3339(),
        };
        let fresh = outbox::enqueue(self.bus.jetstream(), &notification, self.bus.publish_timeout()).await?;
        Ok(if fresh { Outcome::Queued } else { Outcome::AlreadyQueued })
    }

    async fn suppressed(
        &self,
        routed: &Routed,
        kind: &str,
        event: &str,
        reason: Suppressed,
    ) -> Result<(), NotifyError> {
        tracing::info!(reference = %routed.reference, usager = %routed.usager_id, kind, reason = reason.as_str(), "notification suppressed");
        events::record(
            &self.bus,
            "notify_suppressed",
            &format!("notify-suppressed-{kind}-{}-{event}", routed.reference),
            serde_json::json!({
                "notification": kind,
                "reference": routed.reference,
                "usager_id": routed.usager_id,
                "event": event,
                "reason": reason.as_str(),
            }),
        )
        .await
    }
}

/// One notification to compose: its kind, the event it is about (one
/// notification per kind, reference and event), the service in charge, and
/// what a status message adds.
pub(crate) struct Draft {
    pub kind: &'static str,
    pub event: String,
    pub service: String,
    /// "30/11/2026": the day of the transition (status messages).
    pub occurred_on: String,
    /// REQUEST_DOCUMENTS: the pieces asked for.
    pub documents: Vec<String>,
    /// CLOSE: the outcome token ("granted" ...).
    pub outcome: String,
}

impl Draft {
    pub fn new(kind: &'static str, event: &str, service: &str) -> Self {
        Self {
            kind,
            event: event.to_owned(),
            service: service.to_owned(),
            occurred_on: String::new(),
            documents: Vec::new(),
            outcome: String::new(),
        }
    }
}

/// A contact that opens a request gets the acknowledgment; one that joins
/// an existing request (a follow-up) the optional follow-up message.
fn kind_of(routed: &Routed) -> &'static str {
    if routed.follow_up_of.is_empty() {
        templates::ACKNOWLEDGMENT
    } else {
        templates::FOLLOW_UP
    }
}

/// What silence will be worth, and when (R112-5): the legal clock the
/// router set on the qualification from the rule or service's
/// `implicit_decision`. `None` for a demand without one.
fn implicit_decision(q: &Qualification) -> Option<ImplicitDecision> {
    let kind = match proto::v1::ImplicitDecision::try_from(q.implicit_decision) {
        Ok(proto::v1::ImplicitDecision::Acceptance) => "acceptance",
        Ok(proto::v1::ImplicitDecision::Rejection) => "rejection",
        _ => return None,
    };
    let due = q.legal_due_at.as_ref().and_then(proto::to_datetime)?;
    Some(ImplicitDecision {
        kind: kind.into(),
        date: paris(due, "%d/%m/%Y"),
    })
}

pub(crate) fn paris(at: DateTime<Utc>, format: &str) -> String {
    at.with_timezone(&chrono_tz::Europe::Paris).format(format).to_string()
}

/// "2026-12-15" → "15/12/2026"; anything else unchanged.
fn french_date(iso: &str) -> String {
    chrono::NaiveDate::parse_from_str(iso, "%Y-%m-%d")
        .map_or_else(|_| iso.to_owned(), |d| d.format("%d/%m/%Y").to_string())
}
