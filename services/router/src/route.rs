//! Routing one contact: identity, follow-up, rules, request, dispatch.
//!
//! Every step is idempotent so that a redelivered contact ends the same
//! way: identifier keys are claimed with `create` and found on the next
//! try, the request is recognized by the contact that opened it, the
//! `Routed` is published with `Nats-Msg-Id` = contact id, and the
//! `contact.<id>` index, written after the PubAck, short-circuits a
//! contact that comes back after the stream's duplicate window.

use bytes::Bytes;
use chrono::{Datelike, Utc};
use guichet_core::{
    Bus,
    bus::{Published, subjects},
    ids::parse_reference,
    privacy::Pseudonymizer,
    proto::{
        self,
        v1::{Channel, Contact, Flag, FlagKind, IdentityResolution, Qualification, Routed},
    },
};
use prost::Message;

use crate::{
    RouterError,
    dispatch::{COPIES, NOISE},
    engine::Verdict,
    identity,
    identity_cache::IdentityCache,
    live::LiveRules,
    requests::{self, RequestRecord, RoutedIndex},
};

/// The router's per-contact logic, shared by its concurrent tasks.
#[derive(Clone, Debug)]
pub struct Router {
    bus: Bus,
    rules: LiveRules,
    /// Identity keys (see [`guichet_core::privacy`]).
    keys: Pseudonymizer,
    identities: Option<IdentityCache>,
    crosspost_window: std::time::Duration,
    hooks: crate::Hooks,
    /// A follow-up on a request closed longer ago opens a new one.
    reopen_window: std::time::Duration,
}

/// What routing one contact did.
#[derive(Debug, Clone)]
pub enum RouteOutcome {
    /// Published now (or found by JetStream's duplicate detection).
    Routed { routed: Box<Routed>, published: Published },
    /// The contact index says it was routed already: nothing published.
    AlreadyRouted(RoutedIndex),
}

impl Router {
    pub fn new(bus: Bus, rules: LiveRules, keys: Pseudonymizer) -> Self {
        Self {
            bus,
            rules,
            keys,
            identities: None,
            crosspost_window: crate::config::RouterConfig::default().crosspost_window,
            hooks: crate::Hooks::default(),
            reopen_window: crate::config::RouterConfig::default().reopen_window,
        }
    }

    #[doc(hidden)]
    pub fn with_hooks(mut self, hooks: crate::Hooks) -> Self {
        self.hooks = hooks;
        self
    }

    /// How long after an e-mail the same message is taken as a copy of it
    /// (`router.crosspost_window`).
    pub fn with_crosspost_window(mut self, window: std::time::Duration) -> Self {
        self.crosspost_window = window;
        self
    }

    /// How long after its closing a follow-up reopens a request
    /// (`router.reopen_window`).
    pub fn with_reopen_window(mut self, window: std::time::Duration) -> Self {
        self.reopen_window = window;
        self
    }

    /// Answers identity lookups from `cache` (see [`crate::identity_cache`]).
    pub fn with_identity_cache(mut self, cache: IdentityCache) -> Self {
        self.identities = Some(cache);
        self
    }

    /// The request `contact` continues, if it cites one it may join; one
    /// it cites but may not join is put in `cited_elsewhere`.
    async fn follow_up(
        &self,
        contact: &Contact,
        usager_id: &str,
        cited_elsewhere: &mut Option<requests::FollowUp>,
    ) -> Result<Option<requests::FollowUp>, RouterError> {
        let Some(follow) = requests::find_follow_up(&self.bus, contact).await? else {
            return Ok(None);
        };
        if self.may_join(contact, &follow.request, usager_id).await? {
            return Ok(Some(follow));
        }
        *cited_elsewhere = Some(follow);
        Ok(None)
    }

    /// Whether `contact` may join `request`, which it cites. A reference
    /// or a Message-ID can be written by anyone: an e-mail or a web form
    /// joins only a request of its own usager (merges followed). Phone,
    /// counter and post contacts are recorded by an agent who chose the
    /// request, and join it.
    async fn may_join(&self, contact: &Contact, request: &RequestRecord, usager_id: &str) -> Result<bool, RouterError> {
        let by_agent = matches!(
            Channel::try_from(contact.channel),
            Ok(Channel::Phone | Channel::Counter | Channel::Postal)
        );
        if by_agent || request.usager_id == usager_id {
            return Ok(true);
        }
        Ok(self.bus.canonical_usager(&request.usager_id).await? == usager_id)
    }

    pub fn rules(&self) -> &LiveRules {
        &self.rules
    }

    /// Routes one contact and returns once its `Routed` is stored.
    pub async fn route(&self, contact: &Contact) -> Result<RouteOutcome, RouterError> {
        self.route_delivery(contact, false).await
    }

    /// [`Self::route`] for a delivery known to be the first: the check
    /// for an earlier routing is then only made when the request (or its
    /// absence, for noise) shows the contact was seen before, which saves
    /// a read per contact.
    pub async fn route_delivery(&self, contact: &Contact, first_delivery: bool) -> Result<RouteOutcome, RouterError> {
        if let Some(hook) = &self.hooks.before_route {
            hook(contact);
        }
        let bus = &self.bus;
        if !subjects::is_token(&contact.id) {
            return Err(RouterError::Contact {
                contact_id: contact.id.escape_default().to_string(),
                reason: "the contact id is empty or not an id (letters, digits, - and _ only)".into(),
            });
        }
        if !first_delivery && let Some(index) = requests::routed_index(bus, &contact.id).await? {
            return Ok(RouteOutcome::AlreadyRouted(index));
        }
        // One snapshot of the rules for the whole decision.
        let active = self.rules.current();
        let verdict = active.engine.evaluate(contact);
        let resolution = identity::resolve_with(bus, &self.keys, self.identities.as_ref(), contact).await?;
        let usager_id = resolution.usager_id.clone();
        let reference = own_reference(contact);

        let mut qualification = qualification(&verdict, active.revision);
        let mut follow_up_of = String::new();
        let mut copy_of = None;
        let mut cited_elsewhere = None;
        let mut continues = String::new();
        let (service, reference, seen_before) = if verdict.discard {
            // Journal only: the rule's service stays in the qualification,
            // the subject keeps it out of every queue.
            qualification.discarded = true;
            (NOISE.to_owned(), reference, true)
        } else if let Some(first) = requests::first_copy(bus, contact, self.crosspost_window).await? {
            // The same e-mail again (another mailbox, Cc, appended twice):
            // journaled with the first copy's request, queued for no one.
            let index = requests::routed_index(bus, &first).await?.ok_or_else(|| {
                RouterError::requests_store(
                    "joining the first copy of an e-mail",
                    format!("its first copy, contact {first}, is not routed yet; retry"),
                )
            })?;
            let (request, seen_before) = requests::join(bus, &index.reference, contact).await?;
            requests::add_alias(bus, &reference, &request.reference).await?;
            follow_up_of = request.reference.clone();
            let how = format!(
                "copy of contact {first} (same Message-ID and content): joined request {}, not queued again",
                request.reference
            );
            qualification = joined(qualification, &request, &verdict, how, "copy");
            copy_of = Some(first);
            (COPIES.to_owned(), request.reference, seen_before)
        } else if let Some(follow) = self.follow_up(contact, &usager_id, &mut cited_elsewhere).await?
            && crate::follow_up::joins(&follow.request, self.reopen_window, &mut continues)
        {
            let (request, seen_before) = requests::join(bus, &follow.request.reference, contact).await?;
            crate::follow_up::move_on(bus, &request.reference, &request.status, contact, active.engine.rules()).await?;
            // The reference the follow-up was given at intake now finds
            // the request too.
            requests::add_alias(bus, &reference, &request.reference).await?;
            follow_up_of = request.reference.clone();
            let how = format!("follow-up of request {}: {}", request.reference, follow.how);
            qualification = joined(qualification, &request, &verdict, how, "follow-up");
            (request.service, request.reference, seen_before)
        } else {
            let record = RequestRecord {
                reference,
                service: verdict.service.clone(),
                usager_id: usager_id.clone(),
                typology: verdict.typology.clone(),
                due_at: verdict
                    .due_at
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_default(),
                due_date: verdict.due_date.clone(),
                deadline: active
                    .engine
                    .rules()
                    .and_then(|rules| rules.deadline_of(&verdict.rule_id))
                    .map(|deadline| deadline.to_string())
                    .unwrap_or_default(),
                status: "open".into(),
                opened_by: contact.id.clone(),
                opened_at: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                rule_id: verdict.rule_id.clone(),
                rules_revision: active.revision,
                contacts: vec![contact.id.clone()],
                message_ids: requests::own_message_id(contact)
                    .map(|m| vec![hex_of_msgid(m)])
                    .unwrap_or_default(),
                channel: contact.channel().token().to_owned(),
                version: 1,
                continues: std::mem::take(&mut continues),
                legal_due_at: verdict
                    .legal_due_at
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_default(),
                implicit_decision: match guichet_core::proto::v1::ImplicitDecision::try_from(verdict.implicit_decision)
                {
                    Ok(guichet_core::proto::v1::ImplicitDecision::Acceptance) => "acceptance".into(),
                    Ok(guichet_core::proto::v1::ImplicitDecision::Rejection) => "rejection".into(),
                    _ => String::new(),
                },
                legal_delay: verdict.legal_delay.clone(),
                ..RequestRecord::default()
            };
            let (record, seen_before) = requests::open(bus, contact, record).await?;
            // The journal's first event of the request (`open`, version 1,
            // `Nats-Msg-Id` <reference>:1): a redelivery publishes it again,
            // deduplicated within the window (the requests service repairs
            // it too if this process dies first).
            guichet_requests::events::publish(bus, &record).await?;
            (record.service, record.reference, seen_before)
        };
        // Seen before, e.g. replayed after the duplicate window: routed already?
        if first_delivery
            && seen_before
            && let Some(index) = requests::routed_index(bus, &contact.id).await?
        {
            return Ok(RouteOutcome::AlreadyRouted(index));
        }
        if !subjects::is_token(&service) {
            return Err(RouterError::Contact {
                contact_id: contact.id.clone(),
                reason: format!("service `{}` is not a subject token", service.escape_default()),
            });
        }
        if !verdict.discard
            && copy_of.is_none()
            && let Some(message_id) = requests::own_message_id(contact)
        {
            requests::index_message_id(bus, message_id, &reference).await?;
        }

        // The claims the router did not use are flagged on the record,
        // so that an agent sees why the usager was not recognized.
        let mut routed_contact = contact.clone();
        routed_contact.flags.extend(resolution.unusable.iter().cloned());
        if let Some(cited) = &cited_elsewhere {
            routed_contact.flags.push(Flag {
                kind: FlagKind::CitesAnotherUsagersRequest.into(),
                reason: format!(
                    "cites request {} ({}), which is another usager's: opened as a new request",
                    cited.request.reference, cited.how
                ),
            });
        }
        if let Some(first) = &copy_of {
            routed_contact.flags.push(Flag {
                kind: FlagKind::Copy.into(),
                reason: format!("the same e-mail as contact {first}, received again"),
            });
        }
        let routed = Routed {
            contact: Some(routed_contact),
            usager_id: usager_id.clone(),
            reference: reference.clone(),
            qualification: Some(qualification),
            follow_up_of,
            routed_at: Some(proto::timestamp(Utc::now())),
            identity: Some(IdentityResolution {
                outcome: resolution.outcome as i32,
                matched_by: resolution.matched_by.clone(),
            }),
        };
        let subject = subjects::routed(&service, &usager_id);
        let published = bus
            .publish(subject.clone(), &contact.id, Bytes::from(routed.encode_to_vec()))
            .await?;
        requests::put_routed_index(
            bus,
            &contact.id,
            &RoutedIndex {
                stream: published.stream.clone(),
                sequence: published.sequence,
                subject,
                reference,
            },
        )
        .await?;
        self.publish_decision(&routed).await;
        Ok(RouteOutcome::Routed {
            routed: Box::new(routed),
            published,
        })
    }

    /// The short decision event for adapters waiting to answer the usager.
    /// Core NATS, best effort: the `Routed` is the record.
    pub async fn publish_decision(&self, routed: &Routed) {
        let decision = guichet_core::bus::routing::decision_of(routed);
        let contact_id = decision.contact_id.clone();
        if let Err(e) = self
            .bus
            .client()
            .publish(subjects::decided(&contact_id), Bytes::from(decision.encode_to_vec()))
            .await
        {
            tracing::warn!(contact_id, error = %e, "decision event not published");
        }
    }
}

/// The qualification of a contact that joins an existing request: the
/// request's service, typology and deadline; the rules' verdict is only
/// reported.
fn joined(
    qualification: Qualification,
    request: &RequestRecord,
    verdict: &Verdict,
    how: String,
    tag: &str,
) -> Qualification {
    let rule_line = if verdict.rule_id.is_empty() {
        format!("rules: no rule matched (not applied: a {tag} stays with its request)")
    } else {
        format!(
            "rules: rule `{}` matched (not applied: a {tag} stays with its request)",
            verdict.rule_id
        )
    };
    let mut tags = verdict.tags.clone();
    tags.push(tag.to_owned());
    Qualification {
        typology: request.typology.clone(),
        service: request.service.clone(),
        due_at: chrono::DateTime::parse_from_rfc3339(&request.due_at)
            .ok()
            .map(|t| proto::timestamp(t.with_timezone(&Utc))),
        due_date: request.due_date.clone(),
        rule_id: String::new(),
        explanation: vec![how, rule_line],
        // The request's clocks, not the rules' verdict on this contact.
        legal_due_at: request.deadlines().legal_due_at,
        implicit_decision: request.deadlines().implicit_decision,
        legal_delay: request.legal_delay.clone(),
        tags,
        ..qualification
    }
}

fn hex_of_msgid(message_id: &str) -> String {
    // Same hash as the index key, without its prefix.
    requests::msgid_key(message_id).trim_start_matches("msgid.").to_owned()
}

/// The contact's reference in canonical form, or one derived from its id
/// when the adapter sent none (or an unreadable one).
fn own_reference(contact: &Contact) -> String {
    parse_reference(&contact.reference).unwrap_or_else(|| {
        let year = contact
            .received_at
            .as_ref()
            .and_then(proto::to_datetime)
            .unwrap_or_else(Utc::now)
            .year();
        requests::derived_reference(&format!("{year:04}"), &contact.id)
    })
}

fn qualification(verdict: &Verdict, revision: u64) -> Qualification {
    Qualification {
        typology: verdict.typology.clone(),
        service: verdict.service.clone(),
        priority: verdict.priority as i32,
        due_at: verdict.due_at.map(proto::timestamp),
        due_date: verdict.due_date.clone(),
        rule_id: verdict.rule_id.clone(),
        rules_revision: revision,
        tags: verdict.tags.clone(),
        discarded: verdict.discard,
        explanation: verdict.explanation.clone(),
        legal_due_at: verdict.legal_due_at.map(proto::timestamp),
        implicit_decision: verdict.implicit_decision,
        legal_delay: verdict.legal_delay.clone(),
    }
}
