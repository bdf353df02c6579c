//! Normalization of the identifiers that make one usager, shared by the
//! router (which resolves them) and the adapters (which look them up).
//!
//! E-mails are trimmed and lower-cased; phone numbers become E.164 with
//! France as the default region; verified account ids are kept as issued,
//! prefixed by their issuer. The KV key of an identifier is a hash, so the
//! identity bucket never lists citizens' addresses in clear.

use sha2::{Digest, Sha256};

use crate::Error;

/// The kinds of identifier, strongest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IdentifierKind {
    /// A verified account (FranceConnect `sub`, a portal account).
    Account,
    Email,
    Phone,
}

impl IdentifierKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentifierKind::Account => "account",
            IdentifierKind::Email => "email",
            IdentifierKind::Phone => "phone",
        }
    }
}

/// A normalized identifier.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identifier {
    pub kind: IdentifierKind,
    pub value: String,
}

impl Identifier {
    /// The identity-bucket key: `<kind>.<sha256 hex>`.
    pub fn key(&self) -> String {
        let digest = Sha256::digest(format!("{}:{}", self.kind.as_str(), self.value).as_bytes());
        format!("{}.{}", self.kind.as_str(), hex::encode(digest))
    }
}

/// Lower-cases and trims an e-mail address and checks its shape.
pub fn normalize_email(raw: &str) -> Result<Identifier, Error> {
    let value = raw.trim().trim_start_matches("mailto:").to_lowercase();
    let bad = |reason: &str| Error::Identity {
        field: "email",
        reason: reason.to_owned(),
    };
    if value.len() > 254 {
        return Err(bad("longer than 254 characters"));
    }
    let (local, domain) = value.rsplit_once('@').ok_or_else(|| bad("no @ in the address"))?;
    if local.is_empty() || domain.is_empty() {
        return Err(bad("expected local-part@domain"));
    }
    if value
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';'))
    {
        return Err(bad("contains spaces or characters not allowed in an address"));
    }
    if !domain.contains('.') || domain.starts_with('.') || domain.ends_with('.') || domain.contains("..") {
        return Err(bad("the domain is not a full domain name"));
    }
    Ok(Identifier {
        kind: IdentifierKind::Email,
        value,
    })
}

/// Parses a phone number (France by default) into E.164.
pub fn normalize_phone(raw: &str) -> Result<Identifier, Error> {
    let bad = |reason: String| Error::Identity { field: "phone", reason };
    if raw.len() > 40 {
        return Err(bad("longer than 40 characters".into()));
    }
    let number = phonenumber::parse(Some(phonenumber::country::Id::FR), raw.trim())
        .map_err(|e| bad(format!("not a phone number ({e})")))?;
    if !phonenumber::is_valid(&number) {
        return Err(bad("not a valid number for its country".into()));
    }
    Ok(Identifier {
        kind: IdentifierKind::Phone,
        value: number.format().mode(phonenumber::Mode::E164).to_string(),
    })
}

/// A verified account id, scoped by its issuer.
pub fn normalize_account(issuer: &str, sub: &str) -> Result<Identifier, Error> {
    let sub = sub.trim();
    if sub.is_empty() || sub.len() > 256 {
        return Err(Error::Identity {
            field: "account_id",
            reason: "must be 1 to 256 characters".into(),
        });
    }
    let issuer = issuer.trim().to_lowercase();
    let issuer = if issuer.is_empty() {
        "default".to_owned()
    } else {
        issuer
    };
    Ok(Identifier {
        kind: IdentifierKind::Account,
        value: format!("{issuer}:{sub}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_and_lowercased() {
        let a = normalize_email("  Jeanne.Martin@Example.FR ").unwrap();
        assert_eq!(a.value, "jeanne.martin@example.fr");
        assert_eq!(a.key(), normalize_email("jeanne.martin@example.fr").unwrap().key());
        assert!(a.key().starts_with("email."));
        assert!(!a.key().contains("jeanne"));
        for bad in ["", "nobody", "a@b", "a b@example.fr", "@example.fr", "a@example..fr"] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn french_numbers_become_e164() {
        for raw in ["06 12 34 56 78", "06.12.34.56.78", "+33 6 12 34 56 78", "0033612345678"] {
            assert_eq!(normalize_phone(raw).unwrap().value, "+33612345678", "{raw}");
        }
        assert_eq!(normalize_phone("+32 2 555 12 12").unwrap().value, "+3225551212");
        assert!(normalize_phone("12").is_err());
        assert!(normalize_phone("not a number").is_err());
    }

    #[test]
    fn accounts_are_scoped_by_issuer() {
        let a = normalize_account("FranceConnect", "abc").unwrap();
        assert_eq!(a.value, "franceconnect:abc");
        assert_ne!(a.key(), normalize_account("portail", "abc").unwrap().key());
    }
}
