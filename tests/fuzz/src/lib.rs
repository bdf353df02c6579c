//! Fuzz targets: what people outside the town hall control, fed with
//! arbitrary bytes.
//!
//! Each target is a function of the bytes that must never panic, hang or
//! break its invariants (asserted here, so that AFL++ reports a violation
//! as a crash). `scripts/fuzz TARGET MINUTES` runs one under AFL++ through
//! cargo-afl (the `afl` feature builds the `fuzz_<target>` entry points);
//! the `replay` test runs every file of `corpus/<target>/` and
//! `crashes/<target>/` through the same function on every `scripts/test`.
//!
//! - [`mail`]: a raw e-mail through normalization (mending, charsets,
//!   quote detection, noise and damage flags);
//! - [`web`]: a submission body (JSON, form fields or multipart, chosen
//!   by the first byte) through parsing and a form's mapping;
//! - [`rules`]: a rules file through the parser and validator, and the
//!   example rules' matcher on a contact made of the bytes;
//! - [`reference`]: reference parsing and scanning in free text.

use std::sync::LazyLock;

use guichet_core::proto::v1::{Channel, Contact, IdentityClaims};
use guichet_web::{
    FormConfig, WebConfig,
    body::{self, BodyKind, Limits},
    receive::{Content, Gate},
};

/// A fuzz target: arbitrary bytes in, a panic if an invariant breaks.
pub type Target = fn(&[u8]);

/// The targets, by name (for the replay test and `scripts/fuzz`).
pub const TARGETS: &[(&str, Target)] = &[("mail", mail), ("web", web), ("rules", rules), ("reference", reference)];

/// A raw e-mail, normalized with limits small enough to reach the
/// truncation paths.
pub fn mail(data: &[u8]) {
    let limits = guichet_mail::normalize::Limits {
        max_message_size: 64 * 1024,
        max_body_chars: 4096,
    };
    let n = guichet_mail::normalize::normalize(data, &limits);
    assert!(n.body.chars().count() <= limits.max_body_chars, "body over its limit");
    assert!(n.to.len() <= 200 && n.cc.len() <= 200, "recipients over their limit");
    assert!(!n.body.contains('\u{1a}'), "a boundary mark leaked into the text");
    // Mending only adds (a blank line, a mark): it never drops a byte.
    if let Some(mended) = guichet_mail::repair::repair(data) {
        assert!(mended.bytes.len() >= data.len(), "mending only adds");
    }
}

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
});

static WEB: LazyLock<(Gate, FormConfig)> = LazyLock::new(|| {
    let form: FormConfig = toml::from_str(
        r#"
        insecure_no_signature = true
        email = { json = "/usager/email", field = "email" }
        phone = { json = "/usager/telephone", field = "telephone" }
        name = { json = "/usager/nom", field = "nom" }
        address = { lines = ["/adresse/voie"], postal_code = "/adresse/code_postal", city = "/adresse/commune" }
        subject = { json = "/objet", field = "objet" }
        description = { json = "/description", field = "description" }
        submission_id = "/id"
        keep = { categorie = { json = "/categorie", field = "categorie" } }
        "#,
    )
    .expect("the fuzz form's mapping");
    (Gate::new(&WebConfig::default()), form)
});

/// A submission body: the first byte picks its kind, the rest is the body.
pub fn web(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let kind = match selector % 3 {
        0 => BodyKind::Json,
        1 => BodyKind::UrlEncoded,
        _ => BodyKind::Multipart { boundary: "XyZ".into() },
    };
    let limits = Limits {
        max_fields: 100,
        max_json_depth: 16,
        max_file_bytes: 64 * 1024,
    };
    let (gate, form) = &*WEB;
    let parsed = RUNTIME.block_on(body::parse(
        &kind,
        Content::Memory(bytes::Bytes::copy_from_slice(body)),
        limits,
        gate,
    ));
    if let Ok(submission) = parsed {
        let _ = guichet_web::mapping::map(form, &submission.payload);
    }
}

static EXAMPLE_RULES: LazyLock<Option<guichet_rules::RuleSet>> = LazyLock::new(|| {
    let text = include_str!("../../../deploy/rules.example.toml");
    guichet_rules::RuleSet::parse(text, "deploy/rules.example.toml").ok()
});

/// A rules file (the bytes as text) through validation, then the example
/// rules on a contact whose subject, body and sender are the bytes.
pub fn rules(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(rules) = guichet_rules::RuleSet::parse(&text, "fuzz") {
        let _ = rules.evaluate(&contact_of(&text));
    }
    if let Some(example) = EXAMPLE_RULES.as_ref() {
        let contact = contact_of(&text);
        let evaluation = example.evaluate(&contact);
        let _ = example.qualify(&contact, 1);
        drop(evaluation);
    }
}

fn contact_of(text: &str) -> Contact {
    let (subject, body) = text.split_once('\n').unwrap_or((text, ""));
    Contact {
        channel: Channel::Email as i32,
        subject: subject.to_owned(),
        body: body.to_owned(),
        claims: Some(IdentityClaims {
            email: subject.chars().take(100).collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// References typed by people: parsed, and found in free text.
pub fn reference(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Some(canonical) = guichet_core::ids::parse_reference(&text) {
        assert_eq!(
            guichet_core::ids::parse_reference(&canonical).as_deref(),
            Some(canonical.as_str()),
            "a canonical reference parses to itself"
        );
    }
    let found = guichet_router::requests::scan_references(&text, 4);
    assert!(found.len() <= 4);
    for reference in found {
        assert_eq!(
            guichet_core::ids::parse_reference(&reference).as_deref(),
            Some(reference.as_str()),
            "what the scan finds is canonical"
        );
    }
}
