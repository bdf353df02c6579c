//! The seam between the router and the rules engine (`guichet-rules`):
//! what the router needs from a compiled rule set, and the built-in
//! manual-qualification fallback used while no rules were ever pushed.

use std::sync::Arc;

use chrono::{DateTime, Datelike, Duration, Utc, Weekday};
use guichet_core::proto::v1::{Contact, Priority};
use guichet_rules::RuleSet;

/// What the rules decided for one contact.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The rule that matched; empty when none did (manual qualification).
    pub rule_id: String,
    pub typology: String,
    pub service: String,
    pub priority: Priority,
    pub due_at: Option<DateTime<Utc>>,
    /// `due_at` as a calendar date, "YYYY-MM-DD".
    pub due_date: String,
    pub tags: Vec<String>,
    /// Flagged noise: recorded in the journal, never put in a queue.
    pub discard: bool,
    pub explanation: Vec<String>,
    /// The legal clock of a demand with an implicit decision.
    pub legal_due_at: Option<DateTime<Utc>>,
    /// `guichet.v1.ImplicitDecision` (0: none).
    pub implicit_decision: i32,
    /// "2 months", to restart the legal clock on RESUME.
    pub legal_delay: String,
}

/// A compiled rule set, ready to evaluate contacts.
pub trait Engine: Send + Sync {
    fn evaluate(&self, contact: &Contact) -> Verdict;
    /// Every service the rules name (the queues to keep ready).
    fn services(&self) -> Vec<String>;
    /// Where contacts no rule matches go.
    fn manual_service(&self) -> String;
    /// The rules file behind it (its calendar counts the time a request
    /// waited for the usager); `None` for the built-in fallback.
    fn rules(&self) -> Option<&RuleSet> {
        None
    }
}

/// Compiles rules text; the error lists every problem, one per line
/// (`origin:line:column: message`).
pub fn compile(text: &str, origin: &str) -> Result<Arc<dyn Engine>, String> {
    RuleSet::parse(text, origin)
        .map(|rules| Arc::new(rules) as Arc<dyn Engine>)
        .map_err(|e| e.to_string())
}

impl Engine for RuleSet {
    fn evaluate(&self, contact: &Contact) -> Verdict {
        // Revision 0 here: the router stamps the revision it holds.
        let q = self.qualify(contact, 0);
        let due_at = q.due_at.as_ref().and_then(guichet_core::proto::to_datetime);
        Verdict {
            rule_id: q.rule_id,
            typology: q.typology,
            service: q.service,
            priority: Priority::try_from(q.priority).unwrap_or(Priority::Normal),
            due_at,
            due_date: q.due_date,
            tags: q.tags,
            discard: q.discarded,
            explanation: q.explanation,
            legal_due_at: q.legal_due_at.as_ref().and_then(guichet_core::proto::to_datetime),
            implicit_decision: q.implicit_decision,
            legal_delay: q.legal_delay,
        }
    }

    fn services(&self) -> Vec<String> {
        RuleSet::services(self).iter().map(|s| s.name.clone()).collect()
    }

    fn manual_service(&self) -> String {
        RuleSet::manual_service(self).to_owned()
    }

    fn rules(&self) -> Option<&RuleSet> {
        Some(self)
    }
}

/// Routes everything to one manual-qualification service, with a due
/// date ten weekdays after reception.
#[derive(Debug, Clone)]
pub struct Fallback {
    pub service: String,
}

impl Engine for Fallback {
    fn evaluate(&self, contact: &Contact) -> Verdict {
        let received = contact
            .received_at
            .as_ref()
            .and_then(guichet_core::proto::to_datetime)
            .unwrap_or_else(Utc::now);
        let due = add_weekdays(received, 10);
        Verdict {
            rule_id: String::new(),
            typology: String::new(),
            service: self.service.clone(),
            priority: Priority::Normal,
            due_at: Some(due),
            due_date: due.format("%Y-%m-%d").to_string(),
            tags: Vec::new(),
            discard: false,
            explanation: vec![format!(
                "no rules pushed yet: manual qualification by `{}` (push rules with `guichet rules push FILE`)",
                self.service
            )],
            legal_due_at: None,
            implicit_decision: 0,
            legal_delay: String::new(),
        }
    }

    fn services(&self) -> Vec<String> {
        vec![self.service.clone()]
    }

    fn manual_service(&self) -> String {
        self.service.clone()
    }
}

/// Saturates at the end of time: a `received_at` near chrono's maximum
/// (a damaged or hostile contact) must not panic the router.
fn add_weekdays(from: DateTime<Utc>, days: u32) -> DateTime<Utc> {
    let mut at = from;
    let mut left = days;
    while left > 0 {
        let Some(next) = at.checked_add_signed(Duration::days(1)) else {
            return at;
        };
        at = next;
        if !matches!(at.weekday(), Weekday::Sat | Weekday::Sun) {
            left -= 1;
        }
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_of_time_does_not_panic() {
        assert_eq!(add_weekdays(DateTime::<Utc>::MAX_UTC, 10), DateTime::<Utc>::MAX_UTC);
        let contact = Contact {
            received_at: Some(guichet_core::proto::timestamp(DateTime::<Utc>::MAX_UTC)),
            ..Default::default()
        };
        let verdict = Fallback {
            service: "accueil".into(),
        }
        .evaluate(&contact);
        assert!(verdict.due_at.is_some());
    }
}
