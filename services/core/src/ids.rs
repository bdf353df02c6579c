//! Identifiers: contact ids, usager ids and request references.
//!
//! Contact ids are ULIDs: unique without coordination, sortable by time.
//! Request references are what a usager reads on an acknowledgement or
//! spells over the phone, so they are short and built from Crockford's
//! base-32 alphabet, which has no I, L, O or U: `2026-7K3F-9QXM`. Parsing
//! forgives case, spaces and the usual confusions (O→0, I/L→1).

use chrono::{DateTime, Datelike, Utc};
use rand::Rng;

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A new contact id.
pub fn contact_id() -> String {
    ulid::Ulid::new().to_string()
}

/// A new usager id: `U` followed by a ULID.
pub fn usager_id() -> String {
    format!("U{}", ulid::Ulid::new())
}

/// A new request reference for a request received at `at`:
/// year, then eight random base-32 symbols in two groups (40 bits).
pub fn reference(at: DateTime<Utc>) -> String {
    let mut rng = rand::rng();
    let mut sym = || CROCKFORD[rng.random_range(0..32)] as char;
    let a: String = (0..4).map(|_| sym()).collect();
    let b: String = (0..4).map(|_| sym()).collect();
    format!("{}-{a}-{b}", at.year())
}

/// Reads a reference as a usager or an agent may type or say it
/// ("2026 7k3f 9qxm", "2026-7K3F-9QXM") and returns it in canonical form.
pub fn parse_reference(input: &str) -> Option<String> {
    let cleaned: String = input.chars().filter(|c| !matches!(c, '-' | ' ' | '.' | '_')).collect();
    if cleaned.len() != 12 || !cleaned.is_ascii() {
        return None;
    }
    let (year, rest) = cleaned.split_at(4);
    let year: u16 = year.parse().ok()?;
    if !(2000..=2999).contains(&year) {
        return None;
    }
    let mut out = String::with_capacity(8);
    for c in rest.chars() {
        let c = match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            c => c,
        };
        if !CROCKFORD.contains(&(c as u8)) {
            return None;
        }
        out.push(c);
    }
    Some(format!("{year}-{}-{}", &out[..4], &out[4..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_round_trip_and_forgive_confusions() {
        let at = DateTime::parse_from_rfc3339("2026-03-02T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        for _ in 0..200 {
            let r = reference(at);
            assert!(r.starts_with("2026-"), "{r}");
            assert_eq!(r.len(), 14);
            assert_eq!(parse_reference(&r).as_deref(), Some(r.as_str()));
            assert_eq!(parse_reference(&r.to_lowercase()).as_deref(), Some(r.as_str()));
        }
        assert_eq!(parse_reference("2026 7k3f 9qxo").as_deref(), Some("2026-7K3F-9QX0"));
        assert_eq!(parse_reference("2026-IL3F-9QXM").as_deref(), Some("2026-113F-9QXM"));
        assert_eq!(parse_reference("2026-7K3F-9QX"), None);
        assert_eq!(parse_reference("2026-7K3F-9QXU"), None, "U is not a symbol");
        assert_eq!(parse_reference("1999-7K3F-9QXM"), None);
    }

    #[test]
    fn ids_are_distinct_and_shaped() {
        let a = contact_id();
        assert_eq!(a.len(), 26);
        assert_ne!(a, contact_id());
        assert!(usager_id().starts_with('U'));
    }
}
