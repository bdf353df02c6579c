//! Compiled matching: what is true of a contact, computed once per contact
//! whatever the number of rules.
//!
//! Every leaf condition of every rule is interned as an *atom* ("channel is
//! email", "keyword `dechets`", "subject matches /…/", "postal code starts
//! with 67"). One pass over a contact computes the set of true atoms: all
//! keywords through ONE Aho-Corasick automaton over the folded text, all
//! regexes through one `RegexSet` per text (subject, body), everything
//! else through hash lookups. Rules then only test membership in that set.

use std::collections::HashMap;

use aho_corasick::{AhoCorasick, MatchKind};
use guichet_core::proto::v1::{Contact, FlagKind, contact::Details};
use regex::{Regex, RegexSet, RegexSetBuilder};
use regex_syntax::hir::{Hir, HirKind, Look};

use crate::fold::{boundary_after, boundary_before, fold_into};

pub(crate) type AtomId = u32;

/// One leaf test. Strings are normalized as matching needs them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum AtomKey {
    Channel(i32),
    /// Lower-cased source name.
    Source(String),
    /// Lower-cased domain; matches it and its subdomains.
    SenderDomain(String),
    /// Folded keyword; `prefix` when written with a trailing `*`.
    Keyword {
        text: String,
        prefix: bool,
    },
    SubjectRegex(String),
    BodyRegex(String),
    /// Lower-cased field name: present with a non-blank value.
    FieldPresent(String),
    /// Lower-cased field name, folded value.
    FieldEquals(String, String),
    PostalPrefix(String),
    PostalExact(String),
    Attachments(bool),
    Flag(i32),
}

impl AtomKey {
    /// How often the atom is expected to be true: the rule index files a
    /// rule under its rarest necessary atoms, so that a contact wakes up few
    /// rules. Relative values only.
    pub(crate) fn cost(&self) -> u32 {
        match self {
            AtomKey::Channel(_) | AtomKey::Attachments(_) => 1000,
            AtomKey::Source(_) | AtomKey::FieldPresent(_) => 100,
            AtomKey::PostalPrefix(p) if p.len() < 3 => 100,
            AtomKey::Flag(_) => 50,
            AtomKey::SenderDomain(_) => 20,
            AtomKey::PostalPrefix(_) | AtomKey::PostalExact(_) => 10,
            AtomKey::Keyword { .. } | AtomKey::SubjectRegex(_) | AtomKey::BodyRegex(_) | AtomKey::FieldEquals(..) => 5,
        }
    }

    /// For explanations: what was true.
    pub(crate) fn describe(&self) -> String {
        match self {
            AtomKey::Channel(c) => {
                let name = guichet_core::proto::v1::Channel::try_from(*c).map_or("?", |c| c.token());
                format!("channel is {name}")
            }
            AtomKey::Source(s) => format!("source is \"{s}\""),
            AtomKey::SenderDomain(d) => format!("sender domain is {d} or a subdomain"),
            AtomKey::Keyword { text, prefix: false } => format!("keyword \"{text}\""),
            AtomKey::Keyword { text, prefix: true } => format!("keyword \"{text}*\""),
            AtomKey::SubjectRegex(r) => format!("subject matches /{r}/"),
            AtomKey::BodyRegex(r) => format!("body matches /{r}/"),
            AtomKey::FieldPresent(f) => format!("form field \"{f}\" is filled in"),
            AtomKey::FieldEquals(f, v) => format!("form field \"{f}\" is \"{v}\""),
            AtomKey::PostalPrefix(p) => format!("postal code starts with {p}"),
            AtomKey::PostalExact(p) => format!("postal code is {p}"),
            AtomKey::Attachments(true) => "has attachments".to_owned(),
            AtomKey::Attachments(false) => "has no attachment".to_owned(),
            AtomKey::Flag(f) => format!("flagged {}", flag_name(*f)),
        }
    }
}

/// The flag names rules use, and their proto kinds.
pub(crate) const FLAGS: &[(&str, FlagKind)] = &[
    ("auto_reply", FlagKind::AutoReply),
    ("bounce", FlagKind::Bounce),
    ("bulk", FlagKind::Bulk),
    ("parse_error", FlagKind::ParseError),
    ("truncated", FlagKind::Truncated),
    ("empty_body", FlagKind::EmptyBody),
    ("malformed_header", FlagKind::MalformedHeader),
    ("malformed_text", FlagKind::MalformedText),
    ("damaged_structure", FlagKind::DamagedStructure),
    ("copy", FlagKind::Copy),
];

fn flag_name(kind: i32) -> &'static str {
    FLAGS.iter().find(|(_, k)| *k as i32 == kind).map_or("?", |(n, _)| n)
}

/// The interned atoms of a rules file.
#[derive(Default)]
pub(crate) struct Vocabulary {
    keys: Vec<AtomKey>,
    ids: HashMap<AtomKey, AtomId>,
}

impl Vocabulary {
    pub(crate) fn intern(&mut self, key: AtomKey) -> AtomId {
        if let Some(&id) = self.ids.get(&key) {
            return id;
        }
        let id = AtomId::try_from(self.keys.len()).unwrap_or(AtomId::MAX);
        self.keys.push(key.clone());
        self.ids.insert(key, id);
        id
    }

    /// Every atom a condition mentions, once.
    pub(crate) fn atoms_of(&self, node: &Node, out: &mut Vec<AtomId>) {
        match node {
            Node::All(nodes) | Node::Any(nodes) => nodes.iter().for_each(|n| self.atoms_of(n, out)),
            Node::Not(n) => self.atoms_of(n, out),
            Node::Atoms(atoms) => out.extend(atoms),
            Node::FieldContains { name, .. } => out.extend(self.ids.get(&AtomKey::FieldPresent(name.clone()))),
        }
    }

    pub(crate) fn key(&self, id: AtomId) -> &AtomKey {
        &self.keys[id as usize]
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }
}

/// A condition, compiled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Node {
    All(Vec<Node>),
    Any(Vec<Node>),
    Not(Box<Node>),
    /// True when any of the atoms is (sorted, unique).
    Atoms(Vec<AtomId>),
    /// Lower-cased field name, folded needle: checked directly, only for
    /// the few rules a contact wakes up.
    FieldContains {
        name: String,
        needle: String,
    },
}

/// Where in the folded text a keyword was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Region {
    Subject,
    Body,
    Fields,
}

/// What is true of one contact.
pub(crate) struct Facts {
    /// Sorted, unique.
    pub(crate) atoms: Vec<AtomId>,
    keyword_regions: Vec<(AtomId, Region)>,
    /// Lower-cased field name, folded value.
    fields: Vec<(String, String)>,
}

impl Facts {
    pub(crate) fn has(&self, atom: AtomId) -> bool {
        self.atoms.binary_search(&atom).is_ok()
    }
}

struct Pattern {
    whole: Option<AtomId>,
    prefix: Option<AtomId>,
    // A keyword that starts or ends with a non-word character ("n°") has
    // no boundary to check on that side.
    check_left: bool,
    check_right: bool,
}

/// The compiled matchers of a rules file.
pub(crate) struct Matcher {
    channel: HashMap<i32, AtomId>,
    source: HashMap<String, AtomId>,
    domain: HashMap<String, AtomId>,
    keywords: Option<AhoCorasick>,
    patterns: Vec<Pattern>,
    subject_set: Option<RegexGroup>,
    body_set: Option<RegexGroup>,
    field_present: HashMap<String, AtomId>,
    field_equals: HashMap<String, HashMap<String, AtomId>>,
    postal_prefix: HashMap<String, AtomId>,
    postal_exact: HashMap<String, AtomId>,
    attachments: [Option<AtomId>; 2],
    flags: HashMap<i32, AtomId>,
}

/// Regexes are checked one by one before this (with the crate's default
/// limits, so a rule with an oversized regex is named), so a failure here
/// is a size limit of the combined set. Near the crate's defaults (10 MiB
/// compiled, 2 MiB of lazy-DFA cache): the cache is per thread, and a
/// rules file is text anyone with ops rights can push, so its cost must
/// stay bounded. 5,000 rules with 500 regexes fit (tested).
const REGEX_SET_SIZE_LIMIT: usize = 32 << 20;
const REGEX_SET_DFA_LIMIT: usize = 8 << 20;

/// All the regexes on one text, run as ONE `RegexSet` pass.
///
/// `RegexSet`'s fast engine (a lazy DFA) gives up on non-ASCII text as
/// soon as one pattern has a Unicode word boundary (`\b`, `\B`), and the
/// fallback costs in proportion to the number of patterns: with 500
/// regexes, half a millisecond per French e-mail. So the set is built from
/// the patterns with their Unicode word-boundary assertions removed, which
/// matches a superset of what each pattern matches and stays on the fast
/// engine; the exact pattern then confirms only the few that hit.
struct RegexGroup {
    set: RegexSet,
    /// Per pattern of the set: its atom, and the exact regex to confirm a
    /// hit with when the set's pattern was relaxed.
    atoms: Vec<(AtomId, Option<Regex>)>,
}

impl RegexGroup {
    fn build(patterns: Vec<(&str, AtomId)>) -> Result<Option<RegexGroup>, String> {
        if patterns.is_empty() {
            return Ok(None);
        }
        let mut relaxed = Vec::with_capacity(patterns.len());
        let mut atoms = Vec::with_capacity(patterns.len());
        for (pattern, atom) in patterns {
            match without_unicode_word_boundaries(pattern) {
                Some(loose) => {
                    let exact = Regex::new(pattern).map_err(|e| format!("regex /{pattern}/: {e}"))?;
                    relaxed.push(loose);
                    atoms.push((atom, Some(exact)));
                }
                None => {
                    relaxed.push(pattern.to_owned());
                    atoms.push((atom, None));
                }
            }
        }
        let set = RegexSetBuilder::new(relaxed)
            .size_limit(REGEX_SET_SIZE_LIMIT)
            .dfa_size_limit(REGEX_SET_DFA_LIMIT)
            .build()
            .map_err(|e| {
                format!(
                    "the {} regexes together are over the {} MiB limit ({e})",
                    atoms.len(),
                    REGEX_SET_SIZE_LIMIT >> 20
                )
            })?;
        Ok(Some(RegexGroup { set, atoms }))
    }

    fn matches(&self, text: &str, out: &mut Vec<AtomId>) {
        for i in self.set.matches(text).iter() {
            let (atom, exact) = &self.atoms[i];
            if exact.as_ref().is_none_or(|r| r.is_match(text)) {
                out.push(*atom);
            }
        }
    }
}

/// `pattern` without its Unicode word-boundary assertions, or `None` when
/// it has none. Removing an assertion only widens what a pattern matches.
fn without_unicode_word_boundaries(pattern: &str) -> Option<String> {
    let hir = regex_syntax::Parser::new().parse(pattern).ok()?;
    if !hir.properties().look_set().contains_word_unicode() {
        return None;
    }
    Some(strip_unicode_word_boundaries(hir).to_string())
}

fn strip_unicode_word_boundaries(hir: Hir) -> Hir {
    match hir.into_kind() {
        HirKind::Look(
            Look::WordUnicode
            | Look::WordUnicodeNegate
            | Look::WordStartUnicode
            | Look::WordEndUnicode
            | Look::WordStartHalfUnicode
            | Look::WordEndHalfUnicode,
        ) => Hir::empty(),
        HirKind::Look(look) => Hir::look(look),
        HirKind::Empty => Hir::empty(),
        HirKind::Literal(lit) => Hir::literal(lit.0),
        HirKind::Class(class) => Hir::class(class),
        HirKind::Repetition(mut rep) => {
            rep.sub = Box::new(strip_unicode_word_boundaries(*rep.sub));
            Hir::repetition(rep)
        }
        HirKind::Capture(mut cap) => {
            cap.sub = Box::new(strip_unicode_word_boundaries(*cap.sub));
            Hir::capture(cap)
        }
        HirKind::Concat(subs) => Hir::concat(subs.into_iter().map(strip_unicode_word_boundaries).collect()),
        HirKind::Alternation(subs) => Hir::alternation(subs.into_iter().map(strip_unicode_word_boundaries).collect()),
    }
}

impl Matcher {
    pub(crate) fn build(vocab: &Vocabulary) -> Result<Matcher, String> {
        let mut m = Matcher {
            channel: HashMap::new(),
            source: HashMap::new(),
            domain: HashMap::new(),
            keywords: None,
            patterns: Vec::new(),
            subject_set: None,
            body_set: None,
            field_present: HashMap::new(),
            field_equals: HashMap::new(),
            postal_prefix: HashMap::new(),
            postal_exact: HashMap::new(),
            attachments: [None, None],
            flags: HashMap::new(),
        };
        let mut needles: HashMap<&str, usize> = HashMap::new();
        let mut needle_list: Vec<&str> = Vec::new();
        let (mut subject_res, mut body_res) = (Vec::new(), Vec::new());
        for (id, key) in vocab.keys.iter().enumerate() {
            let id = AtomId::try_from(id).unwrap_or(AtomId::MAX);
            match key {
                AtomKey::Channel(c) => {
                    m.channel.insert(*c, id);
                }
                AtomKey::Source(s) => {
                    m.source.insert(s.clone(), id);
                }
                AtomKey::SenderDomain(d) => {
                    m.domain.insert(d.clone(), id);
                }
                AtomKey::Keyword { text, prefix } => {
                    let at = *needles.entry(text.as_str()).or_insert_with(|| {
                        needle_list.push(text.as_str());
                        let is_word = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
                        m.patterns.push(Pattern {
                            whole: None,
                            prefix: None,
                            check_left: is_word(text.chars().next()),
                            check_right: is_word(text.chars().next_back()),
                        });
                        m.patterns.len() - 1
                    });
                    if *prefix {
                        m.patterns[at].prefix = Some(id);
                    } else {
                        m.patterns[at].whole = Some(id);
                    }
                }
                AtomKey::SubjectRegex(r) => subject_res.push((r.as_str(), id)),
                AtomKey::BodyRegex(r) => body_res.push((r.as_str(), id)),
                AtomKey::FieldPresent(f) => {
                    m.field_present.insert(f.clone(), id);
                }
                AtomKey::FieldEquals(f, v) => {
                    m.field_equals.entry(f.clone()).or_default().insert(v.clone(), id);
                }
                AtomKey::PostalPrefix(p) => {
                    m.postal_prefix.insert(p.clone(), id);
                }
                AtomKey::PostalExact(p) => {
                    m.postal_exact.insert(p.clone(), id);
                }
                AtomKey::Attachments(b) => m.attachments[usize::from(*b)] = Some(id),
                AtomKey::Flag(f) => {
                    m.flags.insert(*f, id);
                }
            }
        }
        if !needle_list.is_empty() {
            let ac = AhoCorasick::builder()
                .match_kind(MatchKind::Standard)
                .build(&needle_list)
                .map_err(|e| format!("cannot build the keyword automaton: {e}"))?;
            m.keywords = Some(ac);
        }
        m.subject_set = RegexGroup::build(subject_res)?;
        m.body_set = RegexGroup::build(body_res)?;
        Ok(m)
    }

    /// Everything true of `contact`: one pass per text, hash lookups for
    /// the rest. Cost depends on the contact, not on the number of rules.
    pub(crate) fn facts(&self, contact: &Contact) -> Facts {
        let mut atoms = Vec::new();
        let mut keyword_regions = Vec::new();
        if let Some(&a) = self.channel.get(&contact.channel) {
            atoms.push(a);
        }
        if let Some(source) = &contact.source
            && !self.source.is_empty()
            && let Some(&a) = self.source.get(&source.name.trim().to_lowercase())
        {
            atoms.push(a);
        }
        let claims = contact.claims.as_ref();
        if !self.domain.is_empty()
            && let Some(email) = claims.map(|c| c.email.trim())
            && let Some((_, domain)) = email.rsplit_once('@')
        {
            let domain = domain.trim_end_matches(['>', '.']).to_ascii_lowercase();
            let mut rest = domain.as_str();
            loop {
                if let Some(&a) = self.domain.get(rest) {
                    atoms.push(a);
                }
                match rest.split_once('.') {
                    Some((_, parent)) if !parent.is_empty() => rest = parent,
                    _ => break,
                }
            }
        }
        let empty = HashMap::new();
        let form_fields = match &contact.details {
            Some(Details::Web(web)) => &web.fields,
            _ => &empty,
        };
        let mut fields = Vec::with_capacity(form_fields.len());
        for (name, value) in form_fields {
            if value.trim().is_empty() {
                continue;
            }
            let name = name.trim().to_lowercase();
            let value = crate::fold::fold(value);
            if let Some(&a) = self.field_present.get(&name) {
                atoms.push(a);
            }
            if let Some(&a) = self.field_equals.get(&name).and_then(|values| values.get(&value)) {
                atoms.push(a);
            }
            fields.push((name, value));
        }
        // Deterministic order, so explanations do not depend on hashing.
        fields.sort();

        if let Some(ac) = &self.keywords {
            let mut text = String::with_capacity(contact.subject.len() + contact.body.len() + 2);
            fold_into(&contact.subject, &mut text);
            let subject_end = text.len();
            text.push('\n');
            fold_into(&contact.body, &mut text);
            let body_end = text.len();
            for (_, value) in &fields {
                text.push('\n');
                text.push_str(value);
            }
            for found in ac.find_overlapping_iter(&text) {
                let p = &self.patterns[found.pattern().as_usize()];
                if p.check_left && !boundary_before(&text, found.start()) {
                    continue;
                }
                let region = if found.start() < subject_end {
                    Region::Subject
                } else if found.start() < body_end {
                    Region::Body
                } else {
                    Region::Fields
                };
                if let Some(a) = p.prefix {
                    atoms.push(a);
                    keyword_regions.push((a, region));
                }
                if let Some(a) = p.whole
                    && (!p.check_right || boundary_after(&text, found.end()))
                {
                    atoms.push(a);
                    keyword_regions.push((a, region));
                }
            }
        }
        if let Some(group) = &self.subject_set {
            group.matches(&contact.subject, &mut atoms);
        }
        if let Some(group) = &self.body_set {
            group.matches(&contact.body, &mut atoms);
        }
        if let Some(address) = claims.and_then(|c| c.postal_address.as_ref()) {
            let code: String = address.postal_code.chars().filter(|c| !c.is_whitespace()).collect();
            if let Some(&a) = self.postal_exact.get(&code) {
                atoms.push(a);
            }
            for end in 1..=code.len().min(5) {
                if let Some(&a) = code.get(..end).and_then(|p| self.postal_prefix.get(p)) {
                    atoms.push(a);
                }
            }
        }
        if let Some(a) = self.attachments[usize::from(!contact.attachments.is_empty())] {
            atoms.push(a);
        }
        for flag in &contact.flags {
            if let Some(&a) = self.flags.get(&flag.kind) {
                atoms.push(a);
            }
        }
        atoms.sort_unstable();
        atoms.dedup();
        Facts {
            atoms,
            keyword_regions,
            fields,
        }
    }
}

impl Node {
    pub(crate) fn eval(&self, facts: &Facts) -> bool {
        match self {
            Node::All(nodes) => nodes.iter().all(|n| n.eval(facts)),
            Node::Any(nodes) => nodes.iter().any(|n| n.eval(facts)),
            Node::Not(node) => !node.eval(facts),
            Node::Atoms(atoms) => atoms.iter().any(|&a| facts.has(a)),
            Node::FieldContains { name, needle } => facts
                .fields
                .iter()
                .any(|(n, v)| n == name && v.contains(needle.as_str())),
        }
    }

    /// The conditions that made a true node true, for an operator.
    pub(crate) fn explain(&self, facts: &Facts, vocab: &Vocabulary, out: &mut Vec<String>) {
        match self {
            Node::All(nodes) => nodes.iter().for_each(|n| n.explain(facts, vocab, out)),
            Node::Any(nodes) => {
                if let Some(n) = nodes.iter().find(|n| n.eval(facts)) {
                    n.explain(facts, vocab, out);
                }
            }
            Node::Not(node) => out.push(format!("not ({})", node.describe(vocab))),
            Node::Atoms(atoms) => {
                for &a in atoms.iter().filter(|&&a| facts.has(a)) {
                    let mut line = vocab.key(a).describe();
                    if let Some((_, region)) = facts.keyword_regions.iter().find(|(k, _)| *k == a) {
                        line.push_str(match region {
                            Region::Subject => " in the subject",
                            Region::Body => " in the body",
                            Region::Fields => " in a form field",
                        });
                    }
                    out.push(line);
                }
            }
            Node::FieldContains { .. } => out.push(self.describe(vocab)),
        }
    }

    /// The condition as text, e.g. for `not (...)`.
    pub(crate) fn describe(&self, vocab: &Vocabulary) -> String {
        let list = |nodes: &[Node], sep: &str| nodes.iter().map(|n| n.describe(vocab)).collect::<Vec<_>>().join(sep);
        match self {
            Node::All(nodes) => list(nodes, " and "),
            Node::Any(nodes) => format!("any of: {}", list(nodes, "; ")),
            Node::Not(node) => format!("not ({})", node.describe(vocab)),
            Node::Atoms(atoms) => atoms
                .iter()
                .map(|&a| vocab.key(a).describe())
                .collect::<Vec<_>>()
                .join(" or "),
            Node::FieldContains { name, needle } => format!("form field \"{name}\" contains \"{needle}\""),
        }
    }

    /// Atoms of which at least one is true whenever the node is: the rule
    /// index. `None` when no such set exists (a bare `not`).
    pub(crate) fn trigger(&self, vocab: &Vocabulary, cost: &dyn Fn(AtomId) -> u64) -> Option<Vec<AtomId>> {
        match self {
            Node::Atoms(atoms) => Some(atoms.clone()),
            Node::FieldContains { name, .. } => vocab.ids.get(&AtomKey::FieldPresent(name.clone())).map(|&a| vec![a]),
            Node::Not(_) => None,
            Node::Any(nodes) => {
                let mut all = Vec::new();
                for n in nodes {
                    all.extend(n.trigger(vocab, cost)?);
                }
                all.sort_unstable();
                all.dedup();
                Some(all)
            }
            Node::All(nodes) => nodes
                .iter()
                .filter_map(|n| n.trigger(vocab, cost))
                .min_by_key(|t| t.iter().map(|&a| cost(a)).sum::<u64>()),
        }
    }

    /// A canonical text of the condition: equal for conditions that are
    /// the same up to order.
    pub(crate) fn canonical(&self) -> String {
        let sorted = |nodes: &[Node]| {
            let mut parts: Vec<String> = nodes.iter().map(Node::canonical).collect();
            parts.sort();
            parts.join(",")
        };
        match self {
            Node::All(nodes) if nodes.len() == 1 => nodes[0].canonical(),
            Node::Any(nodes) if nodes.len() == 1 => nodes[0].canonical(),
            Node::All(nodes) => format!("all({})", sorted(nodes)),
            Node::Any(nodes) => format!("any({})", sorted(nodes)),
            Node::Not(node) => format!("not({})", node.canonical()),
            Node::Atoms(atoms) => format!("{atoms:?}"),
            Node::FieldContains { name, needle } => format!("contains({name:?},{needle:?})"),
        }
    }

    /// The leaves of a plain conjunction (a `when` table of simple tests),
    /// for the shadowing check; `None` for anything more complex.
    pub(crate) fn conjunction(&self) -> Option<Vec<&Node>> {
        let simple = |n: &Node| matches!(n, Node::Atoms(_) | Node::FieldContains { .. });
        match self {
            n if simple(n) => Some(vec![n]),
            Node::All(nodes) if nodes.iter().all(simple) => Some(nodes.iter().collect()),
            _ => None,
        }
    }

    /// Whether this simple leaf being true makes `other` true.
    pub(crate) fn implies(&self, other: &Node) -> bool {
        match (self, other) {
            (Node::Atoms(mine), Node::Atoms(theirs)) => mine.iter().all(|a| theirs.binary_search(a).is_ok()),
            (Node::FieldContains { name: n1, needle: s1 }, Node::FieldContains { name: n2, needle: s2 }) => {
                n1 == n2 && s1.contains(s2.as_str())
            }
            _ => false,
        }
    }
}
