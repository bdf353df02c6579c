//! The routing rules that ops maintain: a TOML file of services, a business
//! calendar and an ordered list of rules (`deploy/rules.example.toml`
//! documents the syntax with a commented example).
//!
//! # Public API
//!
//! ```no_run
//! use guichet_rules::{Deadline, RuleSet};
//! # fn demo(text: &str, contact: &guichet_core::proto::v1::Contact) -> Result<(), guichet_rules::RulesError> {
//! // Validate and compile. On error, `RulesError` holds EVERY problem with
//! // line and column; its Display is one `origin:line:col: message` line each.
//! let rules = RuleSet::parse(text, "rules.toml")?;
//!
//! rules.services();        // &[Service]: name, default deadline, description
//! rules.manual_service();  // where contacts no rule matches go
//!
//! // The first matching rule in file order, or the manual service.
//! let e = rules.evaluate(contact);
//! // e.rule_id, e.typology, e.service, e.priority, e.deadline, e.tags,
//! // e.discard, e.explanation (readable), e.rules_examined
//!
//! // Due date on the file's calendar (business days, holidays, closures).
//! let due = rules.due(chrono::Utc::now(), e.deadline); // Due { at, date }
//! let q = e.qualification(&due, 42);                   // proto Qualification
//!
//! // Or both at once, counting from contact.received_at:
//! let q = rules.qualify(contact, 42);
//! # Ok(()) }
//! ```
//!
//! # How matching stays flat in the number of rules
//!
//! Every leaf test of every rule is interned once as an *atom*. Per contact,
//! [`RuleSet::evaluate`] computes the set of true atoms in one pass: ONE
//! Aho-Corasick automaton over the folded subject, body and form-field
//! values for all keywords (whole words, or prefixes with a trailing `*`),
//! one `RegexSet` per text (subject, body) for all regexes, hash lookups for
//! channel, source, sender domain, form fields, postal code, attachments and
//! flags. Each rule is filed under the rarest atoms one of which must be
//! true for it to match, so a contact only wakes up the rules it could
//! match; those are tested in file order against the set of true atoms.
//! `Evaluation::rules_examined` shows the work done. [`testing::generate_rules`]
//! makes large files for benchmarks.

mod calendar;
mod deadline;
mod diagnostics;
mod fold;
pub mod implicit;
pub mod in_force;
mod matcher;
mod parse;
mod ruleset;
pub mod service_contact;
pub mod testing;

pub use calendar::{Calendar, Due, easter_sunday, public_holidays};
pub use deadline::Deadline;
pub use diagnostics::{Diagnostic, RulesError};
pub use fold::fold;
pub use implicit::{ImplicitDecision, ImplicitKind, LegalDelay};
pub use in_force::InForce;
pub use ruleset::{Evaluation, RuleSet, Service};
pub use service_contact::ServiceContact;
