//! Routing by each kind of condition, accents, combinators, actions, and
//! the matching cost with many rules.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns

use std::collections::HashMap;

use guichet_core::proto::v1::{
    AttachmentRef, Channel, Contact, Flag, FlagKind, IdentityClaims, PostalAddress, Priority, Source, WebDetails,
    contact::Details,
};
use guichet_rules::{Deadline, RuleSet, testing};

const HEAD: &str = r#"manual_service = "accueil"
[[services]]
name = "accueil"
deadline = "5 business days"
[[services]]
name = "cible"
deadline = "2 days"
"#;

/// A file with one rule sending matches to `cible`.
fn rule(when: &str) -> RuleSet {
    let text = format!("{HEAD}[[rules]]\nid = \"r\"\nservice = \"cible\"\n{when}\n");
    RuleSet::parse(&text, "t.toml").unwrap_or_else(|e| panic!("{e}"))
}

fn email(subject: &str, body: &str) -> Contact {
    Contact {
        channel: Channel::Email as i32,
        source: Some(Source {
            name: "mairie@".into(),
            ..Default::default()
        }),
        claims: Some(IdentityClaims {
            email: "Jeanne@Example.FR".into(),
            ..Default::default()
        }),
        subject: subject.into(),
        body: body.into(),
        ..Default::default()
    }
}

fn web(fields: &[(&str, &str)]) -> Contact {
    let fields: HashMap<String, String> = fields.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
    Contact {
        channel: Channel::Web as i32,
        source: Some(Source {
            name: "Signalement-Voirie".into(),
            ..Default::default()
        }),
        details: Some(Details::Web(WebDetails {
            form_id: "f".into(),
            fields,
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn hits(rules: &RuleSet, c: &Contact) -> bool {
    let e = rules.evaluate(c);
    match e.rule_id.as_deref() {
        Some("r") => {
            assert_eq!(e.service, "cible");
            assert!(!e.explanation.is_empty());
            true
        }
        None => {
            assert_eq!(e.service, "accueil");
            false
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn channel() {
    let r = rule("when.channel = [\"web\", \"phone\"]");
    assert!(hits(&r, &web(&[])));
    assert!(!hits(&r, &email("", "")));
    let e = r.evaluate(&web(&[]));
    assert_eq!(e.explanation[0], "channel is web");
}

#[test]
fn source_is_case_insensitive() {
    let r = rule("when.source = \"signalement-voirie\"");
    assert!(hits(&r, &web(&[])));
    assert!(!hits(&r, &email("", "")));
}

#[test]
fn sender_domain_and_subdomains() {
    let r = rule("when.sender_domain = \"example.fr\"");
    assert!(hits(&r, &email("", "")));
    let mut c = email("", "");
    c.claims.as_mut().unwrap().email = "agent@prefecture.example.fr".into();
    assert!(hits(&r, &c));
    c.claims.as_mut().unwrap().email = "x@notexample.fr".into();
    assert!(!hits(&r, &c));
    c.claims = None;
    assert!(!hits(&r, &c));
}

#[test]
fn keywords_ignore_case_and_accents_both_ways() {
    let r = rule("when.keywords = \"dechets\"");
    assert!(hits(&r, &email("Collecte des DÉCHETS", "")));
    assert!(hits(&r, &email("", "les déchets verts")));
    let r = rule("when.keywords = \"Déchets Ménagers\"");
    assert!(hits(&r, &email("", "dechets   menagers non ramasses")));
    assert!(hits(&r, &email("", "DECHETS-MENAGERS")));
    assert!(!hits(&r, &email("", "dechets verts, ménagers")));
    // Decomposed accents (NFD) fold too.
    let r = rule("when.keywords = \"état civil\"");
    assert!(hits(&r, &email("E\u{301}tat-civil", "")));
}

#[test]
fn keywords_are_whole_words_unless_starred() {
    let r = rule("when.keywords = \"rue\"");
    assert!(hits(&r, &email("", "dans la rue.")));
    assert!(hits(&r, &email("", "RUE")));
    assert!(!hits(&r, &email("", "un acte cruel")));
    assert!(!hits(&r, &email("", "les rues")));
    let r = rule("when.keywords = \"encombrant*\"");
    assert!(hits(&r, &email("", "des Encombrants")));
    assert!(hits(&r, &email("", "encombrant")));
    assert!(!hits(&r, &email("", "désencombrant")));
    // Apostrophes are word boundaries.
    let r = rule("when.keywords = \"ecole\"");
    assert!(hits(&r, &email("", "devant l’École")));
}

#[test]
fn keywords_search_form_field_values_and_say_where() {
    let r = rule("when.keywords = \"lampadaire\"");
    let e = r.evaluate(&web(&[("description", "Lampadaire éteint")]));
    assert_eq!(e.rule_id.as_deref(), Some("r"));
    assert_eq!(e.explanation[0], "keyword \"lampadaire\" in a form field");
    let e = r.evaluate(&email("Lampadaire", ""));
    assert_eq!(e.explanation[0], "keyword \"lampadaire\" in the subject");
    let e = r.evaluate(&email("", "un lampadaire"));
    assert_eq!(e.explanation[0], "keyword \"lampadaire\" in the body");
}

#[test]
fn several_keywords_any_of_them() {
    let r = rule("when.keywords = [\"bac jaune\", \"poubelle*\", \"ordures\"]");
    assert!(hits(&r, &email("", "mon bac jaune est cassé")));
    assert!(hits(&r, &email("", "Poubelles")));
    assert!(!hits(&r, &email("", "bac vert")));
}

#[test]
fn regexes_on_subject_and_body() {
    let r = rule("when.subject_matches = '(?i)^re:\\s*PC \\d{3}'");
    assert!(hits(&r, &email("RE: PC 067 482", "")));
    assert!(!hits(&r, &email("PC 067", "")));
    assert!(!hits(&r, &email("", "RE: PC 067")));
    let r = rule("when.body_matches = 'dossier n°\\s*\\d+'");
    assert!(hits(&r, &email("", "Suite au dossier n° 1234")));
    assert!(!hits(&r, &email("dossier n° 1234", "")));
    // As written: case-sensitive without (?i).
    assert!(!hits(&r, &email("", "DOSSIER N° 1234")));
    let e = r.evaluate(&email("", "dossier n°12"));
    assert_eq!(e.explanation[0], "body matches /dossier n°\\s*\\d+/");
}

/// The regex set runs relaxed (Unicode word boundaries removed, for speed
/// on non-ASCII text); the exact regex must still decide.
#[test]
fn unicode_word_boundaries_in_regexes_are_exact() {
    let r = rule("when.body_matches = ['\\bété\\b', '(?i)\\Bcafé', 'x{3}']");
    assert!(hits(&r, &email("", "un été chaud")));
    assert!(!hits(&r, &email("", "ÉTÉ")), "case-sensitive as written");
    // `c` and `é` are both letters: no boundary, whatever ASCII thinks.
    assert!(!hits(&r, &email("", "précété")));
    assert!(!hits(&r, &email("", "un étéchaud")));
    assert!(hits(&r, &email("", "le décafé")));
    assert!(!hits(&r, &email("", "un café")));
    assert!(hits(&r, &email("", "xxx")));
}

#[test]
fn form_fields() {
    let r = rule("when.fields.type_acte = \"décès\"");
    assert!(hits(&r, &web(&[("Type_Acte", "DECES")])));
    assert!(!hits(&r, &web(&[("type_acte", "naissance")])));
    assert!(!hits(&r, &web(&[("autre", "deces")])));
    let r = rule("when.fields.type_acte = [\"naissance\", \"mariage\"]");
    assert!(hits(&r, &web(&[("type_acte", "Mariage")])));
    let r = rule("when.fields.motif = { contains = \"éclairage\" }");
    assert!(hits(&r, &web(&[("motif", "Panne d'ÉCLAIRAGE public")])));
    assert!(!hits(&r, &web(&[("motif", "nid de poule")])));
    let r = rule("when.fields.photo = { present = true }");
    assert!(hits(&r, &web(&[("photo", "img.jpg")])));
    assert!(!hits(&r, &web(&[("photo", "  ")])), "blank is not present");
    assert!(!hits(&r, &web(&[])));
    let r = rule("when.fields.photo = { present = false }");
    assert!(hits(&r, &web(&[])));
    assert!(!hits(&r, &web(&[("photo", "img.jpg")])));
    // Fields of an e-mail: there are none.
    assert!(hits(&r, &email("", "")));
    // Several fields: all of them.
    let r = rule("when.fields.a = \"1\"\nwhen.fields.b = \"2\"");
    assert!(hits(&r, &web(&[("a", "1"), ("b", "2")])));
    assert!(!hits(&r, &web(&[("a", "1"), ("b", "3")])));
}

fn with_postal(code: &str) -> Contact {
    let mut c = email("", "");
    c.claims.as_mut().unwrap().postal_address = Some(PostalAddress {
        postal_code: code.into(),
        ..Default::default()
    });
    c
}

#[test]
fn postal_code_prefix_and_exact() {
    let r = rule("when.postal_code = [\"67\", \"68100\"]");
    assert!(hits(&r, &with_postal("67000")));
    assert!(hits(&r, &with_postal("67 400")));
    assert!(hits(&r, &with_postal("68100")));
    assert!(!hits(&r, &with_postal("68000")));
    assert!(!hits(&r, &with_postal("57000")));
    assert!(!hits(&r, &email("", "")));
    let e = r.evaluate(&with_postal("67400"));
    assert_eq!(e.explanation[0], "postal code starts with 67");
}

#[test]
fn attachments() {
    let mut c = email("", "");
    let r = rule("when.attachments = true");
    assert!(!hits(&r, &c));
    c.attachments.push(AttachmentRef {
        file_name: "photo.jpg".into(),
        ..Default::default()
    });
    assert!(hits(&r, &c));
    let r = rule("when.attachments = false");
    assert!(!hits(&r, &c));
}

#[test]
fn mail_flags_and_discard() {
    let text = format!(
        "{HEAD}[[rules]]\nid = \"bruit\"\nwhen.flags = [\"auto_reply\", \"bounce\"]\ndiscard = true\ntags = [\"bruit\"]\n"
    );
    let r = RuleSet::parse(&text, "t.toml").unwrap();
    let mut c = email("Absent", "");
    assert_eq!(r.evaluate(&c).rule_id, None);
    c.flags.push(Flag {
        kind: FlagKind::Bounce as i32,
        reason: "DSN".into(),
    });
    let e = r.evaluate(&c);
    assert_eq!(e.rule_id.as_deref(), Some("bruit"));
    assert!(e.discard);
    // Recorded under the manual service when the rule names none.
    assert_eq!(e.service, "accueil");
    assert_eq!(e.tags, ["bruit"]);
    assert_eq!(e.explanation[0], "flagged bounce");
    c.flags[0].kind = FlagKind::Bulk as i32;
    assert_eq!(r.evaluate(&c).rule_id, None);
}

#[test]
fn all_any_not() {
    let r = rule(
        "[rules.when]\nchannel = \"email\"\nany = [{ keywords = \"voirie\" }, { all = [{ keywords = \"trou\" }, { attachments = true }] }]\nnot = { sender_domain = \"spam.example\" }",
    );
    assert!(hits(&r, &email("voirie", "")));
    assert!(!hits(&r, &email("trou", "")));
    let mut c = email("un trou", "");
    c.attachments.push(AttachmentRef::default());
    assert!(hits(&r, &c));
    c.claims.as_mut().unwrap().email = "x@spam.example".into();
    assert!(!hits(&r, &c));
    assert!(!hits(&r, &web(&[("x", "voirie")])));
    let e = r.evaluate(&email("voirie", ""));
    assert_eq!(
        e.explanation,
        [
            "channel is email",
            "keyword \"voirie\" in the subject",
            "not (sender domain is spam.example or a subdomain)",
            "deadline 2 days (default of service cible)"
        ]
    );
}

#[test]
fn a_bare_not_rule_still_works() {
    let r = rule("when.not = { channel = \"email\" }");
    assert!(hits(&r, &web(&[])));
    assert!(!hits(&r, &email("", "")));
}

#[test]
fn first_matching_rule_wins_and_actions_apply() {
    let text = format!(
        "{HEAD}[[rules]]\nid = \"urgent\"\nwhen.keywords = \"danger\"\nservice = \"cible\"\npriority = \"urgent\"\ndeadline = \"48 hours\"\ntypology = \"danger\"\ntags = [\"astreinte\", \"voirie\"]\n\n\
         [[rules]]\nid = \"general\"\nwhen.channel = \"email\"\nservice = \"cible\"\npriority = \"low\"\n"
    );
    let r = RuleSet::parse(&text, "t.toml").unwrap();
    let e = r.evaluate(&email("DANGER", ""));
    assert_eq!(e.rule_id.as_deref(), Some("urgent"));
    assert_eq!(e.rule_line, Some(9));
    assert_eq!(e.priority, Priority::Urgent);
    assert_eq!(e.deadline, Deadline::Hours(48));
    assert_eq!(e.typology, "danger");
    assert_eq!(e.tags, ["astreinte", "voirie"]);
    assert_eq!(e.explanation.last().unwrap(), "deadline 48 hours (set by the rule)");
    let e = r.evaluate(&email("bonjour", ""));
    assert_eq!(e.rule_id.as_deref(), Some("general"));
    assert_eq!(e.priority, Priority::Low);
    assert_eq!(e.deadline, Deadline::Days(2));
    assert_eq!(e.typology, "");
    let e = r.evaluate(&web(&[]));
    assert_eq!(e.rule_id, None);
    assert_eq!(e.service, "accueil");
    assert_eq!(e.priority, Priority::Normal);
    assert_eq!(e.deadline, Deadline::BusinessDays(5));
    assert!(e.explanation[0].starts_with("no rule matched"), "{:?}", e.explanation);
}

#[test]
fn qualification_carries_due_date_and_revision() {
    let r = rule("when.keywords = \"x\"");
    let mut c = email("x", "");
    // Thursday 2026-12-03 10:00 UTC + 2 days = Saturday → Monday 7, 17:00 Paris.
    c.received_at = Some(guichet_core::proto::timestamp(
        chrono::DateTime::parse_from_rfc3339("2026-12-03T10:00:00Z")
            .unwrap()
            .to_utc(),
    ));
    let q = r.qualify(&c, 12);
    assert_eq!(q.rule_id, "r");
    assert_eq!(q.service, "cible");
    assert_eq!(q.rules_revision, 12);
    assert_eq!(q.due_date, "2026-12-07");
    assert_eq!(
        q.due_at.unwrap().seconds,
        chrono::DateTime::parse_from_rfc3339("2026-12-07T16:00:00Z")
            .unwrap()
            .timestamp()
    );
    assert_eq!(q.priority(), Priority::Normal);
}

/// The work per contact does not grow with the number of rules: with
/// 5,000 rules a contact is tested against the few rules it could match
/// (those sharing one of its keywords, plus the bare-`not` ones), never
/// the whole file. Timing is measured by the benchmark, not here.
#[test]
fn matching_cost_does_not_grow_with_the_rule_count() {
    let small = RuleSet::parse(&testing::generate_rules(10), "10").unwrap();
    let large = RuleSet::parse(&testing::generate_rules(5000), "5000").unwrap();
    assert_eq!(large.len(), 5000);
    for i in [1, 3, 5, 7, 9] {
        let (a, b) = (
            small.evaluate(&testing::contact_for(i)),
            large.evaluate(&testing::contact_for(i)),
        );
        assert_eq!(a.rule_id, b.rule_id);
        assert_eq!(a.rule_id, Some(format!("regle-{i}")));
    }
    let mut worst = 0;
    for i in (1..5000).step_by(97).chain([4999, 5000, 10_000]) {
        let e = large.evaluate(&testing::contact_for(i));
        if i < 5000 {
            assert_eq!(e.rule_id, Some(format!("regle-{i}")), "{:?}", e.explanation);
        } else {
            assert_eq!(e.rule_id, None);
        }
        worst = worst.max(e.rules_examined);
    }
    // Every generated rule has keywords of its own, so a contact wakes up
    // the one rule that shares its keyword (and the noise rule if flagged).
    assert!(worst <= 2, "examined {worst} rules of 5000");
    let small_worst = (1..10)
        .map(|i| small.evaluate(&testing::contact_for(i)).rules_examined)
        .max()
        .unwrap();
    assert!(small_worst <= 3, "{small_worst}");
}
