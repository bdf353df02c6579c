//! The shipped example rules file and sample contacts.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns

use std::path::PathBuf;

use guichet_rules::RuleSet;

fn deploy(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(path)
}

#[test]
fn the_example_rules_file_is_valid() {
    let text = std::fs::read_to_string(deploy("rules.example.toml")).unwrap();
    let rules = RuleSet::parse(&text, "rules.example.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rules.manual_service(), "accueil");
    let names: Vec<&str> = rules.services().iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "accueil",
            "etat-civil",
            "urbanisme",
            "voirie",
            "dechets",
            "police-municipale"
        ]
    );
    assert!(
        rules
            .calendar()
            .closures
            .contains(&chrono::NaiveDate::from_ymd_opt(2026, 12, 24).unwrap())
    );
    assert_eq!(rules.len(), 11);
}

fn sample(name: &str) -> guichet_core::proto::v1::Contact {
    let text = std::fs::read_to_string(deploy(&format!("samples/{name}.json"))).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Each shipped sample, through the example rules: the deciding rule, the
/// service, the priority and the due date (instant and Paris date).
#[test]
fn the_samples_route_as_documented() {
    let text = std::fs::read_to_string(deploy("rules.example.toml")).unwrap();
    let rules = RuleSet::parse(&text, "rules.example.toml").unwrap();
    // sample, rule, service, priority, due_at, due_date
    type Case = (
        &'static str,
        Option<&'static str>,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
    );
    let cases: &[Case] = &[
        (
            "etat-civil-acte-naissance",
            Some("etat-civil-courriel"),
            "etat-civil",
            "PRIORITY_NORMAL",
            // Wed 23 Dec; 24 (closure), 25, 31 (closure), 1 Jan skipped.
            "2027-01-12T16:00:00+00:00",
            "2027-01-12",
        ),
        (
            "etat-civil-formulaire",
            Some("etat-civil-formulaire"),
            "etat-civil",
            "PRIORITY_NORMAL",
            "2027-01-12T16:00:00+00:00",
            "2027-01-12",
        ),
        (
            "dechets-encombrants",
            Some("dechets"),
            "dechets",
            "PRIORITY_NORMAL",
            "2026-12-09T16:00:00+00:00",
            "2026-12-09",
        ),
        (
            "dechets-hors-commune",
            Some("dechets-hors-commune"),
            "accueil",
            "PRIORITY_NORMAL",
            "2026-12-14T16:00:00+00:00",
            "2026-12-14",
        ),
        (
            "auto-reponse",
            Some("bruit-automatique"),
            "accueil",
            "PRIORITY_NORMAL",
            "2026-12-14T16:00:00+00:00",
            "2026-12-14",
        ),
        // Saturday 18:30 UTC + 4 hours, exactly; 23:30 in Paris.
        (
            "voirie-danger-telephone",
            Some("voirie-danger"),
            "voirie",
            "PRIORITY_URGENT",
            "2026-12-05T22:30:00+00:00",
            "2026-12-05",
        ),
        // Good Friday is open outside Alsace-Moselle; Easter Monday is not;
        // 17:00 summer time is 15:00 UTC.
        (
            "urbanisme-suivi",
            Some("urbanisme-dossier"),
            "urbanisme",
            "PRIORITY_HIGH",
            "2026-04-07T15:00:00+00:00",
            "2026-04-07",
        ),
        (
            "sans-regle",
            None,
            "accueil",
            "PRIORITY_NORMAL",
            "2027-01-05T16:00:00+00:00",
            "2027-01-05",
        ),
    ];
    for &(name, rule, service, priority, due_at, due_date) in cases {
        let contact = sample(name);
        let q = rules.qualify(&contact, 7);
        assert_eq!(q.rule_id, rule.unwrap_or(""), "{name}: {:?}", q.explanation);
        assert_eq!(q.service, service, "{name}");
        assert_eq!(q.priority().as_str_name(), priority, "{name}");
        let at = guichet_core::proto::to_datetime(q.due_at.as_ref().unwrap()).unwrap();
        assert_eq!(at.to_rfc3339(), due_at, "{name}");
        assert_eq!(q.due_date, due_date, "{name}");
        assert_eq!(q.rules_revision, 7);
        assert_eq!(q.discarded, name == "auto-reponse", "{name}");
        assert!(!q.explanation.is_empty(), "{name}");
    }
}
