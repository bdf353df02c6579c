//! Every validation error, with its line and column and what was expected.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns

use guichet_rules::{Diagnostic, RuleSet};

const HEAD: &str = r#"manual_service = "accueil"

[[services]]
name = "accueil"
deadline = "5 business days"

[[services]]
name = "dechets"
deadline = "3 business days"
"#;
// HEAD is 9 lines; the text after it starts on line 10.

fn errors(text: &str) -> Vec<Diagnostic> {
    match RuleSet::parse(text, "r.toml") {
        Ok(_) => panic!("expected errors in:\n{text}"),
        Err(e) => {
            assert_eq!(e.origin, "r.toml");
            e.errors
        }
    }
}

/// The one error of `text`, as (line, column, message, expected).
fn one(text: &str) -> (usize, usize, String, String) {
    let all = errors(text);
    assert_eq!(all.len(), 1, "{all:#?}");
    let d = all.into_iter().next().unwrap();
    (d.line, d.column, d.message, d.expected.unwrap_or_default())
}

fn with_rules(rules: &str) -> String {
    format!("{HEAD}{rules}")
}

#[test]
fn a_valid_file_parses() {
    let text = with_rules("\n[[rules]]\nid = \"a\"\nwhen.keywords = \"dechets\"\nservice = \"dechets\"\n");
    let rules = RuleSet::parse(&text, "r.toml").unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules.manual_service(), "accueil");
    assert_eq!(rules.services()[1].name, "dechets");
    assert_eq!(rules.services()[1].deadline, guichet_rules::Deadline::BusinessDays(3));
}

#[test]
fn unknown_service_in_a_rule() {
    let (line, col, msg, expected) = one(&with_rules(
        "\n[[rules]]\nid = \"a\"\nwhen.keywords = \"x\"\nservice = \"voiries\"\n",
    ));
    assert_eq!((line, col), (14, 11));
    assert_eq!(msg, "unknown service `voiries` in rule `a`");
    assert_eq!(expected, "one of the [[services]] names: accueil, dechets");
}

#[test]
fn unknown_manual_service() {
    let text = HEAD.replace("manual_service = \"accueil\"", "manual_service = \"mairie\"");
    let (line, col, msg, _) = one(&text);
    assert_eq!((line, col), (1, 18));
    assert!(msg.contains("unknown service `mairie` in `manual_service`"), "{msg}");
}

#[test]
fn bad_regex_points_inside_the_string() {
    let (line, col, msg, expected) = one(&with_rules(
        "\n[[rules]]\nid = \"a\"\nwhen.subject_matches = 'PC (\\d+'\nservice = \"dechets\"\n",
    ));
    // The quote is at column 24: the open group `(` of "PC (" is at 28.
    assert_eq!(line, 13);
    assert_eq!(col, 28, "{msg}");
    assert!(msg.starts_with("bad regex: unclosed group"), "{msg}");
    assert!(expected.contains("regular expression"), "{expected}");
    // With escapes in a basic string, the error points at the string.
    let (line, col, msg, _) = one(&with_rules(
        "\n[[rules]]\nid = \"a\"\nwhen.body_matches = \"\\\\d{2,1}\"\nservice = \"dechets\"\n",
    ));
    assert_eq!((line, col), (13, 21));
    assert!(msg.contains("bad regex"), "{msg}");
}

#[test]
fn bad_durations() {
    let (line, col, msg, expected) = one(&with_rules(
        "\n[[rules]]\nid = \"a\"\nwhen.keywords = \"x\"\nservice = \"dechets\"\ndeadline = \"10 jours\"\n",
    ));
    assert_eq!((line, col), (15, 12));
    assert_eq!(msg, "bad deadline \"10 jours\": unknown unit `jours`");
    assert!(
        expected.contains("\"10 business days\"") && expected.contains("\"48 hours\""),
        "{expected}"
    );
    let text = HEAD.replace("deadline = \"3 business days\"", "deadline = \"soon\"");
    let (line, col, msg, _) = one(&text);
    assert_eq!((line, col), (9, 12));
    assert!(msg.contains("`soon` is not a whole number"), "{msg}");
}

#[test]
fn unknown_channel_flag_priority_and_key() {
    let (line, col, msg, expected) = one(&with_rules(
        "\n[[rules]]\nid = \"a\"\nwhen.channel = [\"email\", \"fax\"]\nservice = \"dechets\"\n",
    ));
    assert_eq!((line, col), (13, 26));
    assert_eq!(msg, "unknown channel `fax`");
    assert_eq!(expected, "one of: email, web, phone, counter, postal");

    let (line, col, msg, expected) = one(&with_rules(
        "\n[[rules]]\nid = \"a\"\nwhen.flags = \"spam\"\ndiscard = true\n",
    ));
    assert_eq!((line, col), (13, 14));
    assert_eq!(msg, "unknown flag `spam`");
    assert!(
        expected.contains("auto_reply") && expected.contains("bounce"),
        "{expected}"
    );

    let (line, col, msg, expected) = one(&with_rules(
        "\n[[rules]]\nid = \"a\"\nwhen.keywords = \"x\"\nservice = \"dechets\"\npriority = \"asap\"\n",
    ));
    assert_eq!((line, col), (15, 12));
    assert_eq!(msg, "unknown priority `asap`");
    assert_eq!(expected, "one of: low, normal, high, urgent");

    let (line, col, msg, expected) = one(&with_rules(
        "\n[[rules]]\nid = \"a\"\nwhen.keyword = \"x\"\nservice = \"dechets\"\n",
    ));
    assert_eq!((line, col), (13, 6));
    assert_eq!(msg, "unknown key `keyword` in a condition; did you mean `keywords`?");
    assert!(expected.starts_with("one of: channel, source"), "{expected}");

    let (line, col, msg, _) = one(&with_rules(
        "\n[[rules]]\nid = \"a\"\nwhen.keywords = \"x\"\nservce = \"dechets\"\ndiscard = true\n",
    ));
    assert_eq!((line, col), (14, 1));
    assert_eq!(msg, "unknown key `servce` in [[rules]]; did you mean `service`?");
}

#[test]
fn duplicate_rule_id_names_the_first() {
    let (line, col, msg, _) = one(&with_rules(
        "\n[[rules]]\nid = \"a\"\nwhen.keywords = \"x\"\nservice = \"dechets\"\n\n[[rules]]\nid = \"a\"\nwhen.keywords = \"y\"\nservice = \"dechets\"\n",
    ));
    assert_eq!((line, col), (17, 6));
    assert_eq!(msg, "duplicate rule id `a` (first used on line 12)");
}

#[test]
fn a_rule_after_a_catch_all_is_unreachable() {
    let (line, col, msg, expected) = one(&with_rules(
        "\n[[rules]]\nid = \"tout\"\nservice = \"accueil\"\n\n[[rules]]\nid = \"b\"\nwhen.keywords = \"y\"\nservice = \"dechets\"\n",
    ));
    assert_eq!((line, col), (16, 6));
    assert_eq!(
        msg,
        "rule `b` can never match: rule `tout` (line 12) comes first and has no condition and matches every contact"
    );
    assert!(expected.contains("more specific rule before"), "{expected}");
}

#[test]
fn identical_and_implied_conditions_are_unreachable() {
    // Same condition, written in another order and case.
    let (line, _, msg, _) = one(&with_rules(
        "\n[[rules]]\nid = \"a\"\nwhen.keywords = [\"Déchets\", \"bac\"]\nwhen.channel = \"email\"\nservice = \"dechets\"\n\n\
         [[rules]]\nid = \"b\"\nwhen.channel = \"email\"\nwhen.keywords = [\"bac\", \"dechets\"]\nservice = \"accueil\"\n",
    ));
    assert_eq!(line, 18);
    assert!(msg.starts_with("rule `b` can never match: rule `a` (line 12)"), "{msg}");
    // An earlier, more general rule: every test of `a` holds when `b`'s do.
    let (line, _, msg, _) = one(&with_rules(
        "\n[[rules]]\nid = \"a\"\nwhen.keywords = [\"dechets\", \"bac\"]\nservice = \"dechets\"\n\n\
         [[rules]]\nid = \"b\"\nwhen.keywords = \"bac\"\nwhen.postal_code = \"67\"\nservice = \"accueil\"\n",
    ));
    assert_eq!(line, 17);
    assert!(
        msg.contains(
            "rule `b` can never match: rule `a` (line 12) comes first and matches every contact this one would"
        ),
        "{msg}"
    );
    // The other way round is fine: the specific rule comes first.
    RuleSet::parse(
        &with_rules(
            "\n[[rules]]\nid = \"b\"\nwhen.keywords = \"bac\"\nwhen.postal_code = \"67\"\nservice = \"accueil\"\n\n\
             [[rules]]\nid = \"a\"\nwhen.keywords = [\"dechets\", \"bac\"]\nservice = \"dechets\"\n",
        ),
        "r.toml",
    )
    .unwrap();
}

#[test]
fn empty_conditions() {
    let (line, col, msg, expected) = one(&with_rules(
        "\n[[rules]]\nid = \"a\"\nwhen = {}\nservice = \"dechets\"\n",
    ));
    assert_eq!((line, col), (13, 8));
    assert_eq!(msg, "empty condition `when`");
    assert!(expected.contains("no `when` at all"), "{expected}");
    let (_, _, msg, _) = one(&with_rules(
        "\n[[rules]]\nid = \"a\"\nwhen.any = []\nservice = \"dechets\"\n",
    ));
    assert_eq!(msg, "empty condition `any`");
    let (_, _, msg, _) = one(&with_rules(
        "\n[[rules]]\nid = \"a\"\nwhen.keywords = []\nservice = \"dechets\"\n",
    ));
    assert_eq!(msg, "`keywords` is an empty list");
    let (_, _, msg, _) = one(&with_rules(
        "\n[[rules]]\nid = \"a\"\nwhen.not = {}\nservice = \"dechets\"\n",
    ));
    assert_eq!(msg, "empty condition `not`");
}

#[test]
fn every_error_is_reported_not_just_the_first() {
    let text = with_rules(
        "\n[[rules]]\nid = \"a\"\nwhen.channel = \"fax\"\nservice = \"nope\"\ndeadline = \"demain\"\n\n\
         [[rules]]\nid = \"a\"\nwhen.subject_matches = '('\nservice = \"dechets\"\n\n\
         [[rules]]\nid = \"c\"\nwhen.keywords = \"x\"\nwhen.postal_code = \"6A\"\npriority = \"vite\"\n",
    );
    let all = errors(&text);
    let got: Vec<(usize, &str)> = all.iter().map(|d| (d.line, d.message.as_str())).collect();
    assert_eq!(got.len(), 8, "{got:#?}");
    let has = |line: usize, start: &str| got.iter().any(|(l, m)| *l == line && m.starts_with(start));
    assert!(has(13, "unknown channel `fax`"), "{got:#?}");
    assert!(has(14, "unknown service `nope`"), "{got:#?}");
    assert!(has(15, "bad deadline \"demain\""), "{got:#?}");
    assert!(has(18, "duplicate rule id `a`"), "{got:#?}");
    assert!(has(19, "bad regex"), "{got:#?}");
    assert!(has(25, "`6A` is not a postal code"), "{got:#?}");
    assert!(has(26, "unknown priority `vite`"), "{got:#?}");
    assert!(has(23, "rule `c` names no `service`"), "{got:#?}");
    // Sorted by position, and displayed one per line.
    assert!(
        all.windows(2)
            .all(|w| (w[0].line, w[0].column) <= (w[1].line, w[1].column))
    );
    let shown = RuleSet::parse(&text, "r.toml").unwrap_err().to_string();
    assert_eq!(shown.lines().count(), 8);
    assert!(shown.lines().all(|l| l.starts_with("r.toml:")), "{shown}");
    assert!(
        shown.contains("r.toml:13:16: unknown channel `fax` (expected one of: email, web, phone, counter, postal)"),
        "{shown}"
    );
}

#[test]
fn syntax_errors_are_located() {
    let text = "manual_service = \"accueil\"\n[[services]]\nname = \"accueil\ndeadline = \"1 day\"\n";
    let all = errors(text);
    assert!(!all.is_empty());
    assert_eq!(all[0].line, 3, "{all:#?}");
    assert!(all[0].message.starts_with("TOML syntax:"), "{all:#?}");
}

#[test]
fn structural_errors() {
    // Missing pieces.
    let all = errors("[[services]]\nname = \"a\"\n");
    let msgs: Vec<&str> = all.iter().map(|d| d.message.as_str()).collect();
    assert!(
        msgs.iter().any(|m| m.starts_with("[[services]] without `deadline`")),
        "{msgs:?}"
    );
    assert!(msgs.iter().any(|m| m.starts_with("no `manual_service`")), "{msgs:?}");
    // Wrong types say what they found.
    let (line, col, msg, _) = one(&with_rules(
        "\n[[rules]]\nid = \"a\"\nwhen.attachments = \"yes\"\nservice = \"dechets\"\n",
    ));
    assert_eq!((line, col), (13, 20));
    assert_eq!(msg, "`attachments` must be true or false, not a string");
    let (_, _, msg, _) = one(&with_rules(
        "\n[[rules]]\nid = 7\nwhen.keywords = \"x\"\nservice = \"dechets\"\n",
    ));
    assert_eq!(msg, "`id` must be a string, not an integer");
    // Names that cannot be subject tokens.
    let text = HEAD.replace("name = \"dechets\"", "name = \"déchets ménagers\"");
    let all = errors(&text);
    assert!(
        all.iter()
            .any(|d| d.line == 8 && d.message.contains("cannot be a NATS subject token")),
        "{all:#?}"
    );
    // Duplicate service.
    let text = HEAD.replace("name = \"dechets\"", "name = \"accueil\"");
    let (line, _, msg, _) = one(&text);
    assert_eq!(line, 8);
    assert_eq!(msg, "service `accueil` is declared twice (first on line 4)");
    // Calendar.
    let (line, col, msg, _) = one(&format!("{HEAD}\n[calendar]\ntime_zone = \"Europe/Pariss\"\n"));
    assert_eq!((line, col), (12, 13));
    assert_eq!(msg, "unknown time zone `Europe/Pariss`");
    let (line, col, msg, _) = one(&format!(
        "{HEAD}\n[calendar]\nclosures = [\"2026-12-24\", \"2026-02-30\"]\n"
    ));
    assert_eq!((line, col), (12, 27));
    assert_eq!(msg, "bad closure date");
    let (_, _, msg, _) = one(&format!("{HEAD}\n[calendar]\nbusiness_hours_end = \"5pm\"\n"));
    assert_eq!(msg, "bad time \"5pm\"");
    // Keywords and field tests.
    let (_, _, msg, _) = one(&with_rules(
        "\n[[rules]]\nid = \"a\"\nwhen.keywords = \"de*chets\"\nservice = \"dechets\"\n",
    ));
    assert_eq!(msg, "`*` inside keyword \"de*chets\"");
    let (_, _, msg, _) = one(&with_rules(
        "\n[[rules]]\nid = \"a\"\nwhen.fields.motif = { startswith = \"x\" }\nservice = \"dechets\"\n",
    ));
    assert!(msg.starts_with("unknown key `startswith` in fields.motif"), "{msg}");
    let (_, _, msg, _) = one(&with_rules(
        "\n[[rules]]\nid = \"a\"\nwhen.sender_domain = \"localhost\"\nservice = \"dechets\"\n",
    ));
    assert_eq!(msg, "`localhost` is not a domain");
}

#[test]
fn a_closure_can_be_a_toml_date() {
    let text = format!("{HEAD}\n[calendar]\nclosures = [2026-12-24, \"2026-12-31\"]\nalsace_moselle = true\n");
    let rules = RuleSet::parse(&text, "r.toml").unwrap();
    assert_eq!(rules.calendar().closures.len(), 2);
    assert!(rules.calendar().alsace_moselle);
}

#[test]
fn regexes_whose_set_is_over_the_limit_are_refused_and_one_too_large_is_named() {
    // One regex over the crate's default limit: its rule is pointed at.
    let (line, _, message, _) = one(&with_rules(
        "[[rules]]\nid = \"enorme\"\nservice = \"dechets\"\nwhen.body_matches = '\\w{5000}'\n",
    ));
    assert_eq!(line, 13);
    assert!(message.starts_with("bad regex"), "{message}");

    // Each one acceptable, together too much for one pass (they used to be
    // let up to 512 MiB compiled and 512 MiB of cache per thread).
    let mut rules = String::new();
    for i in 0..6 {
        rules.push_str(&format!(
            "[[rules]]\nid = \"r{i}\"\nservice = \"dechets\"\nwhen.keywords = [\"mot{i}\"]\nwhen.body_matches = '(?i)\\w{{200}}x{i}'\n"
        ));
    }
    let all = errors(&with_rules(&rules));
    assert_eq!(all.len(), 1, "{all:#?}");
    assert!(
        all[0].message.contains("6 regexes together are over the 32 MiB limit"),
        "{:?}",
        all[0].message
    );
}

#[test]
fn a_service_due_soon_is_a_deadline() {
    let ok = "manual_service = \"accueil\"\n\n[[services]]\nname = \"accueil\"\ndeadline = \"5 business days\"\ndue_soon = \"2 business days\"\n";
    let rules = RuleSet::parse(ok, "r.toml").unwrap();
    assert_eq!(
        rules.due_soon_of("accueil"),
        Some(guichet_rules::Deadline::BusinessDays(2))
    );
    assert_eq!(rules.due_soon_of("nowhere"), None);
    let (line, column, message, expected) = one(&ok.replace("\"2 business days\"", "\"2 fortnights\""));
    assert_eq!((line, column), (6, 12));
    assert!(message.contains("bad deadline \"2 fortnights\""), "{message}");
    assert!(expected.contains("business days"), "{expected}");
}
