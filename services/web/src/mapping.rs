//! A form's mapping applied to a submission: the usager's claims, the
//! subject, the description and the kept fields.
//!
//! A required target that is missing or invalid refuses the submission
//! (422, naming the target). An optional identifier that is not valid (a
//! phone number with a typo) is dropped and flagged instead: the usager's
//! request must not be lost for a field they did not have to fill in.

use std::collections::HashMap;

use guichet_core::{
    identity,
    proto::v1::{Flag, FlagKind, IdentityClaims, PostalAddress},
};
use serde_json::Value;

use crate::{
    body::Payload,
    config::{FormConfig, Locator},
    problem::Problem,
};

/// Longest subject kept (characters); longer ones are cut and flagged.
const MAX_SUBJECT: usize = 300;
/// Longest name, address line, submission id (characters).
const MAX_SHORT: usize = 300;

/// What the mapping found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mapped {
    pub claims: IdentityClaims,
    pub subject: String,
    pub body: String,
    pub fields: HashMap<String, String>,
    pub submission_id: String,
    pub flags: Vec<Flag>,
}

struct Reader<'a> {
    form: &'a FormConfig,
    payload: &'a Payload,
    flags: Vec<Flag>,
}

impl Reader<'_> {
    fn required(&self, target: &str) -> bool {
        self.form.required.iter().any(|r| r == target)
    }

    /// Where `locator` looks in this kind of body, for messages.
    fn place(&self, locator: &Locator) -> String {
        match self.payload {
            Payload::Json(_) => locator.json_pointer().unwrap_or_else(|| "(no JSON pointer)".into()),
            Payload::Fields(_) => locator
                .field_name()
                .map_or_else(|| "(no field name)".into(), |f| format!("field {f}")),
        }
    }

    /// The text at `locator`: `None` when absent or blank. Structured JSON
    /// (objects, nested arrays) is an error unless `structured_ok`.
    fn text(&self, target: &str, locator: Option<&Locator>, structured_ok: bool) -> Result<Option<String>, Problem> {
        let Some(locator) = locator else {
            return Ok(None);
        };
        let found = match self.payload {
            Payload::Json(doc) => match locator.json_pointer().and_then(|p| doc.pointer(&p)) {
                None => None,
                Some(value) => json_text(value, structured_ok)
                    .map_err(|what| Problem::invalid_field(target, format!("expected text, found {what}")))?,
            },
            Payload::Fields(fields) => locator.field_name().and_then(|name| {
                let values: Vec<&str> = fields
                    .iter()
                    .filter(|(n, v)| n == name && !v.trim().is_empty())
                    .map(|(_, v)| v.as_str())
                    .collect();
                (!values.is_empty()).then(|| values.join(", "))
            }),
        };
        Ok(found.filter(|v| !v.trim().is_empty()))
    }

    /// The text of a target, checked for presence when required.
    fn get(&self, target: &str, locator: Option<&Locator>, structured_ok: bool) -> Result<Option<String>, Problem> {
        let value = self.text(target, locator, structured_ok)?;
        if value.is_none()
            && self.required(target)
            && let Some(l) = locator
        {
            return Err(Problem::missing_field(target, &self.place(l)));
        }
        Ok(value)
    }

    /// A value failed its check: refuse if required, else drop and flag.
    fn reject_or_drop(&mut self, target: &str, reason: &str) -> Result<(), Problem> {
        if self.required(target) {
            return Err(Problem::invalid_field(target, reason));
        }
        self.flags.push(Flag {
            kind: FlagKind::MalformedHeader.into(),
            reason: format!("{target} dropped: {reason}"),
        });
        Ok(())
    }

    /// A one-line value of at most `max` characters, or dropped/refused.
    fn short(&mut self, target: &str, locator: Option<&Locator>) -> Result<String, Problem> {
        let Some(value) = self.get(target, locator, false)? else {
            return Ok(String::new());
        };
        let line = one_line(&value);
        if line.chars().count() > MAX_SHORT {
            self.reject_or_drop(target, &format!("longer than {MAX_SHORT} characters"))?;
            return Ok(String::new());
        }
        Ok(line)
    }
}

/// Applies `form`'s mapping to `payload`.
pub fn map(form: &FormConfig, payload: &Payload) -> Result<Mapped, Problem> {
    let mut r = Reader {
        form,
        payload,
        flags: Vec::new(),
    };
    let mut claims = IdentityClaims::default();

    if let Some(email) = r.get("email", form.email.as_ref(), false)? {
        match identity::normalize_email(&email) {
            Ok(_) => claims.email = email.trim().to_owned(),
            Err(e) => r.reject_or_drop("email", &format!("not an e-mail address ({})", e.identity_reason()))?,
        }
    }
    if let Some(phone) = r.get("phone", form.phone.as_ref(), false)? {
        match identity::normalize_phone(&phone) {
            Ok(_) => claims.phone = phone.trim().to_owned(),
            Err(e) => r.reject_or_drop("phone", &format!("not a phone number ({})", e.identity_reason()))?,
        }
    }
    if let Some(account) = r.get("account_id", form.account_id.as_ref(), false)? {
        let issuer = form.account_issuer.clone().unwrap_or_default();
        match identity::normalize_account(&issuer, &account) {
            Ok(_) => {
                claims.account_id = account.trim().to_owned();
                claims.account_issuer = issuer;
            }
            Err(e) => r.reject_or_drop("account_id", &e.identity_reason())?,
        }
    }
    claims.email_level = form.level_of("email") as i32;
    claims.phone_level = form.level_of("phone") as i32;
    claims.account_level = form.level_of("account_id") as i32;
    claims.name = r.short("name", form.name.as_ref())?;
    if let Some(address) = &form.address {
        let mut postal = PostalAddress::default();
        let mut any_line = false;
        for (i, line) in address.lines.iter().enumerate() {
            let value = r.short(&format!("address.lines[{i}]"), Some(line))?;
            if !value.is_empty() {
                postal.lines.push(value);
                any_line = true;
            }
        }
        if !any_line
            && r.required("address.lines")
            && let Some(first) = address.lines.first()
        {
            return Err(Problem::missing_field("address.lines", &r.place(first)));
        }
        postal.postal_code = r.short("address.postal_code", address.postal_code.as_ref())?;
        postal.city = r.short("address.city", address.city.as_ref())?;
        postal.country = r.short("address.country", address.country.as_ref())?;
        if postal != PostalAddress::default() {
            claims.postal_address = Some(postal);
        }
    }

    let mut subject = one_line(&r.get("subject", form.subject.as_ref(), false)?.unwrap_or_default());
    if subject.chars().count() > MAX_SUBJECT {
        subject = subject.chars().take(MAX_SUBJECT).collect();
        r.flags.push(Flag {
            kind: FlagKind::Truncated.into(),
            reason: format!("subject cut to {MAX_SUBJECT} characters"),
        });
    }
    let body = r
        .get("description", form.description.as_ref(), false)?
        .map(|b| b.trim().to_owned())
        .unwrap_or_default();
    let submission_id = r.short("submission_id", form.submission_id.as_ref())?;

    let mut fields = HashMap::new();
    for (name, locator) in &form.keep {
        if let Some(value) = r.get(name, Some(locator), true)? {
            fields.insert(name.clone(), value);
        }
    }
    if body.is_empty() {
        r.flags.push(Flag {
            kind: FlagKind::EmptyBody.into(),
            reason: "the submission has no description".into(),
        });
    }
    Ok(Mapped {
        claims,
        subject,
        body,
        fields,
        submission_id,
        flags: r.flags,
    })
}

/// A JSON value as text: scalars as written, arrays of scalars joined by
/// ", "; structured values as compact JSON when allowed.
fn json_text(value: &Value, structured_ok: bool) -> Result<Option<String>, &'static str> {
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    match value {
        Value::Null => Ok(None),
        Value::Array(items) if items.iter().all(|i| scalar(i).is_some()) => {
            let parts: Vec<String> = items
                .iter()
                .filter_map(scalar)
                .filter(|s| !s.trim().is_empty())
                .collect();
            Ok((!parts.is_empty()).then(|| parts.join(", ")))
        }
        Value::Array(_) | Value::Object(_) if structured_ok => Ok(Some(value.to_string())),
        Value::Array(_) => Err("a list"),
        Value::Object(_) => Err("an object"),
        scalar_value => Ok(scalar(scalar_value)),
    }
}

/// Whitespace (newlines included) collapsed to single spaces, trimmed.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AddressMapping;
    use guichet_core::proto::v1::IdentityLevel;

    fn form() -> FormConfig {
        FormConfig {
            insecure_no_signature: true,
            email: Some(Locator::One("/usager/email".into())),
            phone: Some(Locator::Split {
                json: Some("/usager/tel".into()),
                field: Some("telephone".into()),
            }),
            name: Some(Locator::One("nom".into())),
            subject: Some(Locator::One("objet".into())),
            description: Some(Locator::One("/description".into())),
            address: Some(AddressMapping {
                lines: vec![Locator::One("/adresse/rue".into())],
                postal_code: Some(Locator::One("/adresse/cp".into())),
                ..AddressMapping::default()
            }),
            keep: [
                ("categorie".to_owned(), Locator::One("/categorie".into())),
                ("lieu".to_owned(), Locator::One("/lieu".into())),
            ]
            .into(),
            required: vec!["email".into(), "description".into()],
            ..FormConfig::default()
        }
    }

    fn json(v: serde_json::Value) -> Payload {
        Payload::Json(v)
    }

    #[test]
    fn identifiers_carry_the_level_the_form_configures_and_unlisted_ones_are_declared() {
        let form = FormConfig {
            account_id: Some(Locator::One("/fc/sub".into())),
            account_issuer: Some("franceconnect".into()),
            verified: vec!["email".into()],
            certified: vec!["account_id".into()],
            ..form()
        };
        let m = map(
            &form,
            &json(serde_json::json!({
                "usager": {"email": "a@b.fr", "tel": "0612345678"},
                "fc": {"sub": "abc123"},
                "description": "x",
            })),
        )
        .unwrap();
        assert_eq!(m.claims.account_level, IdentityLevel::Certified as i32);
        assert_eq!(m.claims.email_level, IdentityLevel::Verified as i32);
        assert_eq!(m.claims.phone_level, IdentityLevel::Declared as i32);
    }

    #[test]
    fn json_submission_maps_every_target() {
        let m = map(
            &form(),
            &json(serde_json::json!({
                "usager": {"email": " Jeanne@Example.fr ", "tel": "06 12 34 56 78"},
                "nom": "Jeanne\n Martin",
                "objet": "Nid de poule",
                "description": "Rue des Lilas, devant le 12.\n",
                "adresse": {"rue": "12 rue des Lilas", "cp": 69003},
                "categorie": ["voirie", "chaussée"],
                "lieu": {"lat": 45.7, "lon": 4.8},
            })),
        )
        .unwrap();
        assert_eq!(m.claims.email, "Jeanne@Example.fr");
        assert_eq!(m.claims.phone, "06 12 34 56 78");
        assert_eq!(m.claims.name, "Jeanne Martin");
        let address = m.claims.postal_address.unwrap();
        assert_eq!(address.lines, vec!["12 rue des Lilas"]);
        assert_eq!(address.postal_code, "69003");
        assert_eq!(m.subject, "Nid de poule");
        assert_eq!(m.body, "Rue des Lilas, devant le 12.");
        assert_eq!(m.fields["categorie"], "voirie, chaussée");
        assert_eq!(m.fields["lieu"], r#"{"lat":45.7,"lon":4.8}"#);
        assert!(m.flags.is_empty(), "{:?}", m.flags);
    }

    #[test]
    fn required_targets_are_checked() {
        let err = map(&form(), &json(serde_json::json!({"description": "x"}))).unwrap_err();
        assert_eq!((err.kind, err.field.as_deref()), ("missing-field", Some("email")));
        assert!(err.detail.contains("/usager/email"), "{}", err.detail);
        let err = map(
            &form(),
            &json(serde_json::json!({"usager": {"email": "pas-un-email"}, "description": "x"})),
        )
        .unwrap_err();
        assert_eq!((err.kind, err.field.as_deref()), ("invalid-field", Some("email")));
        let err = map(
            &form(),
            &json(serde_json::json!({"usager": {"email": {"a": 1}}, "description": "x"})),
        )
        .unwrap_err();
        assert_eq!(err.kind, "invalid-field");
    }

    #[test]
    fn optional_invalid_identifiers_are_dropped_and_flagged() {
        let m = map(
            &form(),
            &json(serde_json::json!({"usager": {"email": "a@b.fr", "tel": "12"}, "description": "x"})),
        )
        .unwrap();
        assert_eq!(m.claims.phone, "");
        assert_eq!(m.flags.len(), 1);
        assert_eq!(m.flags[0].kind, i32::from(FlagKind::MalformedHeader));
        assert!(!m.flags[0].reason.contains("12"), "no personal data in flags");
    }

    #[test]
    fn form_fields_use_field_names() {
        let fields = vec![
            ("usager/email".to_owned(), "a@b.fr".to_owned()),
            ("telephone".to_owned(), "+33612345678".to_owned()),
            ("description".to_owned(), "texte".to_owned()),
            ("categorie".to_owned(), "a".to_owned()),
            ("categorie".to_owned(), "b".to_owned()),
        ];
        let m = map(&form(), &Payload::Fields(fields)).unwrap();
        assert_eq!(m.claims.email, "a@b.fr");
        assert_eq!(m.claims.phone, "+33612345678");
        assert_eq!(m.body, "texte");
        assert_eq!(m.fields["categorie"], "a, b");
        let err = map(&form(), &Payload::Fields(vec![("description".into(), "x".into())])).unwrap_err();
        assert!(err.detail.contains("field usager/email"), "{}", err.detail);
    }
}
