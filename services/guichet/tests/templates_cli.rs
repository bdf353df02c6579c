//! `guichet templates check` and `guichet templates preview` as an
//! operator runs them: files only, no configuration, no broker.

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
fn the_shipped_templates_check_and_preview() {
    let out = guichet(&[Path::new("templates"), Path::new("check"), &deploy("templates")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("lang=fr") && stdout.contains("lang=en"), "{stdout}");

    let out = guichet(&[
        Path::new("templates"),
        Path::new("preview"),
        &deploy("templates/acknowledgment.fr.html"),
        &deploy("templates/acknowledgment.sample.json"),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let html = text(&out.stdout);
    assert!(
        html.contains("2026-7K3F-9QXM") && html.contains("réputée rejetée le 30/01/2027"),
        "{html}"
    );
}

#[test]
fn a_template_missing_a_mention_or_a_variable_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(deploy("templates/acknowledgment.fr.txt")).unwrap();
    let file = dir.path().join("acknowledgment.fr.txt");
    std::fs::write(&file, shipped.replace("{{ service.postal_address }}", "")).unwrap();
    let out = guichet(&[Path::new("templates"), Path::new("check"), &file]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("lacks the mandatory R112-5 mention: service postal address"),
        "{stderr}"
    );

    let sample = dir.path().join("sample.json");
    std::fs::write(&sample, r#"{"reference": "2026-AAAA-BBBB"}"#).unwrap();
    let out = guichet(&[
        Path::new("templates"),
        Path::new("preview"),
        &deploy("templates/acknowledgment.fr.txt"),
        &sample,
    ]);
    assert!(!out.status.success(), "an undefined variable is an error");
    assert!(text(&out.stderr).contains("undefined"), "{}", text(&out.stderr));
}
