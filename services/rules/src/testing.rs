//! Large, valid rules files and matching contacts, for benchmarks and
//! tests of the matching cost (`scripts/bench router` routes the same
//! contacts with 10 and with 5,000 rules).

use guichet_core::proto::v1::{Channel, Contact, IdentityClaims, PostalAddress, Source, WebDetails, contact::Details};

const SERVICES: &[&str] = &[
    "etat-civil",
    "urbanisme",
    "voirie",
    "dechets",
    "social",
    "scolaire",
    "accueil",
];

/// The keyword that only rule `i` of a generated file uses.
pub fn keyword(i: usize) -> String {
    format!("motcle{i}")
}

/// A valid rules file with `n` rules, shaped like a real one: a discard
/// rule for auto-replies first, then rules mixing keywords (all of them),
/// channels, sources, form fields, postal-code prefixes and regexes, each
/// with a keyword of its own so that no rule shadows another. No catch-all:
/// unmatched contacts go to the manual service `accueil`.
pub fn generate_rules(n: usize) -> String {
    let mut out = String::with_capacity(200 * n + 1000);
    out.push_str("manual_service = \"accueil\"\n\n[calendar]\nclosures = [\"2026-12-24\"]\n\n");
    for s in SERVICES {
        out.push_str(&format!(
            "[[services]]\nname = \"{s}\"\ndeadline = \"10 business days\"\n\n"
        ));
    }
    if n == 0 {
        return out;
    }
    out.push_str("[[rules]]\nid = \"bruit\"\nwhen.flags = [\"auto_reply\", \"bounce\"]\ndiscard = true\n\n");
    for i in 1..n {
        let service = SERVICES[i % (SERVICES.len() - 1)];
        out.push_str(&format!(
            "[[rules]]\nid = \"regle-{i}\"\nservice = \"{service}\"\ntypology = \"type-{}\"\n",
            i % 50
        ));
        out.push_str(&format!(
            "when.keywords = [\"{}\", \"{}-bis\"]\n",
            keyword(i),
            keyword(i)
        ));
        match i % 10 {
            1 => out.push_str("when.channel = [\"email\", \"web\"]\n"),
            2 => out.push_str(&format!("when.source = \"formulaire-{}\"\n", i % 20)),
            3 => out.push_str(&format!("when.fields.categorie = \"categorie {}\"\n", i % 30)),
            4 => out.push_str(&format!("when.postal_code = \"{}\"\n", 10 + i % 80)),
            5 => out.push_str(&format!("when.subject_matches = '(?i)dossier n°\\s*{i}\\b'\n")),
            6 => out.push_str("priority = \"high\"\ndeadline = \"48 hours\"\n"),
            7 => out.push_str("when.not = { flags = \"bulk\" }\n"),
            _ => {}
        }
        out.push('\n');
    }
    out
}

/// A web contact that rule `i` of `generate_rules(n)` matches when
/// `i < n` (its keyword, and whatever else that rule tests), with a body of
/// ordinary French text around it. `i >= n` gives a contact no rule matches.
pub fn contact_for(i: usize) -> Contact {
    let mut fields = std::collections::HashMap::new();
    fields.insert("categorie".to_owned(), format!("Catégorie {}", i % 30));
    Contact {
        id: format!("01JGENERATED{i:014}"),
        received_at: Some(guichet_core::proto::timestamp(
            chrono::DateTime::from_timestamp(1_795_000_000, 0).unwrap_or_default(),
        )),
        channel: Channel::Web as i32,
        source: Some(Source {
            name: format!("formulaire-{}", i % 20),
            ..Default::default()
        }),
        claims: Some(IdentityClaims {
            email: "jeanne.martin@example.fr".to_owned(),
            postal_address: Some(PostalAddress {
                postal_code: format!("{}000", 10 + i % 80),
                ..Default::default()
            }),
            ..Default::default()
        }),
        subject: format!("Dossier n° {i} : demande concernant la rue des Écoles"),
        body: format!(
            "Bonjour, je me permets de vous écrire au sujet de {} : les conteneurs ne sont \
             plus ramassés depuis deux semaines et l'éclairage public est en panne devant \
             l'école. Pouvez-vous intervenir rapidement ? Cordialement, Mme Martin.",
            keyword(i)
        ),
        details: Some(Details::Web(WebDetails {
            form_id: "contact".to_owned(),
            fields,
            ..Default::default()
        })),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RuleSet;

    #[test]
    fn generated_files_are_valid_and_each_rule_is_reachable() {
        for n in [0, 1, 10, 200] {
            let rules = RuleSet::parse(&generate_rules(n), "generated").unwrap_or_else(|e| panic!("{n}: {e}"));
            assert_eq!(rules.len(), n);
        }
        let rules = RuleSet::parse(&generate_rules(200), "generated").unwrap();
        for i in 1..200 {
            let e = rules.evaluate(&contact_for(i));
            assert_eq!(
                e.rule_id.as_deref(),
                Some(format!("regle-{i}").as_str()),
                "{:?}",
                e.explanation
            );
        }
        assert_eq!(rules.evaluate(&contact_for(200)).rule_id, None);
    }
}
