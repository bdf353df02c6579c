//! The clocks of a request: the engagement deadline (the service's
//! promise, computed by the rules in business days or hours) stops while
//! the request waits for the usager and gets the time waited back on
//! RESUME, counted on the rules' calendar in the deadline's own unit
//! ([`guichet_rules::Calendar::after_suspension`]); the legal deadline of a
//! demand with an implicit decision restarts from RESUME (CRPA L114-5), in
//! calendar months or days ([`LegalDelay`], defined with the rules that
//! set it), and does not move off a non-working day.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use guichet_core::Bus;
pub use guichet_rules::LegalDelay;
use guichet_rules::{Calendar, InForce, RuleSet, in_force::Compiled};

use crate::RequestsError;

/// Where the clocks find the calendar and the deadlines: the same rules
/// the router qualified with.
#[derive(Clone, Copy)]
pub enum Rules<'a> {
    /// This rule set (the router's snapshot of the contact it routes).
    Given(&'a RuleSet),
    /// No rules file: the built-in calendar (weekends, French public
    /// holidays, 17:00 Europe/Paris).
    Builtin,
    /// The rules in force under `key` of `guichet_config`, read when a
    /// clock needs them (only when a suspension ends).
    InForce { rules: &'a InForce, key: &'a str },
}

/// The rules [`Rules`] stands for, once read.
pub enum Resolved<'a> {
    Given(&'a RuleSet),
    Builtin(Calendar),
    Read(Arc<Compiled>),
}

impl Rules<'_> {
    pub async fn resolve(&self, bus: &Bus) -> Result<Resolved<'_>, RequestsError> {
        Ok(match *self {
            Rules::Given(rules) => Resolved::Given(rules),
            Rules::Builtin => Resolved::Builtin(Calendar::default()),
            Rules::InForce { rules, key } => match rules.current(bus, key).await? {
                Some(compiled) => Resolved::Read(compiled),
                None => Resolved::Builtin(Calendar::default()),
            },
        })
    }
}

impl Resolved<'_> {
    pub fn calendar(&self) -> &Calendar {
        match self {
            Resolved::Given(rules) => rules.calendar(),
            Resolved::Builtin(calendar) => calendar,
            Resolved::Read(compiled) => compiled.rules.calendar(),
        }
    }

    /// How long before its deadlines a request of `service` is due soon,
    /// when the rules say.
    pub fn due_soon_of(&self, service: &str) -> Option<guichet_rules::Deadline> {
        match self {
            Resolved::Given(rules) => rules.due_soon_of(service),
            Resolved::Builtin(_) => None,
            Resolved::Read(compiled) => compiled.rules.due_soon_of(service),
        }
    }

    /// The unit the deadline of a request decided by `rule_id` counts in.
    pub fn deadline_of(&self, rule_id: &str) -> Option<guichet_rules::Deadline> {
        match self {
            Resolved::Given(rules) => rules.deadline_of(rule_id),
            Resolved::Builtin(_) => None,
            Resolved::Read(compiled) => compiled.rules.deadline_of(rule_id),
        }
    }
}

pub fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub fn parse(at: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(at).ok().map(|t| t.with_timezone(&Utc))
}
