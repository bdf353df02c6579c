//! A validated, compiled rules file and its evaluation.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use guichet_core::proto::v1::{Contact, Priority, Qualification};

use crate::{
    Calendar, Deadline, Due,
    diagnostics::{Diagnostics, RulesError},
    implicit::{ImplicitDecision, ImplicitKind},
    matcher::{AtomId, Matcher, Node, Vocabulary},
    parse::{self, ParsedRule},
};

/// A service named in the rules file: a queue `guichet.routed.<name>.>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// A NATS subject token.
    pub name: String,
    /// Applies when the deciding rule sets no deadline.
    pub deadline: Deadline,
    /// How long before a deadline of its requests the `due_soon` alert
    /// goes out (`None`: `requests.due_soon`).
    pub due_soon: Option<Deadline>,
    pub description: String,
    /// Silence is worth a decision after a delay (CRPA L231-1).
    pub implicit_decision: Option<ImplicitDecision>,
    /// Designation, postal address, e-mail and phone, for the accusé de
    /// réception (R112-5); empty when the file gives none.
    pub contact: crate::ServiceContact,
}

struct Rule {
    id: String,
    line: usize,
    description: String,
    /// `None`: matches every contact.
    condition: Option<Node>,
    typology: String,
    service: String,
    priority: Priority,
    deadline: Deadline,
    deadline_from_service: bool,
    /// The rule's, else its service's.
    implicit: Option<ImplicitDecision>,
    tags: Vec<String>,
    discard: bool,
}

/// What the rules decided for one contact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evaluation {
    /// The deciding rule; `None` when no rule matched and the contact goes
    /// to the manual-qualification service.
    pub rule_id: Option<String>,
    /// Line of the deciding rule's `id` in the rules file.
    pub rule_line: Option<usize>,
    /// Empty when the rule sets none (or no rule matched).
    pub typology: String,
    pub service: String,
    pub priority: Priority,
    pub deadline: Deadline,
    /// The legal clock, when the demand has an implicit decision.
    pub implicit_decision: Option<ImplicitDecision>,
    pub tags: Vec<String>,
    /// Noise (auto-reply, bounce...): record it, never put it before an agent.
    pub discard: bool,
    /// Why, for an operator: the conditions that matched, then the deadline.
    pub explanation: Vec<String>,
    /// How many rules were tested in full for this contact: bounded by
    /// what the contact matches, not by the size of the rules file.
    pub rules_examined: usize,
}

impl Evaluation {
    /// The contract's `Qualification`, with the due date and the revision
    /// of the rules that decided.
    pub fn qualification(&self, due: &Due, rules_revision: u64) -> Qualification {
        Qualification {
            typology: self.typology.clone(),
            service: self.service.clone(),
            priority: self.priority as i32,
            due_at: Some(guichet_core::proto::timestamp(due.at)),
            due_date: due.date_string(),
            rule_id: self.rule_id.clone().unwrap_or_default(),
            rules_revision,
            tags: self.tags.clone(),
            discarded: self.discard,
            explanation: self.explanation.clone(),
            implicit_decision: self.implicit_decision.map_or(0, |i| match i.kind {
                ImplicitKind::Acceptance => guichet_core::proto::v1::ImplicitDecision::Acceptance as i32,
                ImplicitKind::Rejection => guichet_core::proto::v1::ImplicitDecision::Rejection as i32,
            }),
            legal_delay: self.implicit_decision.map(|i| i.delay.to_string()).unwrap_or_default(),
            legal_due_at: None,
        }
    }
}

/// A rules file, validated and compiled. Cheap to share (`Arc<RuleSet>`)
/// and immutable: a new revision is a new `RuleSet`, swapped atomically.
pub struct RuleSet {
    services: Vec<Service>,
    manual_service: String,
    calendar: Calendar,
    rules: Vec<Rule>,
    vocab: Vocabulary,
    matcher: Matcher,
    /// Atom → the rules filed under it (ascending).
    postings: Vec<Vec<u32>>,
    /// Rules that no atom can wake up (a bare `not`, no condition).
    always: Vec<u32>,
}

impl std::fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleSet")
            .field("services", &self.services.len())
            .field("rules", &self.rules.len())
            .field("manual_service", &self.manual_service)
            .finish_non_exhaustive()
    }
}

impl RuleSet {
    /// Parses, validates and compiles a rules file. `origin` names it in
    /// the errors (a path, or `kv:rules@42`). On error, every problem found.
    pub fn parse(text: &str, origin: &str) -> Result<RuleSet, RulesError> {
        let mut d = Diagnostics::new(text);
        let parsed = parse::parse(text, &mut d);
        check_shadowing(&parsed.rules, &parsed.vocab, &mut d);
        if !d.is_empty() {
            return Err(d.into_error(origin));
        }
        let matcher = match Matcher::build(&parsed.vocab) {
            Ok(m) => m,
            Err(why) => {
                d.error(&(0..0), why, Some("fewer or simpler regexes"));
                return Err(d.into_error(origin));
            }
        };
        let defaults: HashMap<&str, Deadline> = parsed.services.iter().map(|s| (s.name.as_str(), s.deadline)).collect();
        let implicit_defaults: HashMap<&str, Option<ImplicitDecision>> =
            parsed.services.iter().map(|s| (s.name.as_str(), s.implicit)).collect();
        let manual = parsed.manual_service.clone();
        let rules: Vec<Rule> = parsed
            .rules
            .into_iter()
            .map(|r| {
                let line = d.line_of(&r.span);
                let service = r.service.map_or_else(|| manual.clone(), |(s, _)| s);
                let default = defaults
                    .get(service.as_str())
                    .copied()
                    .unwrap_or(Deadline::BusinessDays(1));
                Rule {
                    id: r.id,
                    line,
                    description: r.description,
                    condition: r.condition,
                    typology: r.typology,
                    priority: r.priority,
                    deadline: r.deadline.unwrap_or(default),
                    deadline_from_service: r.deadline.is_none(),
                    implicit: r
                        .implicit
                        .or_else(|| implicit_defaults.get(service.as_str()).copied().flatten()),
                    service,
                    tags: r.tags,
                    discard: r.discard,
                }
            })
            .collect();
        // How likely an atom is to be true, times how many rules mention
        // it: a rule is filed under the atoms that wake up the fewest rules
        // (a keyword of its own rather than a form value many rules share).
        let mut uses = vec![0u64; parsed.vocab.len()];
        for rule in &rules {
            let mut atoms = Vec::new();
            if let Some(c) = &rule.condition {
                parsed.vocab.atoms_of(c, &mut atoms);
            }
            atoms.sort_unstable();
            atoms.dedup();
            atoms.into_iter().for_each(|a| uses[a as usize] += 1);
        }
        let vocab = &parsed.vocab;
        let cost = |a: AtomId| u64::from(vocab.key(a).cost()) * uses[a as usize];
        let mut postings = vec![Vec::new(); parsed.vocab.len()];
        let mut always = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            match rule.condition.as_ref().and_then(|c| c.trigger(vocab, &cost)) {
                Some(atoms) => atoms.iter().for_each(|&a| postings[a as usize].push(i)),
                None => always.push(i),
            }
        }
        Ok(RuleSet {
            services: parsed
                .services
                .into_iter()
                .map(|s| Service {
                    name: s.name,
                    deadline: s.deadline,
                    due_soon: s.due_soon,
                    description: s.description,
                    implicit_decision: s.implicit,
                    contact: s.contact,
                })
                .collect(),
            manual_service: parsed.manual_service,
            calendar: parsed.calendar,
            rules,
            vocab: parsed.vocab,
            matcher,
            postings,
            always,
        })
    }

    /// Every service of the file, in file order (the router makes one
    /// durable consumer per service).
    pub fn services(&self) -> &[Service] {
        &self.services
    }

    /// Where contacts no rule matches go.
    pub fn manual_service(&self) -> &str {
        &self.manual_service
    }

    pub fn calendar(&self) -> &Calendar {
        &self.calendar
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The first rule, in file order, whose condition holds; the manual
    /// service when none does.
    pub fn evaluate(&self, contact: &Contact) -> Evaluation {
        let facts = self.matcher.facts(contact);
        let mut candidates = self.always.clone();
        for &a in &facts.atoms {
            if let Some(rules) = self.postings.get(a as usize) {
                candidates.extend_from_slice(rules);
            }
        }
        candidates.sort_unstable();
        candidates.dedup();
        for (examined, &i) in candidates.iter().enumerate() {
            let rule = &self.rules[i as usize];
            if rule.condition.as_ref().is_none_or(|c| c.eval(&facts)) {
                let mut explanation = Vec::new();
                match &rule.condition {
                    Some(c) => c.explain(&facts, &self.vocab, &mut explanation),
                    None => explanation.push("no condition: the rule matches every contact".to_owned()),
                }
                if rule.discard {
                    explanation.push("discarded as noise: recorded, not put before an agent".to_owned());
                }
                explanation.push(if rule.deadline_from_service {
                    format!("deadline {} (default of service {})", rule.deadline, rule.service)
                } else {
                    format!("deadline {} (set by the rule)", rule.deadline)
                });
                if let Some(implicit) = rule.implicit {
                    explanation.push(format!(
                        "implicit {} after {} of silence (CRPA L231-1); the delay restarts when missing pieces arrive",
                        implicit.kind.as_str(),
                        implicit.delay
                    ));
                }
                return Evaluation {
                    rule_id: Some(rule.id.clone()),
                    rule_line: Some(rule.line),
                    typology: rule.typology.clone(),
                    service: rule.service.clone(),
                    priority: rule.priority,
                    deadline: rule.deadline,
                    implicit_decision: rule.implicit,
                    tags: rule.tags.clone(),
                    discard: rule.discard,
                    explanation,
                    rules_examined: examined + 1,
                };
            }
        }
        let deadline = self.service_deadline(&self.manual_service);
        Evaluation {
            rule_id: None,
            rule_line: None,
            typology: String::new(),
            service: self.manual_service.clone(),
            priority: Priority::Normal,
            deadline,
            implicit_decision: None,
            tags: Vec::new(),
            discard: false,
            explanation: vec![
                format!(
                    "no rule matched: manual qualification by service {}",
                    self.manual_service
                ),
                format!("deadline {deadline} (default of service {})", self.manual_service),
            ],
            rules_examined: candidates.len(),
        }
    }

    /// When a contact received at `received_at` is due under `deadline`,
    /// on this file's calendar.
    pub fn due(&self, received_at: DateTime<Utc>, deadline: Deadline) -> Due {
        self.calendar.due(received_at, deadline)
    }

    /// Evaluation and due date in one call: the contract's `Qualification`.
    /// The due date counts from `contact.received_at` (from now if absent).
    pub fn qualify(&self, contact: &Contact, rules_revision: u64) -> Qualification {
        let evaluation = self.evaluate(contact);
        let received_at = contact
            .received_at
            .as_ref()
            .and_then(guichet_core::proto::to_datetime)
            .unwrap_or_else(Utc::now);
        let mut q = evaluation.qualification(&self.due(received_at, evaluation.deadline), rules_revision);
        q.legal_due_at = evaluation
            .implicit_decision
            .map(|i| guichet_core::proto::timestamp(i.delay.after(received_at)));
        q
    }

    fn service_deadline(&self, name: &str) -> Deadline {
        self.services
            .iter()
            .find(|s| s.name == name)
            .map_or(Deadline::BusinessDays(1), |s| s.deadline)
    }

    /// The deadline a request decided by rule `rule_id` (empty: no rule
    /// matched, the manual service's) is counted in, or `None` when this
    /// revision no longer has that rule.
    pub fn deadline_of(&self, rule_id: &str) -> Option<Deadline> {
        if rule_id.is_empty() {
            return Some(self.service_deadline(&self.manual_service));
        }
        self.rules.iter().find(|r| r.id == rule_id).map(|r| r.deadline)
    }

    /// The `due_soon` of service `name`, if it sets one.
    pub fn due_soon_of(&self, name: &str) -> Option<Deadline> {
        self.services.iter().find(|s| s.name == name).and_then(|s| s.due_soon)
    }

    /// Every rule's id, in file order (`guichet rules replay` reports the
    /// ones that would never fire).
    pub fn rule_ids(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.id.as_str())
    }

    /// Describes the rule `id` for operators (`guichet rules test`).
    pub fn rule_description(&self, id: &str) -> Option<&str> {
        self.rules.iter().find(|r| r.id == id).map(|r| r.description.as_str())
    }
}

/// Reports rules that can never match because an earlier rule matches
/// everything they would: an earlier rule without condition, one with the
/// same condition, or (for plain `when` tables) one whose every test is
/// implied by theirs (`keywords = ["a"]` before `keywords = ["a"], channel = "email"`).
fn check_shadowing(rules: &[ParsedRule], vocab: &Vocabulary, d: &mut Diagnostics<'_>) {
    let mut catch_all: Option<usize> = None;
    let mut canonical: HashMap<String, usize> = HashMap::new();
    let mut index: HashMap<AtomId, Vec<usize>> = HashMap::new();
    let mut unindexed: Vec<usize> = Vec::new();
    let leaf_cost = |n: &Node| match n {
        Node::Atoms(atoms) => atoms.iter().map(|&a| u64::from(vocab.key(a).cost())).sum::<u64>(),
        _ => u64::MAX,
    };
    for (i, rule) in rules.iter().enumerate() {
        if rule.broken {
            continue;
        }
        let shadowed_by = catch_all.or_else(|| {
            let node = rule.condition.as_ref()?;
            if let Some(&a) = canonical.get(&node.canonical()) {
                return Some(a);
            }
            let mine = node.conjunction()?;
            let mut candidates: Vec<usize> = unindexed.clone();
            for leaf in &mine {
                if let Node::Atoms(atoms) = leaf
                    && let Some(first) = atoms.first()
                    && let Some(rules) = index.get(first)
                {
                    candidates.extend(rules);
                }
            }
            candidates.sort_unstable();
            candidates.dedup();
            candidates.into_iter().find(|&a| {
                rules[a]
                    .condition
                    .as_ref()
                    .and_then(Node::conjunction)
                    .is_some_and(|theirs| theirs.iter().all(|t| mine.iter().any(|m| m.implies(t))))
            })
        });
        if let Some(a) = shadowed_by {
            let earlier = &rules[a];
            let why = if earlier.condition.is_none() {
                "has no condition and matches every contact"
            } else {
                "matches every contact this one would"
            };
            d.error(
                &rule.span,
                format!(
                    "rule `{}` can never match: rule `{}` (line {}) comes first and {why}",
                    rule.id,
                    earlier.id,
                    d.line_of(&earlier.span)
                ),
                Some("a more specific rule before a more general one: move it up, or remove it"),
            );
            continue;
        }
        let Some(node) = &rule.condition else {
            catch_all = Some(i);
            continue;
        };
        canonical.entry(node.canonical()).or_insert(i);
        if let Some(leaves) = node.conjunction() {
            match leaves
                .into_iter()
                .filter(|l| matches!(l, Node::Atoms(_)))
                .min_by_key(|l| leaf_cost(l))
            {
                Some(Node::Atoms(key)) => key.iter().for_each(|a| index.entry(*a).or_default().push(i)),
                _ => unindexed.push(i),
            }
        }
    }
}
