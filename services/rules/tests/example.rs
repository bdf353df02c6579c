//! The shipped example rules file and sample contacts.

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
