//! Rules files for the tests.
#![allow(dead_code)]

/// One rule per kind of condition, and a manual service.
pub const ALL_CONDITIONS: &str = r#"
manual_service = "accueil"

[[services]]
name = "accueil"
deadline = "5 business days"

[[services]]
name = "dechets"
deadline = "3 business days"

[[services]]
name = "urbanisme"
deadline = "10 business days"

[[services]]
name = "voirie"
deadline = "5 business days"

[[services]]
name = "etat-civil"
deadline = "10 business days"

[[services]]
name = "police"
deadline = "48 hours"

[calendar]
time_zone = "Europe/Paris"

[[rules]]
id = "bruit"
when.flags = ["auto_reply", "bounce"]
discard = true

[[rules]]
id = "par-domaine"
when.sender_domain = "gouv.fr"
service = "accueil"
typology = "courrier-etat"
priority = "high"
tags = ["elus"]

[[rules]]
id = "par-mot-cle"
when.keywords = ["dechets", "encombrant*"]
service = "dechets"
typology = "collecte"

[[rules]]
id = "par-regex"
when.subject_matches = '(?i)\bPC\s?\d{3}\b'
service = "urbanisme"
typology = "suivi-permis"

[[rules]]
id = "par-source"
when.source = "urbanisme@"
service = "urbanisme"
typology = "urbanisme-courriel"

[[rules]]
id = "par-champ"
when.channel = "web"
when.fields.type_acte = ["naissance", "mariage"]
service = "etat-civil"
typology = "demande-acte"

[[rules]]
id = "par-code-postal"
when.postal_code = "75"
service = "accueil"
typology = "hors-commune"

[[rules]]
id = "par-piece-jointe"
when.keywords = ["trottoir"]
when.attachments = true
service = "voirie"
typology = "signalement-photo"

[[rules]]
id = "combine"
service = "police"
typology = "tranquillite"
priority = "urgent"
deadline = "4 hours"
[rules.when]
channel = ["phone", "counter"]
any = [ { keywords = ["bruit"] }, { keywords = ["tapage"] } ]
not = { keywords = ["chantier"] }
"#;

/// A small file sending keyword `alpha` to `service`.
pub fn alpha_to(service: &str) -> String {
    format!(
        r#"
manual_service = "accueil"

[[services]]
name = "accueil"
deadline = "5 business days"

[[services]]
name = "{service}"
deadline = "10 business days"

[[rules]]
id = "alpha-{service}"
when.keywords = ["alpha"]
service = "{service}"
typology = "alpha"
"#
    )
}
