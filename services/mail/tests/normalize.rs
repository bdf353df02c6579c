//! Golden files: each `tests/fixtures/<name>.eml` normalizes to exactly
//! `tests/fixtures/<name>.json`. `GUICHET_BLESS=1` rewrites the expected
//! files (review the diff before committing it).

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use guichet_mail::normalize::{Limits, normalize};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

#[test]
fn every_fixture_normalizes_to_its_golden_file() {
    let bless = std::env::var_os("GUICHET_BLESS").is_some();
    let mut names: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .collect();
    names.sort();
    assert!(names.len() >= 15, "the corpus is incomplete: {names:?}");
    let mut failures = Vec::new();
    for eml in names {
        let raw = std::fs::read(&eml).unwrap();
        let got = serde_json::to_value(normalize(&raw, &Limits::default())).unwrap();
        let golden = eml.with_extension("json");
        if bless {
            std::fs::write(&golden, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
            continue;
        }
        let want: serde_json::Value = match std::fs::read_to_string(&golden) {
            Ok(text) => serde_json::from_str(&text).unwrap(),
            Err(_) => {
                failures.push(format!(
                    "{}: no golden file (run with GUICHET_BLESS=1)",
                    golden.display()
                ));
                continue;
            }
        };
        if got != want {
            failures.push(format!(
                "{}:\n got: {}\nwant: {}",
                eml.display(),
                serde_json::to_string_pretty(&got).unwrap(),
                serde_json::to_string_pretty(&want).unwrap()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
