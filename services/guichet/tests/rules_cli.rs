//! `guichet rules check` and `guichet rules test` as an operator runs them:
//! no configuration file and no broker needed.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

fn deploy(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(path)
}

fn guichet(args: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_guichet"))
        // The rules commands must not need a configuration.
        .arg("--config")
        .arg("/nonexistent/guichet.toml")
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("guichet runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_accepts_the_example() {
    let out = guichet(&[Path::new("rules"), Path::new("check"), &deploy("rules.example.toml")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("valid (6 services, 11 rules, manual qualification by accueil)"),
        "{stdout}"
    );
}

#[test]
fn check_prints_every_error_with_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.toml");
    std::fs::write(
        &file,
        "manual_service = \"accueil\"\n[[services]]\nname = \"accueil\"\ndeadline = \"3 jours\"\n\
         [[rules]]\nid = \"r\"\nwhen.channel = \"fax\"\nwhen.subject_matches = 'a(b'\nservice = \"voirie\"\n\
         [[rules]]\nid = \"r\"\nwhen.channel = \"web\"\nservice = \"accueil\"\n",
    )
    .unwrap();
    let out = guichet(&[Path::new("rules"), Path::new("check"), &file]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    let f = file.display().to_string();
    for expected in [
        format!("{f}:4:12: bad deadline \"3 jours\": unknown unit `jours` (expected a number and a unit"),
        format!("{f}:7:16: unknown channel `fax` (expected one of: email, web, phone, counter, postal)"),
        format!("{f}:8:26: bad regex: unclosed group"),
        format!("{f}:9:11: unknown service `voirie` in rule `r` (expected one of the [[services]] names: accueil)"),
        format!("{f}:11:6: duplicate rule id `r` (first used on line 6)"),
        format!("error: {f}: 5 errors in the rules"),
    ] {
        assert!(
            stderr.lines().any(|l| l.starts_with(&expected)),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    assert_eq!(stderr.lines().count(), 6, "{stderr}");
}

#[test]
fn test_routes_the_samples_and_says_why_and_when() {
    let mut args: Vec<PathBuf> = vec!["rules".into(), "test".into(), deploy("rules.example.toml")];
    let mut samples: Vec<PathBuf> = std::fs::read_dir(deploy("samples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    samples.sort();
    assert!(samples.len() >= 8, "{samples:?}");
    args.extend(samples);
    let refs: Vec<&Path> = args.iter().map(PathBuf::as_path).collect();
    let out = guichet(&refs);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for expected in [
        "auto-reponse.json: rule `bruit-automatique` (line 132) → service accueil, priority normal, DISCARDED",
        "    - flagged auto_reply",
        "etat-civil-acte-naissance.json: rule `etat-civil-courriel` (line 161) → service etat-civil, typology demande-acte",
        "    - keyword \"acte de naissance\" in the body",
        "    received 2026-12-23 11:12 CET, due 2027-01-12 17:00 CET (2027-01-12)",
        "etat-civil-formulaire.json: rule `etat-civil-formulaire` (line 151)",
        "    - form field \"type_acte\" is \"deces\"",
        "dechets-hors-commune.json: rule `dechets-hors-commune` (line 208) → service accueil",
        "    - not (postal code is 67000)",
        "sans-regle.json: no rule → service accueil, priority normal",
        "    - no rule matched: manual qualification by service accueil",
        "urbanisme-suivi.json: rule `urbanisme-dossier` (line 171) → service urbanisme, typology suivi-dossier-urbanisme, priority high",
        "    received 2026-04-03 16:00 CEST, due 2026-04-07 17:00 CEST (2026-04-07)",
        "voirie-danger-telephone.json: rule `voirie-danger` (line 140) → service voirie, typology danger-voie-publique, priority urgent, tags astreinte",
        "    received 2026-12-05 19:30 CET, due 2026-12-05 23:30 CET (2026-12-05)",
    ] {
        assert!(
            stdout.lines().any(|l| l.contains(expected)),
            "missing {expected:?} in:\n{stdout}"
        );
    }
}

#[test]
fn test_names_a_sample_that_is_not_a_contact() {
    let dir = tempfile::tempdir().unwrap();
    let sample = dir.path().join("broken.json");
    std::fs::write(&sample, "{\"channel\": \"CHANNEL_FAX\"}").unwrap();
    let out = guichet(&[
        Path::new("rules"),
        Path::new("test"),
        &deploy("rules.example.toml"),
        &sample,
    ]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("broken.json is not a contact in proto3 JSON"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
