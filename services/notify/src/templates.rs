//! The templates ops maintain: MiniJinja, one text, one HTML and one
//! subject part per kind and language, with per-service and per-typology
//! overrides.
//!
//! A template is named `<kind>[.<service>[.<typology>]].<lang>.<part>`
//! (`acknowledgment.urbanisme.fr.txt`); the most specific one present
//! wins, and a language without templates falls back to French. Undefined
//! variables are errors (strict), and the HTML part escapes everything it
//! prints, so text from the usager cannot inject markup. [`check`] renders
//! every template against samples and refuses an acknowledgment that
//! misses a mandatory R112-5 mention.

use std::collections::BTreeMap;

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::Serialize;

use crate::NotifyError;

/// The kinds of notification, and their template name prefix.
pub const ACKNOWLEDGMENT: &str = "acknowledgment";

/// The optional short message when a contact joins an existing request:
/// sent for a service only when the set has a `follow_up` template for it
/// (`follow_up.<service>.<lang>.<part>`, or `follow_up.<lang>.<part>` for
/// every service). The built-in set has none.
pub const FOLLOW_UP: &str = "follow_up";

/// The status messages, when an update asks for them (`notify_usager`):
/// the documents asked for, the answer, the closing with its outcome.
pub const DOCUMENTS_REQUESTED: &str = "documents_requested";
pub const ANSWERED: &str = "answered";
pub const CLOSED: &str = "closed";

/// The parts of one message.
pub const PARTS: [&str; 3] = ["subject", "txt", "html"];

/// The default language, and the fallback of every other.
pub const DEFAULT_LANGUAGE: &str = "fr";

/// The templates shipped in `deploy/templates/`, used until ops push theirs.
pub fn builtin() -> BTreeMap<String, String> {
    [
        (
            "acknowledgment.fr.subject",
            include_str!("../../../deploy/templates/acknowledgment.fr.subject"),
        ),
        (
            "acknowledgment.fr.txt",
            include_str!("../../../deploy/templates/acknowledgment.fr.txt"),
        ),
        (
            "acknowledgment.fr.html",
            include_str!("../../../deploy/templates/acknowledgment.fr.html"),
        ),
        (
            "acknowledgment.en.subject",
            include_str!("../../../deploy/templates/acknowledgment.en.subject"),
        ),
        (
            "acknowledgment.en.txt",
            include_str!("../../../deploy/templates/acknowledgment.en.txt"),
        ),
        (
            "acknowledgment.en.html",
            include_str!("../../../deploy/templates/acknowledgment.en.html"),
        ),
        (
            "documents_requested.fr.subject",
            include_str!("../../../deploy/templates/documents_requested.fr.subject"),
        ),
        (
            "documents_requested.fr.txt",
            include_str!("../../../deploy/templates/documents_requested.fr.txt"),
        ),
        (
            "documents_requested.fr.html",
            include_str!("../../../deploy/templates/documents_requested.fr.html"),
        ),
        (
            "documents_requested.en.subject",
            include_str!("../../../deploy/templates/documents_requested.en.subject"),
        ),
        (
            "documents_requested.en.txt",
            include_str!("../../../deploy/templates/documents_requested.en.txt"),
        ),
        (
            "documents_requested.en.html",
            include_str!("../../../deploy/templates/documents_requested.en.html"),
        ),
        (
            "answered.fr.subject",
            include_str!("../../../deploy/templates/answered.fr.subject"),
        ),
        (
            "answered.fr.txt",
            include_str!("../../../deploy/templates/answered.fr.txt"),
        ),
        (
            "answered.fr.html",
            include_str!("../../../deploy/templates/answered.fr.html"),
        ),
        (
            "answered.en.subject",
            include_str!("../../../deploy/templates/answered.en.subject"),
        ),
        (
            "answered.en.txt",
            include_str!("../../../deploy/templates/answered.en.txt"),
        ),
        (
            "answered.en.html",
            include_str!("../../../deploy/templates/answered.en.html"),
        ),
        (
            "closed.fr.subject",
            include_str!("../../../deploy/templates/closed.fr.subject"),
        ),
        ("closed.fr.txt", include_str!("../../../deploy/templates/closed.fr.txt")),
        (
            "closed.fr.html",
            include_str!("../../../deploy/templates/closed.fr.html"),
        ),
        (
            "closed.en.subject",
            include_str!("../../../deploy/templates/closed.en.subject"),
        ),
        ("closed.en.txt", include_str!("../../../deploy/templates/closed.en.txt")),
        (
            "closed.en.html",
            include_str!("../../../deploy/templates/closed.en.html"),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Reads every template file of a directory (file name = template name).
pub fn read_dir(dir: &std::path::Path) -> Result<BTreeMap<String, String>, NotifyError> {
    let bad = |why: String| NotifyError::Template(format!("{}: {why}", dir.display()));
    let mut out = BTreeMap::new();
    let entries = std::fs::read_dir(dir).map_err(|e| bad(e.to_string()))?;
    for entry in entries {
        let path = entry.map_err(|e| bad(e.to_string()))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.starts_with('.') || !PARTS.iter().any(|p| name.ends_with(&format!(".{p}"))) {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|e| bad(format!("{name}: {e}")))?;
        out.insert(name.to_owned(), text);
    }
    if out.is_empty() {
        return Err(bad("no template (files named <kind>.<lang>.subject|txt|html)".into()));
    }
    Ok(out)
}

/// A compiled set of templates.
pub struct Templates {
    env: Environment<'static>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates").finish_non_exhaustive()
    }
}

/// One message, rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl Templates {
    /// Compiles every template; a syntax error names the template and line.
    pub fn compile(sources: BTreeMap<String, String>) -> Result<Self, NotifyError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        env.set_keep_trailing_newline(false);
        env.set_formatter(html_formatter);
        for (name, source) in sources {
            env.add_template_owned(name.clone(), source)
                .map_err(|e| NotifyError::Template(format!("{name}: {e}")))?;
        }
        Ok(Self { env })
    }

    /// The most specific template name present for this message part.
    fn pick(&self, kind: &str, service: &str, typology: &str, language: &str, part: &str) -> Option<String> {
        let mut languages = vec![language.to_ascii_lowercase()];
        if languages[0] != DEFAULT_LANGUAGE {
            languages.push(DEFAULT_LANGUAGE.to_owned());
        }
        for lang in &languages {
            let mut names = Vec::new();
            if !service.is_empty() && !typology.is_empty() {
                names.push(format!("{kind}.{service}.{typology}.{lang}.{part}"));
            }
            if !service.is_empty() {
                names.push(format!("{kind}.{service}.{lang}.{part}"));
            }
            names.push(format!("{kind}.{lang}.{part}"));
            if let Some(name) = names.into_iter().find(|n| self.env.get_template(n).is_ok()) {
                return Some(name);
            }
        }
        None
    }

    /// Whether the set has a `kind` message for this service (any language).
    pub fn has(&self, kind: &str, service: &str) -> bool {
        self.pick(kind, service, "", DEFAULT_LANGUAGE, "txt").is_some()
    }

    /// Renders the three parts of one message.
    pub fn render(
        &self,
        kind: &str,
        service: &str,
        typology: &str,
        language: &str,
        context: &impl Serialize,
    ) -> Result<Rendered, NotifyError> {
        let value = minijinja::Value::from_serialize(context);
        let mut parts = Vec::with_capacity(3);
        for part in PARTS {
            let name = self.pick(kind, service, typology, language, part).ok_or_else(|| {
                NotifyError::Template(format!(
                    "no template {kind}.{DEFAULT_LANGUAGE}.{part} (nor a more specific one)"
                ))
            })?;
            let template = self
                .env
                .get_template(&name)
                .map_err(|e| NotifyError::Template(format!("{name}: {e}")))?;
            let text = template
                .render(&value)
                .map_err(|e| NotifyError::Template(format!("{name}: {e:#}")))?;
            parts.push(text);
        }
        let html = parts.pop().unwrap_or_default();
        let text = parts.pop().unwrap_or_default();
        let subject = parts.pop().unwrap_or_default();
        Ok(Rendered {
            subject: subject.split_whitespace().collect::<Vec<_>>().join(" "),
            text,
            html,
        })
    }

    /// Renders one template by name with any context (`templates preview`).
    pub fn render_one(&self, name: &str, context: &impl Serialize) -> Result<String, NotifyError> {
        let template = self
            .env
            .get_template(name)
            .map_err(|e| NotifyError::Template(format!("{name}: {e}")))?;
        template
            .render(minijinja::Value::from_serialize(context))
            .map_err(|e| NotifyError::Template(format!("{name}: {e:#}")))
    }

    /// Every template name.
    pub fn names(&self) -> Vec<String> {
        self.env.templates().map(|(n, _)| n.to_owned()).collect()
    }
}

/// MiniJinja's HTML escape also turns `/` into `&#x2f;` (a dated habit
/// against closing tags in inline scripts, which our mails never have), so
/// "01/02/2026" read as "01&#x2f;02&#x2f;2026" in clients that show the
/// source and in searches. This one escapes the five characters that
/// matter in HTML text and attributes; everything else goes to the default.
fn html_formatter(
    out: &mut minijinja::Output,
    state: &minijinja::State,
    value: &minijinja::Value,
) -> Result<(), minijinja::Error> {
    if state.auto_escape() != AutoEscape::Html || value.is_safe() || value.is_undefined() || value.is_none() {
        return minijinja::escape_formatter(out, state, value);
    }
    let text = value.to_string();
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    out.write_str(&escaped)
        .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::WriteFailure, e.to_string()))
}

/// What the acknowledgment's templates are given.
#[derive(Debug, Clone, Serialize)]
pub struct AckContext {
    pub reference: String,
    /// "30/11/2026", Europe/Paris.
    pub received_on: String,
    /// "14:05", Europe/Paris.
    pub received_at: String,
    pub channel: String,
    /// The usager's own subject line (escaped in HTML).
    pub subject: String,
    pub usager: UsagerContext,
    pub service: ServiceContext,
    pub typology: String,
    /// "15/12/2026", or empty when the request has no due date.
    pub due_date: String,
    /// Present when the request is subject to an implicit decision.
    pub implicit_decision: Option<ImplicitDecision>,
    /// Status messages: the day of the transition, "30/11/2026".
    pub occurred_on: String,
    /// `documents_requested`: the pieces the agent asked for.
    pub documents: Vec<String>,
    /// `closed`: "granted", "refused", "informed", "redirected",
    /// "withdrawn" or "no_action".
    pub outcome: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct UsagerContext {
    pub name: String,
}

/// The service in charge (R112-5).
#[derive(Debug, Clone, Serialize)]
pub struct ServiceContext {
    pub name: String,
    pub designation: String,
    pub postal_address: String,
    pub email: String,
    pub phone: String,
}

/// When silence is worth a decision.
#[derive(Debug, Clone, Serialize)]
pub struct ImplicitDecision {
    /// "acceptance" or "rejection".
    pub kind: String,
    /// "31/01/2027".
    pub date: String,
}

/// A sample acknowledgment context whose mentions are unique markers, so
/// that [`check`] can see which ones a template prints.
pub fn sample(implicit: Option<&str>) -> AckContext {
    AckContext {
        reference: "2026-SAMP-LE01".into(),
        received_on: "01/02/2026".into(),
        received_at: "09:41".into(),
        channel: "email".into(),
        subject: "<b>Objet</b> & \"usager\"".into(),
        usager: UsagerContext {
            name: "Camille Exemple".into(),
        },
        service: ServiceContext {
            name: "urbanisme".into(),
            designation: "Service Désignation-Témoin".into(),
            postal_address: "12 rue Adresse-Témoin, 00000 Ville".into(),
            email: "service-temoin@ville.example".into(),
            phone: "+33 9 87 65 43 21".into(),
        },
        typology: "permis".into(),
        due_date: "15/02/2026".into(),
        implicit_decision: implicit.map(|kind| ImplicitDecision {
            kind: kind.into(),
            date: "02/04/2026".into(),
        }),
        occurred_on: "03/02/2026".into(),
        documents: vec!["Pièce-Témoin-A".into(), "Pièce-Témoin-B".into()],
        outcome: "granted".into(),
    }
}

/// Renders every acknowledgment template set against the samples and
/// checks the R112-5 mentions. Returns every problem found.
pub fn check(sources: &BTreeMap<String, String>) -> Result<Vec<String>, Vec<String>> {
    let templates = Templates::compile(sources.clone()).map_err(|e| vec![e.to_string()])?;
    // The (service, typology, language) combinations the files define.
    let mut sets = std::collections::BTreeSet::new();
    for name in sources.keys() {
        let pieces: Vec<&str> = name.split('.').collect();
        if pieces.len() < 3 || pieces[0] != ACKNOWLEDGMENT {
            continue;
        }
        let lang = pieces[pieces.len() - 2].to_owned();
        let middle = &pieces[1..pieces.len() - 2];
        let service = middle.first().map(|s| (*s).to_owned()).unwrap_or_default();
        let typology = middle.get(1).map(|s| (*s).to_owned()).unwrap_or_default();
        sets.insert((service, typology, lang));
    }
    if sets.is_empty() {
        return Err(vec![format!(
            "no {ACKNOWLEDGMENT} template (e.g. {ACKNOWLEDGMENT}.fr.txt)"
        )]);
    }
    let mut problems = Vec::new();
    let mut checked = Vec::new();
    check_other_kinds(sources, &templates, &mut problems, &mut checked);
    for (service, typology, lang) in &sets {
        let label = format!("{ACKNOWLEDGMENT} service={service:?} typology={typology:?} lang={lang}");
        for implicit in [None, Some("rejection"), Some("acceptance")] {
            let ctx = sample(implicit);
            let rendered = match templates.render(ACKNOWLEDGMENT, service, typology, lang, &ctx) {
                Ok(r) => r,
                Err(e) => {
                    problems.push(format!("{label}: {e}"));
                    continue;
                }
            };
            if !rendered.subject.contains(&format!("[{}]", ctx.reference)) {
                problems.push(format!(
                    "{label}: the subject lacks the reference in brackets: [{{{{ reference }}}}]"
                ));
            }
            if rendered.html.contains("<b>Objet</b>") {
                problems.push(format!("{label}: the HTML part prints the usager's text unescaped"));
            }
            for (part, body) in [("txt", &rendered.text), ("html", &rendered.html)] {
                let mut need: Vec<(&str, &str)> = vec![
                    ("date of receipt ({{ received_on }})", &ctx.received_on),
                    ("reference ({{ reference }})", &ctx.reference),
                    (
                        "service designation ({{ service.designation }})",
                        &ctx.service.designation,
                    ),
                    (
                        "service postal address ({{ service.postal_address }})",
                        &ctx.service.postal_address,
                    ),
                    ("service e-mail ({{ service.email }})", &ctx.service.email),
                    ("service phone ({{ service.phone }})", &ctx.service.phone),
                ];
                match implicit {
                    Some("rejection") => need.extend([
                        ("implicit decision date ({{ implicit_decision.date }})", "02/04/2026"),
                        ("the means of appeal (\"recours\")", "recours"),
                        ("the time limit of appeal (\"deux mois\")", "deux mois"),
                    ]),
                    Some(_) => need.extend([
                        ("implicit decision date ({{ implicit_decision.date }})", "02/04/2026"),
                        ("the right to an attestation (\"attestation\", L232-3)", "attestation"),
                    ]),
                    None => {}
                }
                for (what, marker) in need {
                    if !body.contains(marker) {
                        let case = implicit.map_or("without implicit decision".to_owned(), |k| {
                            format!("with implicit_decision.kind = {k:?} (a {{% if implicit_decision %}} block with both variants)")
                        });
                        problems.push(format!(
                            "{label} ({part}) {case}: lacks the mandatory R112-5 mention: {what}"
                        ));
                    }
                }
            }
        }
        checked.push(label);
    }
    if problems.is_empty() {
        Ok(checked)
    } else {
        Err(problems)
    }
}

/// The (service, language) combinations of `kind` the files define.
fn sets_of(sources: &BTreeMap<String, String>, kind: &str) -> std::collections::BTreeSet<(String, String)> {
    sources
        .keys()
        .filter_map(|name| {
            let pieces: Vec<&str> = name.split('.').collect();
            (pieces.len() >= 3 && pieces[0] == kind).then(|| {
                let service = if pieces.len() > 3 { pieces[1] } else { "" };
                (service.to_owned(), pieces[pieces.len() - 2].to_owned())
            })
        })
        .collect()
}

/// The other kinds: the status messages must exist in French; every set
/// of every kind renders against the sample, its subject carries the
/// reference, its HTML escapes the usager's text, the documents asked for
/// and the outcome are shown (the French wording of the outcome checked;
/// in other languages, a text that changes with it).
fn check_other_kinds(
    sources: &BTreeMap<String, String>,
    templates: &Templates,
    problems: &mut Vec<String>,
    checked: &mut Vec<String>,
) {
    let ctx = sample(None);
    for kind in [DOCUMENTS_REQUESTED, ANSWERED, CLOSED] {
        if !sets_of(sources, kind).contains(&(String::new(), DEFAULT_LANGUAGE.to_owned())) {
            problems.push(format!(
                "no {kind} template ({kind}.{DEFAULT_LANGUAGE}.subject|txt|html): the status message an update can ask for"
            ));
        }
    }
    for kind in [FOLLOW_UP, DOCUMENTS_REQUESTED, ANSWERED, CLOSED] {
        for (service, lang) in sets_of(sources, kind) {
            let label = format!("{kind} service={service:?} lang={lang}");
            match templates.render(kind, &service, "", &lang, &ctx) {
                Ok(rendered) => {
                    if !rendered.subject.contains(&format!("[{}]", ctx.reference)) {
                        problems.push(format!(
                            "{label}: the subject lacks the reference in brackets: [{{{{ reference }}}}]"
                        ));
                    }
                    if rendered.html.contains("<b>Objet</b>") {
                        problems.push(format!("{label}: the HTML part prints the usager's text unescaped"));
                    }
                    let need: &[(&str, &str)] = match kind {
                        DOCUMENTS_REQUESTED => &[("the documents asked for ({{ documents }})", "Pièce-Témoin-B")],
                        CLOSED if lang == DEFAULT_LANGUAGE => &[("the outcome ({{ outcome }})", "favorable")],
                        _ => &[],
                    };
                    if kind == CLOSED {
                        // In any language: the message says which outcome.
                        let refused = AckContext {
                            outcome: "refused".into(),
                            ..ctx.clone()
                        };
                        if let Ok(other) = templates.render(kind, &service, "", &lang, &refused) {
                            for (part, granted, refused) in [
                                ("txt", &rendered.text, &other.text),
                                ("html", &rendered.html, &other.html),
                            ] {
                                if granted == refused {
                                    problems.push(format!(
                                        "{label} ({part}): lacks the outcome ({{{{ outcome }}}}): the same text for granted and refused"
                                    ));
                                }
                            }
                        }
                    }
                    for (what, marker) in need {
                        for (part, body) in [("txt", &rendered.text), ("html", &rendered.html)] {
                            if !body.contains(marker) {
                                problems.push(format!("{label} ({part}): lacks {what}"));
                            }
                        }
                    }
                    checked.push(label);
                }
                Err(e) => problems.push(format!("{label}: {e}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_templates_pass_the_check_and_escape_html() {
        let checked = check(&builtin()).unwrap_or_else(|p| panic!("{p:#?}"));
        assert_eq!(checked.len(), 8, "{checked:?}");
        assert!(
            !Templates::compile(builtin()).unwrap().has(FOLLOW_UP, "urbanisme"),
            "no follow-up built in"
        );
        let t = Templates::compile(builtin()).unwrap();
        let r = t.render(ACKNOWLEDGMENT, "urbanisme", "", "fr", &sample(None)).unwrap();
        assert!(
            r.html.contains("&lt;b&gt;Objet&lt;/b&gt; &amp; &quot;usager&quot;"),
            "{}",
            r.html
        );
        assert!(
            r.html.contains("01/02/2026") && !r.html.contains("&#x2f;"),
            "dates keep their slashes: {}",
            r.html
        );
        assert!(r.text.contains("<b>Objet</b>"), "the text part is not HTML");
        assert_eq!(r.subject, "[2026-SAMP-LE01] Accusé de réception de votre demande");
        let en = t.render(ACKNOWLEDGMENT, "x", "y", "EN", &sample(None)).unwrap();
        assert!(en.text.starts_with("Hello"), "{}", en.text);
        let de = t.render(ACKNOWLEDGMENT, "x", "y", "de", &sample(None)).unwrap();
        assert!(de.text.starts_with("Bonjour"), "French is the fallback");
    }

    #[test]
    fn a_template_missing_a_mention_or_using_an_undefined_variable_is_refused() {
        let mut set = builtin();
        let txt = set["acknowledgment.fr.txt"].replace("{{ service.phone }}", "");
        set.insert("acknowledgment.fr.txt".into(), txt);
        let problems = check(&set).unwrap_err();
        assert!(problems.iter().any(|p| p.contains("service phone")), "{problems:#?}");

        let mut set = builtin();
        let txt = set["acknowledgment.fr.txt"].replace("{% if implicit_decision %}", "{% if false %}");
        set.insert("acknowledgment.fr.txt".into(), txt);
        let problems = check(&set).unwrap_err();
        assert!(
            problems.iter().any(|p| p.contains("implicit decision date")),
            "{problems:#?}"
        );

        let mut set = builtin();
        set.insert("follow_up.urbanisme.fr.subject".into(), "Votre message".into());
        set.insert("follow_up.urbanisme.fr.txt".into(), "{{ reference }}".into());
        set.insert("follow_up.urbanisme.fr.html".into(), "{{ subject }}".into());
        let problems = check(&set).unwrap_err();
        assert!(
            problems
                .iter()
                .any(|p| p.contains("follow_up") && p.contains("reference in brackets")),
            "{problems:#?}"
        );

        // English: a closing that reads the same whatever the outcome.
        let mut set = builtin();
        set.insert(
            "closed.en.txt".into(),
            "{{ reference }} was closed on {{ occurred_on }}.".into(),
        );
        let problems = check(&set).unwrap_err();
        assert_eq!(
            problems,
            [
                "closed service=\"\" lang=en (txt): lacks the outcome ({{ outcome }}): the same text for granted and refused"
            ]
        );

        let mut set = builtin();
        set.insert("acknowledgment.urbanisme.fr.txt".into(), "{{ service.fax }}".into());
        let problems = check(&set).unwrap_err();
        assert!(
            problems
                .iter()
                .any(|p| p.contains("urbanisme") && p.contains("undefined")),
            "{problems:#?}"
        );
    }
}
