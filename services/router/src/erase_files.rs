//! The files part of `guichet usager forget`: the attachments and raw
//! e-mails of a usager's contacts leave the object store, unless a contact
//! that stays (someone else's, or one not yet routed) still points at them.
//!
//! Why a scan of the remaining references rather than a reference count or
//! a per-usager namespace: objects are content-addressed and stored by the
//! adapters before the router knows whose they are (so there is no usager
//! to file them under), and a count kept beside the streams drifts as soon
//! as a publish fails after its increment or a message expires by age. The
//! streams themselves are the exact list of who points at what; forget is
//! a rare operator command, so reading INTAKE, ROUTED and DEADLETTER once
//! per erasure is a cost worth that exactness.

use std::collections::BTreeSet;

use async_nats::jetstream::object_store;
use guichet_core::{
    Bus,
    bus::subjects,
    proto::v1::{Contact, DeadLetter, contact::Details},
};
use prost::Message;

use crate::{RouterError, streams::scan_messages};

/// What leaving the files did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FilesErased {
    /// Objects deleted from the object store (or already gone).
    pub deleted: usize,
    /// Objects kept because a contact that stays points at them too.
    pub kept_shared: usize,
}

/// The object-store keys a contact points at: its attachments and, for an
/// e-mail, the raw message.
pub fn files_of(contact: &Contact) -> impl Iterator<Item = &str> {
    let raw = match &contact.details {
        Some(Details::Email(email)) => email.raw_message.as_ref(),
        _ => None,
    };
    contact
        .attachments
        .iter()
        .chain(raw)
        .map(|a| a.key.as_str())
        .filter(|key| !key.is_empty())
}

/// Deletes the objects `candidates` (the files of the usager's contacts)
/// that no message outside theirs points at.
///
/// Theirs are: in ROUTED, the messages on the subjects of `usager_ids`; in
/// INTAKE, the messages on `intake_subjects`; in DEADLETTER, the letters
/// of the contacts `contact_ids` — exactly what forget purges. Any other
/// message in those streams that carries a candidate's key (looked for in
/// its bytes, whatever its type) keeps that object.
///
/// Runs before the purges: interrupted, forget is run again and finds the
/// same messages and the same files (a file already deleted is not an
/// error); run after them, an interruption would leave files that no rerun
/// could find.
pub async fn erase_files(
    bus: &Bus,
    candidates: BTreeSet<String>,
    usager_ids: &[String],
    intake_subjects: &BTreeSet<String>,
    contact_ids: &BTreeSet<String>,
) -> Result<FilesErased, RouterError> {
    if candidates.is_empty() {
        return Ok(FilesErased::default());
    }
    let mut referenced = BTreeSet::new();
    let theirs_routed = |subject: &str| {
        subject
            .rsplit('.')
            .next()
            .is_some_and(|usager| usager_ids.iter().any(|id| id == usager))
    };
    scan_messages(bus, subjects::ROUTED_STREAM, subjects::ROUTED_ALL, |m| {
        if !theirs_routed(m.subject) {
            keys_in(m.payload, &candidates, &mut referenced);
        }
    })
    .await?;
    scan_messages(bus, subjects::INTAKE_STREAM, subjects::INTAKE_ALL, |m| {
        if !intake_subjects.contains(m.subject) {
            keys_in(m.payload, &candidates, &mut referenced);
        }
    })
    .await?;
    scan_messages(bus, subjects::DEADLETTER_STREAM, subjects::DEADLETTER_ALL, |m| {
        let theirs = DeadLetter::decode(m.payload.clone())
            .ok()
            .and_then(|letter| Contact::decode(letter.payload.as_slice()).ok())
            .is_some_and(|contact| contact_ids.contains(&contact.id));
        if !theirs {
            keys_in(m.payload, &candidates, &mut referenced);
        }
    })
    .await?;

    let store = &bus.stores().attachments;
    let objects = bus
        .jetstream()
        .get_stream_no_info(format!("OBJ_{}", subjects::ATTACHMENTS_STORE))
        .await
        .map_err(|e| RouterError::jetstream(format!("opening {}", subjects::ATTACHMENTS_STORE), e))?;
    let mut erased = FilesErased::default();
    for key in &candidates {
        if referenced.contains(key) {
            erased.kept_shared += 1;
            continue;
        }
        let failed = |e: &dyn std::fmt::Display| {
            RouterError::jetstream(format!("deleting {key} from {}", subjects::ATTACHMENTS_STORE), e)
        };
        match store.delete(key).await {
            Ok(()) => {}
            Err(e) if e.kind() == object_store::DeleteErrorKind::NotFound => {}
            Err(e) => return Err(failed(&e)),
        }
        // A deleted object leaves a "deleted" record under its name (the
        // content's hash, which can tell who sent a known file): gone too.
        objects
            .purge()
            .filter(meta_subject(key))
            .await
            .map_err(|e| failed(&e))?;
        erased.deleted += 1;
    }
    Ok(erased)
}

/// The subject of an object's metadata: `$O.<bucket>.M.` and its name in
/// URL-safe base64 with padding, as the object store writes it.
fn meta_subject(name: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut encoded = String::with_capacity(name.len().div_ceil(3) * 4);
    for chunk in name.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                encoded.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                encoded.push('=');
            }
        }
    }
    format!("$O.{}.M.{encoded}", subjects::ATTACHMENTS_STORE)
}

/// Adds to `found` each of `candidates` whose key appears in `payload`.
/// Keys are `sha256/` and 64 hex digits, carried as plain protobuf strings.
fn keys_in(payload: &[u8], candidates: &BTreeSet<String>, found: &mut BTreeSet<String>) {
    const PREFIX: &[u8] = b"sha256/";
    const KEY_LEN: usize = 7 + 64;
    let mut at = 0;
    while let Some(offset) = payload
        .get(at..)
        .and_then(|rest| rest.windows(PREFIX.len()).position(|w| w == PREFIX))
    {
        let start = at + offset;
        if let Some(key) = payload
            .get(start..start + KEY_LEN)
            .and_then(|k| std::str::from_utf8(k).ok())
            && candidates.contains(key)
        {
            found.insert(key.to_owned());
        }
        at = start + PREFIX.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_found_anywhere_in_a_payload() {
        let a = format!("sha256/{}", "a".repeat(64));
        let b = format!("sha256/{}", "b".repeat(64));
        let candidates = BTreeSet::from([a.clone(), b.clone()]);
        let mut found = BTreeSet::new();
        let payload = [b"\x0a\x47".as_slice(), a.as_bytes(), b"sha256/short", b"\x12sha256/"].concat();
        keys_in(&payload, &candidates, &mut found);
        assert_eq!(found, BTreeSet::from([a]));
        keys_in(b.as_bytes(), &candidates, &mut found);
        assert_eq!(found.len(), 2);
    }

    #[test]
    fn meta_subjects_use_url_safe_base64_with_padding() {
        let bucket = subjects::ATTACHMENTS_STORE;
        assert_eq!(meta_subject("a"), format!("$O.{bucket}.M.YQ=="));
        assert_eq!(meta_subject("ab"), format!("$O.{bucket}.M.YWI="));
        assert_eq!(meta_subject("abc"), format!("$O.{bucket}.M.YWJj"));
        assert_eq!(meta_subject("\u{fb}\u{ff}"), format!("$O.{bucket}.M.w7vDvw=="));
    }
}
