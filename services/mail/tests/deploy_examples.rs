//! The commented `[[mail.mailboxes]]` examples in `deploy/` are kept in
//! step with the configuration type: uncommented, they parse (unknown keys
//! are refused) and, with their secrets present, validate.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use guichet_core::{config::Validate, secret::Secret};
use guichet_mail::MailConfig;
use serde::Deserialize;

#[derive(Deserialize)]
struct Root {
    mail: MailConfig,
}

fn mail_example(file: &str, marker: &str) -> MailConfig {
    let text = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").join(file)).unwrap();
    let section = text.split(marker).nth(1).unwrap().split("# --- router").next().unwrap();
    let toml_text: String = section
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| l.starts_with("[[") || l.split_once(" = ").is_some_and(|(k, _)| !k.contains(' ')))
        .map(|l| format!("{l}\n"))
        .collect();
    toml::from_str::<Root>(&toml_text)
        .unwrap_or_else(|e| panic!("{file}: {e}\n{toml_text}"))
        .mail
}

#[test]
fn the_deploy_examples_parse_and_validate() {
    for (file, marker, count) in [
        ("deploy/guichet.example.toml", "# --- mail ---", 2),
        ("deploy/dev.toml", "# --- mail (shared mailboxes) ---", 1),
    ] {
        let mut config = mail_example(file, marker);
        assert_eq!(config.mailboxes.len(), count, "{file}");
        for m in &mut config.mailboxes {
            m.password = Some(Secret::Inline("x".into()));
            m.ca_file = None;
        }
        config.validate().unwrap_or_else(|e| panic!("{file}: {e}"));
    }
}
