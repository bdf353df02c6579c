//! Requests and follow-ups, in the `guichet_requests` bucket.
//!
//! Layout (the router writes it):
//! - `ref.<reference>` → [`RequestRecord`] (JSON): service, usager,
//!   typology, due date, status, the contacts and message ids it holds;
//! - `msgid.<sha256 of a Message-ID>` → reference: so that a reply whose
//!   `In-Reply-To`/`References` cite a message of a request joins it;
//! - `contact.<contact id>` → [`RoutedIndex`] (JSON): where the contact's
//!   `Routed` is in ROUTED, for `guichet explain` and to recognize a
//!   contact already routed when it comes back after the duplicate window;
//! - `alias.<reference>` → reference: the reference a follow-up contact
//!   was given at intake (the one the platform or the counter showed the
//!   usager) stands for the request it joined, so that citing either
//!   finds the request;
//! - `copy.<sha256 of Message-ID and content>` → [`CopyMark`] (JSON): the
//!   first contact of an e-mail, so that the same message arriving again
//!   (through another watched mailbox, in Cc, or appended twice) joins its
//!   request as a copy instead of opening a second one.
//!
//! Keys written once (a request, an alias, a Message-ID, a first copy) go
//! through core's [`claim`]: on a replicated bucket a lost race can be
//! refused with `wrong last sequence` instead of "already exists", and
//! `claim` still tells whose the key is.

use std::time::Duration;

use async_nats::jetstream::kv::{self, Operation};
use bytes::Bytes;
use guichet_core::{
    Bus,
    bus::claim::{Change, Claim, claim, revise},
    ids::parse_reference,
    proto::{
        self,
        v1::{Contact, contact::Details},
    },
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::RouterError;

/// One request: the record lives in the core, because the lifecycle
/// service (`guichet-requests`) writes it too.
pub use guichet_core::request::{RequestRecord, request_key};

/// Where a routed contact is: the layout lives in the core, because the
/// desk reads it too.
pub use guichet_core::bus::routing::{RoutedIndex, contact_key};

pub fn msgid_key(message_id: &str) -> String {
    format!("msgid.{}", msgid_hash(message_id))
}

/// Message-IDs compare without angle brackets and case-insensitively on
/// the domain; the whole id is lower-cased, which is good enough here.
fn msgid_hash(message_id: &str) -> String {
    let id = message_id
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_lowercase();
    hex::encode(Sha256::digest(id.as_bytes()))
}

/// How a contact was recognized as a follow-up.
#[derive(Debug, Clone, PartialEq)]
pub struct FollowUp {
    pub request: RequestRecord,
    /// For the explanation: "reference 2026-… in the subject", …
    pub how: String,
}

/// References (`YYYY-XXXX-XXXX`, separators `-`, space or none) found in
/// `text`, canonical, in order, without repeats, at most `max`.
pub fn scan_references(text: &str, max: usize) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut found: Vec<String> = Vec::new();
    let mut i = 0;
    while i + 12 <= bytes.len() && found.len() < max {
        let at_boundary = i == 0 || !bytes[i - 1].is_ascii_alphanumeric();
        if at_boundary
            && bytes[i] == b'2'
            && bytes[i..i + 4].iter().all(u8::is_ascii_digit)
            && let Some((candidate, len)) = candidate_at(&bytes[i..])
            && let Some(reference) = parse_reference(&candidate)
        {
            if !found.contains(&reference) {
                found.push(reference);
            }
            i += len;
            continue;
        }
        i += 1;
    }
    found
}

/// `YYYY`, optional separator, 4 symbols, optional separator, 4 symbols,
/// then not a letter or digit.
fn candidate_at(b: &[u8]) -> Option<(String, usize)> {
    let mut out = String::with_capacity(14);
    let mut pos = 4;
    out.push_str(std::str::from_utf8(&b[..4]).ok()?);
    for _ in 0..2 {
        if matches!(b.get(pos), Some(b'-' | b' ')) {
            pos += 1;
        }
        out.push('-');
        for _ in 0..4 {
            let c = *b.get(pos)?;
            if !c.is_ascii_alphanumeric() {
                return None;
            }
            out.push(c as char);
            pos += 1;
        }
    }
    if b.get(pos).is_some_and(u8::is_ascii_alphanumeric) {
        return None;
    }
    Some((out, pos))
}

pub fn alias_key(reference: &str) -> String {
    format!("alias.{reference}")
}

/// The request `reference` stands for, directly or through the alias a
/// follow-up's own reference became.
async fn read_request(kv: &kv::Store, reference: &str) -> Result<Option<(RequestRecord, u64)>, RouterError> {
    if let Some(found) = read_request_key(kv, reference).await? {
        return Ok(Some(found));
    }
    let target = kv
        .get(alias_key(reference))
        .await
        .map_err(|e| RouterError::requests_store("reading a reference alias", e))?;
    match target {
        Some(target) => read_request_key(kv, &String::from_utf8_lossy(&target)).await,
        None => Ok(None),
    }
}

async fn read_request_key(kv: &kv::Store, reference: &str) -> Result<Option<(RequestRecord, u64)>, RouterError> {
    let key = request_key(reference);
    let entry = kv
        .entry(key.as_str())
        .await
        .map_err(|e| RouterError::requests_store("reading a request", e))?;
    match entry {
        Some(entry) if entry.operation == Operation::Put => {
            let record = serde_json::from_slice(&entry.value)
                .map_err(|e| RouterError::Requests(format!("{key} is not a request record ({e})")))?;
            Ok(Some((record, entry.revision)))
        }
        _ => Ok(None),
    }
}

/// The request a reference stands for, if any.
pub async fn request(bus: &Bus, reference: &str) -> Result<Option<RequestRecord>, RouterError> {
    Ok(read_request(&bus.stores().requests, reference).await?.map(|(r, _)| r))
}

/// The existing request this contact continues, if any: a known
/// reference in the subject or the body, else a known Message-ID in
/// `In-Reply-To` or `References` (newest first).
pub async fn find_follow_up(bus: &Bus, contact: &Contact) -> Result<Option<FollowUp>, RouterError> {
    let kv = &bus.stores().requests;
    for (field, text) in [("subject", &contact.subject), ("body", &contact.body)] {
        for reference in scan_references(text, 4) {
            if reference == contact.reference {
                continue;
            }
            if let Some((request, _)) = read_request(kv, &reference).await? {
                return Ok(Some(FollowUp {
                    request,
                    how: format!("reference {reference} in the {field}"),
                }));
            }
        }
    }
    if let Some(Details::Email(email)) = &contact.details {
        let cited = std::iter::once(("In-Reply-To", &email.in_reply_to))
            .chain(email.references.iter().rev().take(10).map(|r| ("References", r)))
            .filter(|(_, id)| !id.trim().is_empty() && **id != email.message_id);
        for (header, message_id) in cited {
            let Some(reference) = kv
                .get(msgid_key(message_id))
                .await
                .map_err(|e| RouterError::requests_store("reading the Message-ID index", e))?
            else {
                continue;
            };
            let reference = String::from_utf8_lossy(&reference).into_owned();
            if let Some((request, _)) = read_request(kv, &reference).await? {
                return Ok(Some(FollowUp {
                    request,
                    how: format!("{header} cites a message of request {reference}"),
                }));
            }
        }
    }
    Ok(None)
}

/// Opens a new request under `record.reference`. A redelivered contact
/// finds its own request (then `true`: it was seen before); a (40-bit,
/// unlikely) collision with another contact's request moves to a reference
/// derived from the contact id.
pub async fn open(
    bus: &Bus,
    contact: &Contact,
    mut record: RequestRecord,
) -> Result<(RequestRecord, bool), RouterError> {
    let kv = &bus.stores().requests;
    for attempt in 0..2 {
        let value = Bytes::from(
            serde_json::to_vec(&record).map_err(|e| RouterError::Requests(format!("encoding a request: {e}")))?,
        );
        let key = request_key(&record.reference);
        let held = match claim(kv, &key, value)
            .await
            .map_err(|e| RouterError::requests_store("opening a request", e))?
        {
            Claim::Won(_) => return Ok((record, false)),
            Claim::Held { value, .. } => value,
        };
        let existing: RequestRecord = serde_json::from_slice(&held)
            .map_err(|e| RouterError::Requests(format!("{key} is not a request record ({e})")))?;
        if existing.opened_by == contact.id {
            return Ok((existing, true));
        }
        if attempt == 0 {
            let fresh = derived_reference(&record.reference, &contact.id);
            tracing::warn!(
                contact_id = %contact.id,
                taken = %record.reference,
                reference = %fresh,
                "request reference already taken by another contact; using a derived one"
            );
            metrics::counter!("guichet_router_reference_collisions_total").increment(1);
            record.reference = fresh;
        }
    }
    Err(RouterError::Requests(format!(
        "references {} and its derived form are both taken by other contacts",
        contact.reference
    )))
}

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A reference of the same year derived from the contact id: stable
/// across redeliveries.
pub fn derived_reference(reference: &str, contact_id: &str) -> String {
    let year = reference
        .get(..4)
        .filter(|y| y.bytes().all(|b| b.is_ascii_digit()))
        .unwrap_or("2000");
    let digest = Sha256::digest(contact_id.as_bytes());
    let sym: String = digest
        .iter()
        .take(8)
        .map(|b| CROCKFORD[usize::from(b % 32)] as char)
        .collect();
    format!("{year}-{}-{}", &sym[..4], &sym[4..])
}

/// Adds the contact (and its Message-ID) to an existing request; `true`
/// when the contact was already in it (seen before).
pub async fn join(bus: &Bus, reference: &str, contact: &Contact) -> Result<(RequestRecord, bool), RouterError> {
    let kv = &bus.stores().requests;
    let message_id = own_message_id(contact).map(msgid_hash);
    let key = request_key(reference);
    let joined = revise::<_, RouterError>(kv, &key, None, |value| {
        let mut record: RequestRecord = serde_json::from_slice(value)
            .map_err(|e| RouterError::Requests(format!("{key} is not a request record ({e})")))?;
        let mut changed = false;
        let member = record.contacts.contains(&contact.id);
        if !member {
            record.contacts.push(contact.id.clone());
            changed = true;
        }
        if let Some(hash) = &message_id
            && !record.message_ids.contains(hash)
        {
            record.message_ids.push(hash.clone());
            changed = true;
        }
        if !changed {
            return Ok(Change::Keep((record, member)));
        }
        let value = Bytes::from(
            serde_json::to_vec(&record).map_err(|e| RouterError::Requests(format!("encoding a request: {e}")))?,
        );
        Ok(Change::Write(value, (record, member)))
    })
    .await?;
    joined.ok_or_else(|| RouterError::Requests(format!("request {reference} vanished while joining it")))
}

/// Makes `alias` (a follow-up contact's own reference) stand for the
/// request `reference`. Created once: the first request an alias was
/// given to keeps it.
pub async fn add_alias(bus: &Bus, alias: &str, reference: &str) -> Result<(), RouterError> {
    if alias == reference || alias.is_empty() {
        return Ok(());
    }
    create_once(bus, alias_key(alias), reference, "recording a reference alias").await
}

/// Writes `key` → `reference` unless the key exists: the first writer
/// keeps it (a redelivery finds its own value there).
async fn create_once(bus: &Bus, key: String, reference: &str, what: &str) -> Result<(), RouterError> {
    claim(&bus.stores().requests, &key, Bytes::from(reference.to_owned()))
        .await
        .map_err(|e| RouterError::requests_store(what, e))?;
    Ok(())
}

/// The first contact of an e-mail, under [`copy_key`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CopyMark {
    pub contact_id: String,
    /// When the first copy was received (RFC 3339).
    pub received_at: String,
}

/// The key under which copies of this e-mail meet: its Message-ID **and**
/// a digest of what it says (sender, subject, text, files), since
/// different messages do share a Message-ID in the wild. The mailbox it
/// came through is left out: that is what differs between copies.
pub fn copy_key(contact: &Contact) -> Option<String> {
    let message_id = own_message_id(contact)?;
    let mut digest = Sha256::new();
    let sender = contact.claims.as_ref().map(|c| c.email.as_str()).unwrap_or_default();
    for part in [msgid_hash(message_id).as_str(), sender, &contact.subject, &contact.body] {
        digest.update((part.len() as u64).to_be_bytes());
        digest.update(part.as_bytes());
    }
    let mut files: Vec<&str> = contact.attachments.iter().map(|a| a.sha256.as_str()).collect();
    files.sort_unstable();
    for file in files {
        digest.update(file.as_bytes());
    }
    Some(format!("copy.{}", hex::encode(digest.finalize())))
}

/// If `contact` is a copy of an e-mail received less than `window`
/// before it, the id of the first copy's contact. Otherwise this contact
/// becomes the first copy (a redelivery finds itself: `None`).
pub async fn first_copy(bus: &Bus, contact: &Contact, window: Duration) -> Result<Option<String>, RouterError> {
    let Some(key) = copy_key(contact) else {
        return Ok(None);
    };
    let received = contact.received_at.as_ref().and_then(proto::to_datetime);
    let mark = CopyMark {
        contact_id: contact.id.clone(),
        received_at: received
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_default(),
    };
    let value = Bytes::from(
        serde_json::to_vec(&mark).map_err(|e| RouterError::Requests(format!("encoding a copy mark: {e}")))?,
    );
    let kv = &bus.stores().requests;
    for _ in 0..4 {
        let (held, revision) = match claim(kv, &key, value.clone())
            .await
            .map_err(|e| RouterError::requests_store("marking an e-mail's first copy", e))?
        {
            Claim::Won(_) => return Ok(None),
            Claim::Held { value, revision } => (value, revision),
        };
        // Decided again on the leader's value if another copy's update
        // goes first; a mark deleted meanwhile is claimed again.
        let decided = revise::<_, RouterError>(kv, &key, Some((held, revision)), |held| {
            let first: CopyMark = serde_json::from_slice(held)
                .map_err(|e| RouterError::Requests(format!("{key} is not a copy mark ({e})")))?;
            if first.contact_id == contact.id {
                return Ok(Change::Keep(None));
            }
            let first_at = chrono::DateTime::parse_from_rfc3339(&first.received_at).ok();
            let within = match (first_at, received) {
                (Some(first_at), Some(received)) => {
                    let window = chrono::Duration::from_std(window).unwrap_or(chrono::TimeDelta::MAX);
                    received.signed_duration_since(first_at) <= window
                }
                _ => true,
            };
            if within {
                return Ok(Change::Keep(Some(first.contact_id)));
            }
            // Older than the window: this one is a new message, and the
            // first copy of what may come next.
            Ok(Change::Write(value.clone(), None))
        })
        .await?;
        if let Some(decided) = decided {
            return Ok(decided);
        }
    }
    Err(RouterError::requests_store(
        "marking an e-mail's first copy",
        "too many concurrent updates; retry",
    ))
}

/// The contact's own Message-ID, if it is an e-mail with one.
pub fn own_message_id(contact: &Contact) -> Option<&str> {
    match &contact.details {
        Some(Details::Email(email)) if !email.message_id.trim().is_empty() => Some(email.message_id.as_str()),
        _ => None,
    }
}

/// Records that `message_id` belongs to `reference` (replies citing it
/// will join the request). Created once: the first message with an id
/// keeps it, so that a forged Message-ID cannot re-point the replies of
/// someone else's request to the forger's.
pub async fn index_message_id(bus: &Bus, message_id: &str, reference: &str) -> Result<(), RouterError> {
    create_once(bus, msgid_key(message_id), reference, "indexing a Message-ID").await
}

/// Where a contact's `Routed` is, if it was routed.
pub async fn routed_index(bus: &Bus, contact_id: &str) -> Result<Option<RoutedIndex>, RouterError> {
    Ok(bus.routed_index(contact_id).await?)
}

pub async fn put_routed_index(bus: &Bus, contact_id: &str, index: &RoutedIndex) -> Result<(), RouterError> {
    Ok(bus.put_routed_index(contact_id, index).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_found_in_text_in_any_spelling() {
        let text = "Re: votre demande 2026-7K3F-9QXM (rappel: 2026 7k3f 9qxm) et 20267K3FABCD.";
        assert_eq!(scan_references(text, 4), vec!["2026-7K3F-9QXM", "2026-7K3F-ABCD"]);
        assert!(scan_references("tel 0612345678 ou 2026-7K3F-9QXMZ ou x2026-7K3F-9QXM", 4).is_empty());
        assert!(scan_references("2026-7K3F-9QX", 4).is_empty());
        assert_eq!(scan_references("2026-7K3F-9QXM", 4), vec!["2026-7K3F-9QXM"]);
        let many = "2026-AAAA-AAAA 2026-BBBB-BBBB 2026-CCCC-CCCC";
        assert_eq!(scan_references(many, 2).len(), 2);
    }

    #[test]
    fn derived_references_are_stable_and_well_formed() {
        let a = derived_reference("2026-7K3F-9QXM", "01JABCDEF");
        assert_eq!(a, derived_reference("2026-7K3F-9QXM", "01JABCDEF"));
        assert_ne!(a, derived_reference("2026-7K3F-9QXM", "01JABCDEG"));
        assert_eq!(parse_reference(&a).as_deref(), Some(a.as_str()));
        assert!(a.starts_with("2026-"));
    }

    #[test]
    fn message_ids_hash_without_brackets() {
        assert_eq!(msgid_key("<Abc@Example.fr>"), msgid_key("abc@example.fr"));
    }
}
