//! Reading a rules file: a walk over toml's spanned document tree that
//! records every problem with its position and goes on, instead of
//! stopping at the first one as a serde derive would.

use std::{
    collections::{BTreeSet, HashMap},
    ops::Range,
};

use chrono::{NaiveDate, NaiveTime};
use guichet_core::{bus::subjects::is_token, proto::v1::Channel, proto::v1::Priority};
use toml::{
    Spanned,
    de::{DeTable, DeValue},
};

use crate::{
    Calendar, Deadline,
    deadline::DEADLINE_FORMS,
    diagnostics::Diagnostics,
    fold::fold,
    implicit::{ImplicitDecision, ImplicitKind, LegalDelay},
    matcher::{AtomKey, FLAGS, Node, Vocabulary},
};

type Value<'i> = Spanned<DeValue<'i>>;

pub(crate) struct ParsedService {
    pub name: String,
    pub deadline: Deadline,
    pub due_soon: Option<Deadline>,
    pub description: String,
    pub implicit: Option<ImplicitDecision>,
    pub contact: crate::ServiceContact,
    pub span: Range<usize>,
}

pub(crate) struct ParsedRule {
    pub id: String,
    /// The span of the `id` value, or of the table when it has none.
    pub span: Range<usize>,
    pub description: String,
    /// `None`: no `when`, the rule matches every contact.
    pub condition: Option<Node>,
    /// The rule had an error: it is not checked for shadowing.
    pub broken: bool,
    pub typology: String,
    pub service: Option<(String, Range<usize>)>,
    pub priority: Priority,
    pub deadline: Option<Deadline>,
    pub implicit: Option<ImplicitDecision>,
    pub tags: Vec<String>,
    pub discard: bool,
}

pub(crate) struct Parsed {
    pub services: Vec<ParsedService>,
    pub manual_service: String,
    pub calendar: Calendar,
    pub rules: Vec<ParsedRule>,
    pub vocab: Vocabulary,
}

const TOP_KEYS: &[&str] = &["manual_service", "calendar", "services", "rules"];
const SERVICE_KEYS: &[&str] = &[
    "name",
    "deadline",
    "due_soon",
    "description",
    "implicit_decision",
    "designation",
    "postal_address",
    "email",
    "phone",
];
const IMPLICIT_FORMS: &str =
    "implicit_decision = { kind = \"acceptance\" or \"rejection\", delay = \"2 months\" } (months or days)";
const CALENDAR_KEYS: &[&str] = &["time_zone", "business_hours_end", "alsace_moselle", "closures"];
const RULE_KEYS: &[&str] = &[
    "id",
    "description",
    "when",
    "typology",
    "service",
    "priority",
    "deadline",
    "implicit_decision",
    "tags",
    "discard",
];
const CONDITION_KEYS: &[&str] = &[
    "channel",
    "source",
    "sender_domain",
    "keywords",
    "subject_matches",
    "body_matches",
    "fields",
    "postal_code",
    "attachments",
    "flags",
    "all",
    "any",
    "not",
];
const FIELD_TEST_KEYS: &[&str] = &["equals", "contains", "present"];
const CHANNELS: &str = "one of: email, web, phone, counter, postal";
const PRIORITIES: &str = "one of: low, normal, high, urgent";
const TOKEN: &str = "letters, digits, '-' or '_', at most 64 (e.g. \"etat-civil\")";

/// Walks the document; problems go to `d`. The result is only meaningful
/// when `d` stayed empty.
pub(crate) fn parse<'t>(text: &'t str, d: &mut Diagnostics<'t>) -> Parsed {
    let (root, syntax) = DeTable::parse_recoverable(text);
    let mut walk = Walk {
        d,
        text,
        vocab: Vocabulary::default(),
    };
    if !syntax.is_empty() {
        // A half-read document would only produce misleading follow-on
        // errors ("missing key"): report the syntax errors alone.
        for e in syntax {
            let span = e.span().unwrap_or(0..0);
            walk.d
                .error(&span, format!("TOML syntax: {}", e.message().trim()), None);
        }
        return walk.finish(Vec::new(), String::new(), Calendar::default(), Vec::new());
    }
    let root_span = root.span();
    let root = root.into_inner();

    let (mut services, mut manual, mut calendar, mut rules) = (None, None, None, None);
    for (key, value) in root.iter() {
        match key.get_ref().as_ref() {
            "services" => services = Some(value),
            "manual_service" => manual = Some(value),
            "calendar" => calendar = Some(value),
            "rules" => rules = Some(value),
            other => walk.unknown_key(key.span(), other, "the rules file", TOP_KEYS),
        }
    }

    let services = match services {
        Some(v) => walk.services(v),
        None => {
            walk.d.error(
                &root_span,
                "no [[services]]",
                Some("at least one [[services]] table with name and deadline"),
            );
            Vec::new()
        }
    };
    let known: HashMap<&str, ()> = services.iter().map(|s| (s.name.as_str(), ())).collect();
    let service_list = || {
        let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
        if names.is_empty() {
            "a service declared in a [[services]] table".to_owned()
        } else {
            format!("one of the [[services]] names: {}", names.join(", "))
        }
    };
    let manual_service = match manual {
        Some(v) => match walk.string("manual_service", v) {
            Some(name) if known.contains_key(name) => name.to_owned(),
            Some(name) => {
                walk.d.error(
                    &v.span(),
                    format!("unknown service `{name}` in `manual_service`"),
                    Some(&service_list()),
                );
                String::new()
            }
            None => String::new(),
        },
        None => {
            walk.d.error(
                &root_span,
                "no `manual_service`: contacts no rule matches must go somewhere",
                Some("manual_service = \"<a service name>\" at the top of the file"),
            );
            String::new()
        }
    };
    let calendar = calendar.map_or_else(Calendar::default, |v| walk.calendar(v));
    let rules = match rules {
        Some(v) => walk.rules(v),
        None => Vec::new(),
    };
    for rule in &rules {
        if let Some((name, span)) = &rule.service
            && !known.contains_key(name.as_str())
        {
            walk.d.error(
                span,
                format!("unknown service `{name}` in rule `{}`", rule.id),
                Some(&service_list()),
            );
        }
    }
    walk.finish(services, manual_service, calendar, rules)
}

struct Walk<'d, 't> {
    d: &'d mut Diagnostics<'t>,
    text: &'t str,
    vocab: Vocabulary,
}

impl Walk<'_, '_> {
    fn finish(
        self,
        services: Vec<ParsedService>,
        manual_service: String,
        calendar: Calendar,
        rules: Vec<ParsedRule>,
    ) -> Parsed {
        Parsed {
            services,
            manual_service,
            calendar,
            rules,
            vocab: self.vocab,
        }
    }

    fn unknown_key(&mut self, span: Range<usize>, key: &str, context: &str, allowed: &[&str]) {
        let mut message = format!("unknown key `{key}` in {context}");
        if let Some(close) = allowed.iter().find(|a| edit_distance(a, key) <= 2) {
            message.push_str(&format!("; did you mean `{close}`?"));
        }
        self.d
            .error(&span, message, Some(&format!("one of: {}", allowed.join(", "))));
    }

    fn wrong_type(&mut self, key: &str, value: &Value<'_>, expected: &str) {
        let found = value.get_ref().type_str();
        self.d.error(
            &value.span(),
            format!("`{key}` must be {expected}, not {}", article(found)),
            Some(expected),
        );
    }

    fn string<'v>(&mut self, key: &str, value: &'v Value<'_>) -> Option<&'v str> {
        match value.get_ref() {
            DeValue::String(s) => Some(s.as_ref()),
            _ => {
                self.wrong_type(key, value, "a string");
                None
            }
        }
    }

    fn boolean(&mut self, key: &str, value: &Value<'_>) -> Option<bool> {
        match value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.wrong_type(key, value, "true or false");
                None
            }
        }
    }

    fn table<'v, 'i>(&mut self, key: &str, value: &'v Value<'i>) -> Option<&'v DeTable<'i>> {
        match value.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => {
                self.wrong_type(key, value, "a table");
                None
            }
        }
    }

    /// An array of tables (`[[key]]`), with each table's span.
    fn tables<'v, 'i>(&mut self, key: &str, value: &'v Value<'i>) -> Vec<(&'v DeTable<'i>, Range<usize>)> {
        let DeValue::Array(items) = value.get_ref() else {
            self.wrong_type(key, value, &format!("an array of tables ([[{key}]])"));
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items.iter() {
            if let Some(t) = self.table(key, item) {
                out.push((t, item.span()));
            }
        }
        out
    }

    /// A string or a non-empty array of strings, each with its span.
    fn strings<'v>(&mut self, key: &str, value: &'v Value<'_>) -> Option<Vec<(&'v str, Range<usize>)>> {
        match value.get_ref() {
            DeValue::String(s) => Some(vec![(s.as_ref(), value.span())]),
            DeValue::Array(items) if items.is_empty() => {
                self.d.error(
                    &value.span(),
                    format!("`{key}` is an empty list"),
                    Some("at least one value"),
                );
                None
            }
            DeValue::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                let mut ok = true;
                for item in items.iter() {
                    match item.get_ref() {
                        DeValue::String(s) => out.push((s.as_ref(), item.span())),
                        _ => {
                            self.wrong_type(key, item, "a string");
                            ok = false;
                        }
                    }
                }
                ok.then_some(out)
            }
            _ => {
                self.wrong_type(key, value, "a string or an array of strings");
                None
            }
        }
    }

    fn services(&mut self, value: &Value<'_>) -> Vec<ParsedService> {
        let mut out: Vec<ParsedService> = Vec::new();
        for (table, span) in self.tables("services", value) {
            let (mut name, mut deadline, mut description) = (None, None, String::new());
            let (mut implicit, mut due_soon) = (None, None);
            let mut contact = crate::ServiceContact::default();
            for (key, value) in table.iter() {
                match key.get_ref().as_ref() {
                    "name" => {
                        if let Some(s) = self.string("name", value) {
                            if !is_token(s) {
                                self.d.error(
                                    &value.span(),
                                    format!("service name `{s}` cannot be a NATS subject token"),
                                    Some(TOKEN),
                                );
                            } else if let Some(first) = out.iter().find(|o| o.name == s) {
                                let line = self.d.line_of(&first.span);
                                self.d.error(
                                    &value.span(),
                                    format!("service `{s}` is declared twice (first on line {line})"),
                                    Some("unique service names"),
                                );
                            } else {
                                name = Some((s.to_owned(), value.span()));
                            }
                        }
                    }
                    "deadline" => deadline = self.deadline(value),
                    "due_soon" => due_soon = self.deadline(value),
                    "implicit_decision" => implicit = self.implicit(value),
                    "description" => description = self.string("description", value).unwrap_or("").to_owned(),
                    field @ ("designation" | "postal_address" | "email" | "phone") => {
                        let text = self.string(field, value).unwrap_or("").trim().to_owned();
                        if let Err(why) = crate::ServiceContact::check_field(field, &text) {
                            self.d.error(&value.span(), why, Some(crate::service_contact::EXPECTED));
                        }
                        contact.set(field, text);
                    }
                    other => self.unknown_key(key.span(), other, "[[services]]", SERVICE_KEYS),
                }
            }
            if !table.contains_key("name") {
                self.d
                    .error(&span, "[[services]] without `name`", Some("name = \"<service>\""));
            }
            if !table.contains_key("deadline") {
                self.d.error(
                    &span,
                    "[[services]] without `deadline` (the default deadline of the service)",
                    Some(DEADLINE_FORMS),
                );
            }
            if let Some(missing) = contact.missing() {
                self.d.error(
                    &span,
                    format!("[[services]] gives part of the service's contact details but not `{missing}`: the accusé de réception needs all four (R112-5)"),
                    Some(crate::service_contact::EXPECTED),
                );
            }
            if let Some((name, span)) = name {
                // A bad or missing deadline is already an error; the name
                // stays known so that rules naming it are not reported too.
                let deadline = deadline.unwrap_or(Deadline::BusinessDays(1));
                out.push(ParsedService {
                    name,
                    deadline,
                    due_soon,
                    description,
                    implicit,
                    contact,
                    span,
                });
            }
        }
        out
    }

    /// `{ kind = "acceptance" | "rejection", delay = "2 months" }`.
    fn implicit(&mut self, value: &Value<'_>) -> Option<ImplicitDecision> {
        let table = self.table("implicit_decision", value)?;
        let (mut kind, mut delay) = (None, None);
        for (key, value) in table.iter() {
            match key.get_ref().as_ref() {
                "kind" => {
                    let text = self.string("kind", value)?;
                    match text.trim().to_ascii_lowercase().as_str() {
                        "acceptance" => kind = Some(ImplicitKind::Acceptance),
                        "rejection" => kind = Some(ImplicitKind::Rejection),
                        _ => self.d.error(
                            &value.span(),
                            format!("unknown implicit decision kind `{text}`"),
                            Some("kind = \"acceptance\" or \"rejection\""),
                        ),
                    }
                }
                "delay" => {
                    let text = self.string("delay", value)?;
                    match LegalDelay::parse(text) {
                        Ok(d) => delay = Some(d),
                        Err(why) => self
                            .d
                            .error(&value.span(), format!("bad delay {why}"), Some(IMPLICIT_FORMS)),
                    }
                }
                other => self.unknown_key(key.span(), other, "implicit_decision", &["kind", "delay"]),
            }
        }
        if !table.contains_key("kind") || !table.contains_key("delay") {
            self.d.error(
                &value.span(),
                "implicit_decision needs both `kind` and `delay`",
                Some(IMPLICIT_FORMS),
            );
        }
        Some(ImplicitDecision {
            kind: kind?,
            delay: delay?,
        })
    }

    fn deadline(&mut self, value: &Value<'_>) -> Option<Deadline> {
        let text = self.string("deadline", value)?;
        match Deadline::parse(text) {
            Ok(d) => Some(d),
            Err(why) => {
                self.d.error(
                    &value.span(),
                    format!("bad deadline \"{text}\": {why}"),
                    Some(DEADLINE_FORMS),
                );
                None
            }
        }
    }

    fn calendar(&mut self, value: &Value<'_>) -> Calendar {
        let mut calendar = Calendar::default();
        let Some(table) = self.table("calendar", value) else {
            return calendar;
        };
        for (key, value) in table.iter() {
            match key.get_ref().as_ref() {
                "time_zone" => {
                    if let Some(s) = self.string("time_zone", value) {
                        match s.parse::<chrono_tz::Tz>() {
                            Ok(tz) => calendar.time_zone = tz,
                            Err(_) => self.d.error(
                                &value.span(),
                                format!("unknown time zone `{s}`"),
                                Some("an IANA time zone name such as \"Europe/Paris\" or \"Indian/Reunion\""),
                            ),
                        }
                    }
                }
                "business_hours_end" => {
                    if let Some(s) = self.string("business_hours_end", value) {
                        match NaiveTime::parse_from_str(s, "%H:%M") {
                            Ok(t) => calendar.business_hours_end = t,
                            Err(_) => self.d.error(
                                &value.span(),
                                format!("bad time \"{s}\""),
                                Some("a local time \"HH:MM\", e.g. \"17:00\""),
                            ),
                        }
                    }
                }
                "alsace_moselle" => {
                    if let Some(b) = self.boolean("alsace_moselle", value) {
                        calendar.alsace_moselle = b;
                    }
                }
                "closures" => calendar.closures = self.closures(value),
                other => self.unknown_key(key.span(), other, "[calendar]", CALENDAR_KEYS),
            }
        }
        calendar
    }

    fn closures(&mut self, value: &Value<'_>) -> BTreeSet<NaiveDate> {
        const EXPECTED: &str = "dates \"YYYY-MM-DD\", e.g. closures = [\"2026-12-24\", \"2026-12-31\"]";
        let mut out = BTreeSet::new();
        let DeValue::Array(items) = value.get_ref() else {
            self.wrong_type("closures", value, "an array of dates");
            return out;
        };
        for item in items.iter() {
            let date = match item.get_ref() {
                DeValue::String(s) => NaiveDate::parse_from_str(s, "%Y-%m-%d").ok(),
                DeValue::Datetime(dt) if dt.time.is_none() && dt.offset.is_none() => dt
                    .date
                    .and_then(|d| NaiveDate::from_ymd_opt(i32::from(d.year), u32::from(d.month), u32::from(d.day))),
                _ => None,
            };
            match date {
                Some(d) => {
                    out.insert(d);
                }
                None => self.d.error(&item.span(), "bad closure date", Some(EXPECTED)),
            }
        }
        out
    }

    fn rules(&mut self, value: &Value<'_>) -> Vec<ParsedRule> {
        let mut out: Vec<ParsedRule> = Vec::new();
        let mut seen: HashMap<String, Range<usize>> = HashMap::new();
        for (table, span) in self.tables("rules", value) {
            let before = self.error_count();
            let mut rule = ParsedRule {
                id: String::new(),
                span: span.clone(),
                description: String::new(),
                condition: None,
                broken: false,
                typology: String::new(),
                service: None,
                priority: Priority::Normal,
                deadline: None,
                implicit: None,
                tags: Vec::new(),
                discard: false,
            };
            for (key, value) in table.iter() {
                match key.get_ref().as_ref() {
                    "id" => {
                        let Some(id) = self.string("id", value) else { continue };
                        rule.span = value.span();
                        if !is_token(id) {
                            self.d.error(&value.span(), format!("bad rule id `{id}`"), Some(TOKEN));
                        } else if let Some(first) = seen.get(id) {
                            let line = self.d.line_of(first);
                            self.d.error(
                                &value.span(),
                                format!("duplicate rule id `{id}` (first used on line {line})"),
                                Some("a unique id per rule"),
                            );
                        } else {
                            seen.insert(id.to_owned(), value.span());
                        }
                        rule.id = id.to_owned();
                    }
                    "description" => rule.description = self.string("description", value).unwrap_or("").to_owned(),
                    "when" => rule.condition = self.condition("when", value),
                    "typology" => {
                        if let Some(t) = self.string("typology", value) {
                            if is_token(t) {
                                rule.typology = t.to_owned();
                            } else {
                                self.d.error(&value.span(), format!("bad typology `{t}`"), Some(TOKEN));
                            }
                        }
                    }
                    "service" => {
                        if let Some(s) = self.string("service", value) {
                            rule.service = Some((s.to_owned(), value.span()));
                        }
                    }
                    "priority" => {
                        if let Some(p) = self.string("priority", value) {
                            match p.trim().to_ascii_lowercase().as_str() {
                                "low" => rule.priority = Priority::Low,
                                "normal" => rule.priority = Priority::Normal,
                                "high" => rule.priority = Priority::High,
                                "urgent" => rule.priority = Priority::Urgent,
                                _ => self
                                    .d
                                    .error(&value.span(), format!("unknown priority `{p}`"), Some(PRIORITIES)),
                            }
                        }
                    }
                    "deadline" => rule.deadline = self.deadline(value),
                    "implicit_decision" => rule.implicit = self.implicit(value),
                    "tags" => {
                        if let Some(tags) = self.strings("tags", value) {
                            for (tag, span) in tags {
                                if tag.trim().is_empty() {
                                    self.d.error(&span, "empty tag", Some("a non-empty string"));
                                } else {
                                    rule.tags.push(tag.trim().to_owned());
                                }
                            }
                        }
                    }
                    "discard" => rule.discard = self.boolean("discard", value).unwrap_or(false),
                    other => self.unknown_key(key.span(), other, "[[rules]]", RULE_KEYS),
                }
            }
            if !table.contains_key("id") {
                self.d
                    .error(&span, "[[rules]] without `id`", Some("id = \"<unique-rule-id>\""));
            }
            if rule.service.is_none() && !rule.discard {
                self.d.error(
                    &rule.span,
                    format!("rule `{}` names no `service`", rule.id),
                    Some("service = \"<a service name>\", or discard = true for noise"),
                );
            }
            // `when` was given but was invalid: not an unconditional rule.
            if table.contains_key("when") && rule.condition.is_none() {
                rule.broken = true;
            }
            rule.broken |= self.error_count() > before;
            out.push(rule);
        }
        out
    }

    fn error_count(&self) -> usize {
        self.d.len()
    }

    /// A condition table: every key is one test, all must hold.
    fn condition(&mut self, key: &str, value: &Value<'_>) -> Option<Node> {
        let table = self.table(key, value)?;
        if table.is_empty() {
            self.d.error(
                &value.span(),
                format!("empty condition `{key}`"),
                Some(&format!(
                    "at least one of: {}; or no `when` at all for a rule that matches everything",
                    CONDITION_KEYS.join(", ")
                )),
            );
            return None;
        }
        let mut parts = Vec::new();
        let mut ok = true;
        for (k, v) in table.iter() {
            match self.when_condition(k.get_ref().as_ref(), k.span(), v) {
                Some(node) => parts.push(node),
                None => ok = false,
            }
        }
        if !ok {
            return None;
        }
        Some(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Node::All(parts)
        })
    }

    fn atoms(&mut self, keys: Vec<AtomKey>) -> Node {
        let mut ids: Vec<u32> = keys.into_iter().map(|k| self.vocab.intern(k)).collect();
        ids.sort_unstable();
        ids.dedup();
        Node::Atoms(ids)
    }

    /// One `when.<key>` condition of a condition table (channel, source, …).
    fn when_condition(&mut self, key: &str, key_span: Range<usize>, value: &Value<'_>) -> Option<Node> {
        match key {
            "channel" => {
                let mut keys = Vec::new();
                for (c, span) in self.strings(key, value)? {
                    match Channel::from_token(c) {
                        Some(ch) => keys.push(AtomKey::Channel(ch as i32)),
                        None => self.d.error(&span, format!("unknown channel `{c}`"), Some(CHANNELS)),
                    }
                }
                (keys.len() == self.count(value)).then(|| self.atoms(keys))
            }
            "source" => {
                let keys = self.non_empty(key, value, |s| AtomKey::Source(s.trim().to_lowercase()))?;
                Some(self.atoms(keys))
            }
            "sender_domain" => {
                let mut keys = Vec::new();
                for (d, span) in self.strings(key, value)? {
                    let domain = d
                        .trim()
                        .trim_start_matches(['@', '.'])
                        .trim_end_matches('.')
                        .to_ascii_lowercase();
                    let valid = domain.contains('.')
                        && domain.split('.').all(|l| !l.is_empty())
                        && domain
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
                    if valid {
                        keys.push(AtomKey::SenderDomain(domain));
                    } else {
                        self.d.error(
                            &span,
                            format!("`{d}` is not a domain"),
                            Some("a domain such as \"example.fr\" (subdomains match too)"),
                        );
                    }
                }
                (keys.len() == self.count(value)).then(|| self.atoms(keys))
            }
            "keywords" => {
                let mut keys = Vec::new();
                for (k, span) in self.strings(key, value)? {
                    let folded = fold(k);
                    let (text, prefix) = match folded.strip_suffix('*') {
                        Some(stem) => (stem.trim_end().to_owned(), true),
                        None => (folded.clone(), false),
                    };
                    if text.is_empty() {
                        self.d.error(
                            &span,
                            "empty keyword",
                            Some("a word or phrase, e.g. \"encombrants\" or \"dechet*\""),
                        );
                    } else if text.contains('*') {
                        self.d.error(
                            &span,
                            format!("`*` inside keyword \"{k}\""),
                            Some("`*` only at the end, for a prefix: \"dechet*\""),
                        );
                    } else {
                        keys.push(AtomKey::Keyword { text, prefix });
                    }
                }
                (keys.len() == self.count(value)).then(|| self.atoms(keys))
            }
            "subject_matches" | "body_matches" => {
                let mut keys = Vec::new();
                for (re, span) in self.strings(key, value)? {
                    if self.regex(re, &span) {
                        keys.push(if key == "subject_matches" {
                            AtomKey::SubjectRegex(re.to_owned())
                        } else {
                            AtomKey::BodyRegex(re.to_owned())
                        });
                    }
                }
                (keys.len() == self.count(value)).then(|| self.atoms(keys))
            }
            "fields" => self.fields(value),
            "postal_code" => {
                let mut keys = Vec::new();
                for (p, span) in self.strings(key, value)? {
                    let p = p.trim();
                    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                        self.d.error(
                            &span,
                            format!("`{p}` is not a postal code or prefix"),
                            Some("1 to 5 digits: \"67\" (a prefix: Bas-Rhin) or \"67000\" (exact)"),
                        );
                    } else if p.len() == 5 {
                        keys.push(AtomKey::PostalExact(p.to_owned()));
                    } else {
                        keys.push(AtomKey::PostalPrefix(p.to_owned()));
                    }
                }
                (keys.len() == self.count(value)).then(|| self.atoms(keys))
            }
            "attachments" => {
                let b = self.boolean(key, value)?;
                Some(self.atoms(vec![AtomKey::Attachments(b)]))
            }
            "flags" => {
                let mut keys = Vec::new();
                for (f, span) in self.strings(key, value)? {
                    match FLAGS.iter().find(|(name, _)| *name == f.trim()) {
                        Some((_, kind)) => keys.push(AtomKey::Flag(*kind as i32)),
                        None => {
                            let names: Vec<&str> = FLAGS.iter().map(|(n, _)| *n).collect();
                            self.d.error(
                                &span,
                                format!("unknown flag `{f}`"),
                                Some(&format!("one of: {}", names.join(", "))),
                            );
                        }
                    }
                }
                (keys.len() == self.count(value)).then(|| self.atoms(keys))
            }
            "all" | "any" => {
                let DeValue::Array(items) = value.get_ref() else {
                    self.wrong_type(
                        key,
                        value,
                        "an array of condition tables, e.g. [{ channel = \"email\" }, { keywords = [\"x\"] }]",
                    );
                    return None;
                };
                if items.is_empty() {
                    self.d.error(
                        &value.span(),
                        format!("empty condition `{key}`"),
                        Some("at least one condition table"),
                    );
                    return None;
                }
                let mut nodes = Vec::new();
                let mut ok = true;
                for item in items.iter() {
                    match self.condition(key, item) {
                        Some(n) => nodes.push(n),
                        None => ok = false,
                    }
                }
                if !ok {
                    return None;
                }
                Some(if key == "all" {
                    Node::All(nodes)
                } else {
                    Node::Any(nodes)
                })
            }
            "not" => Some(Node::Not(Box::new(self.condition(key, value)?))),
            other => {
                self.unknown_key(key_span, other, "a condition", CONDITION_KEYS);
                None
            }
        }
    }

    fn count(&self, value: &Value<'_>) -> usize {
        match value.get_ref() {
            DeValue::Array(items) => items.len(),
            _ => 1,
        }
    }

    fn non_empty(&mut self, key: &str, value: &Value<'_>, make: impl Fn(&str) -> AtomKey) -> Option<Vec<AtomKey>> {
        let mut keys = Vec::new();
        for (s, span) in self.strings(key, value)? {
            if s.trim().is_empty() {
                self.d.error(&span, format!("empty `{key}`"), Some("a non-empty name"));
            } else {
                keys.push(make(s));
            }
        }
        (keys.len() == self.count(value)).then_some(keys)
    }

    /// `fields.<name> = "value"`, `["a", "b"]`, `{ equals | contains | present }`.
    fn fields(&mut self, value: &Value<'_>) -> Option<Node> {
        const EXPECTED: &str = "a value, a list of values, or one of { equals = \"...\" }, { contains = \"...\" }, { present = true|false }";
        let table = self.table("fields", value)?;
        if table.is_empty() {
            self.d.error(
                &value.span(),
                "empty condition `fields`",
                Some("fields.<name> = \"value\""),
            );
            return None;
        }
        let mut parts = Vec::new();
        let mut ok = true;
        for (name_key, test) in table.iter() {
            let name = name_key.get_ref().trim().to_lowercase();
            let node = match test.get_ref() {
                DeValue::String(_) | DeValue::Array(_) => {
                    let n = name.clone();
                    self.non_empty(&format!("fields.{name}"), test, move |v| {
                        AtomKey::FieldEquals(n.clone(), fold(v))
                    })
                    .map(|keys| self.atoms(keys))
                }
                DeValue::Table(t) if t.len() == 1 => {
                    let (k, v) = t.iter().next()?;
                    match k.get_ref().as_ref() {
                        "equals" => {
                            let n = name.clone();
                            self.non_empty("equals", v, move |s| AtomKey::FieldEquals(n.clone(), fold(s)))
                                .map(|keys| self.atoms(keys))
                        }
                        "contains" => match self.string("contains", v).map(fold) {
                            Some(needle) if !needle.is_empty() => {
                                // Interned so that the rule index can file
                                // the rule under "field present".
                                self.vocab.intern(AtomKey::FieldPresent(name.clone()));
                                Some(Node::FieldContains {
                                    name: name.clone(),
                                    needle,
                                })
                            }
                            Some(_) => {
                                self.d.error(&v.span(), "empty `contains`", Some("a non-empty string"));
                                None
                            }
                            None => None,
                        },
                        "present" => self.boolean("present", v).map(|present| {
                            let atoms = self.atoms(vec![AtomKey::FieldPresent(name.clone())]);
                            if present { atoms } else { Node::Not(Box::new(atoms)) }
                        }),
                        other => {
                            self.unknown_key(k.span(), other, &format!("fields.{name}"), FIELD_TEST_KEYS);
                            None
                        }
                    }
                }
                _ => {
                    self.d.error(
                        &test.span(),
                        format!("bad test for form field `{name}`"),
                        Some(EXPECTED),
                    );
                    None
                }
            };
            match node {
                Some(n) => parts.push(n),
                None => ok = false,
            }
        }
        if !ok {
            return None;
        }
        Some(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Node::All(parts)
        })
    }

    /// Checks one regex, pointing inside the string at the fault when the
    /// string has no escapes (so that offsets in it are offsets in the file).
    fn regex(&mut self, pattern: &str, span: &Range<usize>) -> bool {
        const EXPECTED: &str = "a regular expression (Rust regex syntax; (?i) for case-insensitive)";
        let inner_offset = |at: usize| -> Range<usize> {
            let raw = self.text.get(span.clone()).unwrap_or("");
            if raw.len() == pattern.len() + 2 && raw.get(1..raw.len() - 1) == Some(pattern) {
                span.start + 1 + at..span.end
            } else {
                span.clone()
            }
        };
        match regex_syntax::Parser::new().parse(pattern) {
            Err(regex_syntax::Error::Parse(e)) => {
                let at = inner_offset(e.span().start.offset);
                self.d.error(&at, format!("bad regex: {}", e.kind()), Some(EXPECTED));
                return false;
            }
            Err(regex_syntax::Error::Translate(e)) => {
                let at = inner_offset(e.span().start.offset);
                self.d.error(&at, format!("bad regex: {}", e.kind()), Some(EXPECTED));
                return false;
            }
            Err(e) => {
                self.d.error(span, format!("bad regex: {e}"), Some(EXPECTED));
                return false;
            }
            Ok(_) => {}
        }
        if let Err(e) = regex::Regex::new(pattern) {
            let why = e.to_string();
            let why = why.lines().last().unwrap_or("").trim();
            self.d.error(span, format!("bad regex: {why}"), Some(EXPECTED));
            return false;
        }
        true
    }
}

/// "a string", "an array", "an integer".
fn article(kind: &str) -> String {
    if kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
        format!("an {kind}")
    } else {
        format!("a {kind}")
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(current + 1);
            prev = current;
        }
    }
    row[b.len()]
}
