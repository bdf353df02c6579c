//! Normalization of the identifiers that make one usager, shared by the
//! router (which resolves them) and the adapters (which look them up).
//!
//! E-mails are trimmed and lower-cased; phone numbers become E.164 with
//! France as the default region; verified account ids are kept as issued,
//! prefixed by their issuer. The KV key of an identifier is a keyed hash
//! ([`crate::privacy::Pseudonymizer::identity_key`]), so the identity
//! bucket never lists citizens' addresses, and cannot be matched against
//! a dictionary of them without the key.

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

/// The longest address accepted, in octets (RFC 5321 §4.5.3.1.3: a path
/// of 256 octets, angle brackets included).
const MAX_EMAIL: usize = 254;
/// The longest local part, in octets (RFC 5321 §4.5.3.1.1).
const MAX_LOCAL: usize = 64;
/// The longest domain name, in octets, and label (RFC 1035 §2.3.4).
const MAX_DOMAIN: usize = 253;
const MAX_LABEL: usize = 63;

/// Validates and normalizes an e-mail address as an RFC 5321 mailbox:
/// the one place where web, desk, mail and the router decide whether an
/// address may designate a person.
///
/// Accepted: `local@domain` with exactly one `@`; a dot-atom local part
/// (RFC 5321 atext, plus non-ASCII characters as RFC 6531 allows, e.g.
/// `élodie`) of at most 64 octets; a domain of at least two labels (a
/// citizen's address on a bare host name is a typo), each 1 to 63 letters,
/// digits or hyphens, not starting or ending with a hyphen, at most 253
/// octets, whose last label is not all digits; the whole at most 254
/// octets. Internationalized domains go through IDNA (UTS 46, STD3 rules)
/// and are kept in their ASCII (punycode) form, so `mairie-évry.fr` and
/// `xn--mairie-vry-h7a.fr` are one domain.
///
/// Refused on purpose, although RFC 5321 allows them: quoted local parts
/// (`"a@b"@example.fr`: they make a second `@` legal and are in practice
/// always a mistake in a form) and address literals (`a@[192.0.2.1]`).
///
/// The value is trimmed, stripped of a `mailto:` prefix and lower-cased
/// (local parts are case-insensitive at every real provider, and one
/// person must not become two over a capital letter). Errors name the
/// field `email` and say what is wrong without echoing the address.
pub fn normalize_email(raw: &str) -> Result<Identifier, Error> {
    let bad = |reason: &str| Error::Identity {
        field: "email",
        reason: reason.to_owned(),
    };
    let trimmed = raw.trim();
    let trimmed = trimmed
        .strip_prefix("mailto:")
        .or_else(|| trimmed.strip_prefix("MAILTO:"))
        .unwrap_or(trimmed);
    // Bounded before any further work (IDNA included): no valid address
    // is longer, whatever its Unicode form.
    if trimmed.len() > 4 * MAX_EMAIL {
        return Err(bad("longer than 254 characters"));
    }
    let value = trimmed.to_lowercase();
    if value.is_empty() {
        return Err(bad("empty"));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("contains spaces or control characters"));
    }
    let (local, domain) = match value.split('@').count() {
        1 => return Err(bad("no @ in the address")),
        2 => value.split_once('@').ok_or_else(|| bad("no @ in the address"))?,
        _ => return Err(bad("more than one @ in the address")),
    };
    check_local_part(local).map_err(bad)?;
    let domain = ascii_domain(domain).map_err(bad)?;
    let value = format!("{local}@{domain}");
    if value.len() > MAX_EMAIL {
        return Err(bad("longer than 254 characters"));
    }
    Ok(Identifier {
        kind: IdentifierKind::Email,
        value,
    })
}

/// A dot-atom (RFC 5321 §4.1.2, with RFC 6531's non-ASCII characters).
fn check_local_part(local: &str) -> Result<(), &'static str> {
    if local.is_empty() {
        return Err("nothing before the @");
    }
    if local.len() > MAX_LOCAL {
        return Err("the part before the @ is longer than 64 characters");
    }
    if local.starts_with('"') {
        return Err("quoted local parts (\"...\"@) are not accepted");
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err("the part before the @ starts or ends with a dot, or has two dots in a row");
    }
    let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c) || !c.is_ascii();
    if !local.chars().all(atext) {
        return Err("the part before the @ has characters not allowed in an address");
    }
    Ok(())
}

/// The domain in ASCII (IDNA applied), its labels checked.
fn ascii_domain(domain: &str) -> Result<String, &'static str> {
    if domain.is_empty() {
        return Err("nothing after the @");
    }
    if domain.starts_with('[') {
        return Err("address literals (@[...]) are not accepted");
    }
    // Checked before IDNA, whose errors do not say which rule failed.
    if domain.split('.').any(str::is_empty) {
        return Err("the domain has an empty label (leading, trailing or doubled dot)");
    }
    let ascii = idna::domain_to_ascii_cow(domain.as_bytes(), idna::AsciiDenyList::STD3)
        .map_err(|_| "the domain is not a valid (internationalized) domain name")?;
    let ascii = ascii.into_owned();
    if ascii.len() > MAX_DOMAIN {
        return Err("the domain is longer than 253 characters");
    }
    let labels: Vec<&str> = ascii.split('.').collect();
    if labels.len() < 2 {
        return Err("the domain is not a full domain name (no dot)");
    }
    for label in &labels {
        if label.is_empty() || label.len() > MAX_LABEL {
            return Err("a label of the domain is empty or longer than 63 characters");
        }
        if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err("the domain has characters other than letters, digits, hyphens and dots");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label of the domain starts or ends with a hyphen");
        }
    }
    if labels.last().is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit())) {
        return Err("the domain ends with a number (IP addresses are not accepted)");
    }
    Ok(ascii)
}

/// Loads the phone-number metadata now (the parser reads it at its first
/// use: over a second in a debug build, tens of milliseconds in release),
/// so that an adapter's first contact does not pay for it. Blocking: call
/// it from `spawn_blocking` at start.
pub fn warm_up() {
    let _ = normalize_phone("01 23 45 67 89");
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
        assert_eq!(a, normalize_email("mailto:jeanne.martin@example.fr").unwrap());
    }

    #[test]
    fn valid_mailboxes() {
        for (raw, normalized) in [
            ("a@b.fr", "a@b.fr"),
            ("jeanne.martin+mairie@example.fr", "jeanne.martin+mairie@example.fr"),
            ("o'brien@example.ie", "o'brien@example.ie"),
            ("x!#$%&*/=?^_`{|}~-@sub.example.fr", "x!#$%&*/=?^_`{|}~-@sub.example.fr"),
            ("a@mairie-77.fr", "a@mairie-77.fr"),
            ("a@123.example.fr", "a@123.example.fr"),
            // IDN: the domain in punycode, the local part as written (RFC 6531).
            ("Élodie@Mairie-Évry.fr", "élodie@xn--mairie-vry-h7a.fr"),
            ("élodie@xn--mairie-vry-h7a.fr", "élodie@xn--mairie-vry-h7a.fr"),
            ("contact@例え.jp", "contact@xn--r8jz45g.jp"),
        ] {
            assert_eq!(
                normalize_email(raw).map(|id| id.value).ok().as_deref(),
                Some(normalized),
                "{raw}"
            );
        }
        let local = "l".repeat(64);
        let long = format!("{local}@{}.{}.{}.fr", "a".repeat(63), "b".repeat(63), "c".repeat(58));
        assert_eq!(long.len(), 254);
        assert!(normalize_email(&long).is_ok());
    }

    #[test]
    fn invalid_mailboxes_say_why() {
        let local = "l".repeat(64);
        let too_long = format!("{local}@{}.{}.{}.fr", "a".repeat(63), "b".repeat(63), "c".repeat(59));
        let long_local = format!("{}@example.fr", "l".repeat(65));
        let long_label = format!("a@{}.fr", "d".repeat(64));
        for (raw, why) in [
            ("", "empty"),
            ("nobody", "no @"),
            ("jeanne@martin@example.fr", "more than one @"),
            ("a@@example.fr", "more than one @"),
            ("@example.fr", "nothing before"),
            ("a@", "nothing after"),
            ("a@b", "no dot"),
            ("a@b..c", "empty label"),
            ("a@example.fr.", "empty label"),
            ("a@.example.fr", "empty label"),
            ("a b@example.fr", "spaces"),
            ("a@exa mple.fr", "spaces"),
            ("a\tb@example.fr", "spaces"),
            (".a@example.fr", "dot"),
            ("a.@example.fr", "dot"),
            ("a..b@example.fr", "dot"),
            ("\"a@b\"@example.fr", "more than one @"),
            ("\"ab\"@example.fr", "quoted"),
            ("a(b)@example.fr", "not allowed"),
            ("a,b@example.fr", "not allowed"),
            ("<a@example.fr>", "not allowed"),
            ("a@[192.0.2.1]", "literals"),
            ("a@192.0.2.1", "ends with a number"),
            ("a@-mairie.fr", "hyphen"),
            ("a@mairie-.fr", "hyphen"),
            ("a@mai_rie.fr", "domain"),
            ("a@exa!mple.fr", "domain"),
            (long_local.as_str(), "longer than 64"),
            (long_label.as_str(), "63"),
            (too_long.as_str(), "254"),
        ] {
            match normalize_email(raw) {
                Ok(id) => panic!("{raw:?} accepted as {:?}", id.value),
                Err(Error::Identity { field, reason }) => {
                    assert_eq!(field, "email");
                    assert!(reason.contains(why), "{raw:?}: {reason}");
                }
                Err(other) => panic!("{raw:?}: {other}"),
            }
        }
        // Huge input is refused before any work.
        assert!(normalize_email(&"a".repeat(100_000)).is_err());
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
        assert_ne!(a, normalize_account("portail", "abc").unwrap());
    }
}
