//! `guichet rules replay`: what a candidate rules file would have decided
//! for the contacts of a period, against what was decided, routing
//! nothing.
//!
//! The decisions made are the `Routed.qualification`s in ROUTED. The
//! contact is taken from INTAKE when it still holds it (as the router saw
//! it), else from ROUTED's copy, without the flags the router added after
//! deciding (they did not take part in the decision). Follow-ups and copies
//! of an e-mail join their request, whatever the rules say: they are
//! counted apart and not compared.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, NaiveDate, Utc};
use guichet_core::{
    Bus,
    bus::subjects,
    proto::{
        self,
        v1::{Contact, FlagKind, Routed},
    },
};
use guichet_rules::RuleSet;
use prost::Message as _;
use serde::Serialize;

use crate::{RouterError, streams::read_stored};

/// How many example contact ids are kept per change.
pub const EXAMPLES_PER_CHANGE: usize = 3;

/// The part of a decision that a rules change can move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The service, or `_noise` when discarded.
    pub service: String,
    pub typology: String,
    pub rule_id: String,
    pub due_date: String,
}

impl Decision {
    fn of(q: &proto::v1::Qualification) -> Self {
        Self {
            service: if q.discarded {
                crate::dispatch::NOISE.to_owned()
            } else {
                q.service.clone()
            },
            typology: q.typology.clone(),
            rule_id: q.rule_id.clone(),
            due_date: q.due_date.clone(),
        }
    }
}

/// What the candidate rules decide for `contact` (pure evaluation).
pub fn decide(rules: &RuleSet, contact: &Contact) -> Decision {
    Decision::of(&rules.qualify(contact, 0))
}

/// One contact of the period, as it was decided.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub contact: Contact,
    pub decided: Decision,
    /// Taken from INTAKE (else from ROUTED's copy).
    pub from_intake: bool,
}

/// The period and services to replay.
#[derive(Debug, Clone)]
pub struct Period {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Only contacts decided for (or that would go to) these services; all when empty.
    pub services: Vec<String>,
}

/// The summary of a replay.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Contacts compared.
    pub contacts: usize,
    /// Of which taken from INTAKE (the rest from ROUTED's copies).
    pub from_intake: usize,
    /// Follow-ups and copies: decided by their request, not compared.
    pub joined: usize,
    /// Contacts whose service, typology, rule or due date would change.
    pub changed: usize,
    /// "before → after" service: how many contacts (unchanged included).
    pub services: BTreeMap<String, usize>,
    /// "before → after" typology, changes only.
    pub typologies: BTreeMap<String, usize>,
    /// Due-date shift in days (after − before), changes only.
    pub due_shifts: BTreeMap<i64, usize>,
    /// Candidate rules that decide none of these contacts.
    pub never_fired: Vec<String>,
    /// A few contact ids per service or typology change, for `guichet explain`.
    pub examples: BTreeMap<String, Vec<String>>,
    /// Every contact's (id, before, after), for tests and `--json`
    /// consumers that want them all.
    #[serde(skip)]
    pub decisions: Vec<(String, Decision, Decision)>,
}

/// Compares the candidate `rules` with the decisions of `recorded`.
pub fn compare(rules: &RuleSet, recorded: &[Recorded], period: &Period) -> Report {
    let mut report = Report::default();
    let mut fired: HashMap<String, usize> = HashMap::new();
    for r in recorded {
        let after = decide(rules, &r.contact);
        let before = &r.decided;
        if !period.services.is_empty()
            && !period.services.contains(&before.service)
            && !period.services.contains(&after.service)
        {
            continue;
        }
        report.contacts += 1;
        *fired.entry(after.rule_id.clone()).or_default() += 1;
        let id = &r.contact.id;
        let services = format!("{} → {}", before.service, after.service);
        *report.services.entry(services.clone()).or_default() += 1;
        if before.service != after.service {
            example(&mut report.examples, services, id);
        }
        if before.typology != after.typology {
            let typologies = format!("{} → {}", or_none(&before.typology), or_none(&after.typology));
            *report.typologies.entry(typologies.clone()).or_default() += 1;
            example(&mut report.examples, format!("typology {typologies}"), id);
        }
        if let (Ok(b), Ok(a)) = (
            NaiveDate::parse_from_str(&before.due_date, "%Y-%m-%d"),
            NaiveDate::parse_from_str(&after.due_date, "%Y-%m-%d"),
        ) && a != b
        {
            *report.due_shifts.entry((a - b).num_days()).or_default() += 1;
        }
        if &after != before {
            report.changed += 1;
        }
        if r.from_intake {
            report.from_intake += 1;
        }
        report.decisions.push((id.clone(), before.clone(), after));
    }
    report.never_fired = rules
        .rule_ids()
        .filter(|id| !fired.contains_key(*id))
        .map(str::to_owned)
        .collect();
    report
}

fn or_none(s: &str) -> &str {
    if s.is_empty() { "(none)" } else { s }
}

/// Keeps `id` as an example of the change `key`, up to a few per change.
fn example(examples: &mut BTreeMap<String, Vec<String>>, key: String, id: &str) {
    let ids = examples.entry(key).or_default();
    if ids.len() < EXAMPLES_PER_CHANGE {
        ids.push(id.to_owned());
    }
}

/// The flags the router adds to a routed contact after deciding.
fn added_by_router(kind: i32) -> bool {
    kind == FlagKind::CitesAnotherUsagersRequest as i32 || kind == FlagKind::Copy as i32
}

/// The contacts of the period with their decisions: ROUTED for the
/// decisions, INTAKE for the contacts where it still holds them.
/// Also returns how many follow-ups and copies were left out.
pub async fn recorded(bus: &Bus, period: &Period) -> Result<(Vec<Recorded>, usize), RouterError> {
    let in_period = |c: &Contact| {
        c.received_at
            .as_ref()
            .and_then(proto::to_datetime)
            .is_some_and(|at| at >= period.from && at < period.to)
    };
    let mut intake: HashMap<String, Contact> = HashMap::new();
    for stored in read_stored(bus, subjects::INTAKE_STREAM, subjects::INTAKE_ALL).await? {
        if let Ok(contact) = Contact::decode(stored.payload)
            && in_period(&contact)
        {
            intake.insert(contact.id.clone(), contact);
        }
    }
    let mut out = Vec::new();
    let mut joined = 0;
    for stored in read_stored(bus, subjects::ROUTED_STREAM, subjects::ROUTED_ALL).await? {
        let Ok(routed) = Routed::decode(stored.payload) else {
            continue;
        };
        let Routed {
            contact: Some(mut contact),
            qualification: Some(q),
            follow_up_of,
            ..
        } = routed
        else {
            continue;
        };
        if !in_period(&contact) {
            continue;
        }
        if !follow_up_of.is_empty() {
            joined += 1;
            continue;
        }
        let from_intake = match intake.remove(&contact.id) {
            Some(original) => {
                contact = original;
                true
            }
            None => {
                contact.flags.retain(|f| !added_by_router(f.kind));
                false
            }
        };
        out.push(Recorded {
            contact,
            decided: Decision::of(&q),
            from_intake,
        });
    }
    Ok((out, joined))
}

/// Loads the period and compares: the whole of `guichet rules replay`.
pub async fn replay(bus: &Bus, rules: &RuleSet, period: &Period) -> Result<Report, RouterError> {
    if period.from >= period.to {
        return Err(RouterError::Invalid(format!(
            "--from ({}) must be before --to ({})",
            period.from.to_rfc3339(),
            period.to.to_rfc3339()
        )));
    }
    if let Some(bad) = period.services.iter().find(|s| !subjects::is_token(s)) {
        return Err(RouterError::Invalid(format!(
            "--service `{}` is not a service name (letters, digits, - and _ only)",
            bad.escape_default()
        )));
    }
    let (recorded, joined) = recorded(bus, period).await?;
    let mut report = compare(rules, &recorded, period);
    report.joined = joined;
    Ok(report)
}
