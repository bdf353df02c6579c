//! `guichet usager forget`: the RGPD erasure of a usager, everywhere
//! guichet kept something of them.

use std::collections::BTreeSet;

use async_nats::jetstream::kv;
use bytes::Bytes;
use chrono::Utc;
use guichet_core::{
    Bus,
    bus::{
        subjects,
        usagers::{alias_key, merged_key, record_key},
    },
    ids::parse_reference,
    privacy::Pseudonymizer,
    proto::v1::{Channel, Contact, DeadLetter, Routed},
};
use prost::Message;

use super::check_id;
use crate::{
    RouterError,
    erase_files::{FilesErased, erase_files, files_of},
    identity, identity_conflicts, requests,
    streams::{read_messages, read_subject},
    tombstones::drop_markers,
    usager_records,
};

fn identity_err<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> RouterError + '_ {
    move |e| RouterError::identity_store(what, e)
}

/// What `guichet usager forget ID` erased.
#[derive(Debug, Clone, Default)]
pub struct ForgetReport {
    /// The usager ids erased: the person's id and every id merged into it.
    pub usager_ids: Vec<String>,
    pub routed_messages_purged: u64,
    /// Their notifications on OUTBOX (they hold the e-mail address).
    pub outbox_messages_purged: u64,
    /// Their contacts as received, still in INTAKE (`topology.intake_max_age`).
    pub intake_messages_purged: u64,
    pub identity_keys_removed: usize,
    /// Keys listed in a record but designating another usager: left alone.
    pub identity_keys_kept: usize,
    /// Their contacts that could not be routed, removed from DEADLETTER.
    pub dead_letters_removed: u64,
    /// Events naming them (merges, identity conflicts, history reads).
    pub events_removed: u64,
    /// Markers that the purges left under the keys' names, removed.
    pub markers_removed: usize,
    pub requests_removed: usize,
    pub index_entries_removed: usize,
    /// Their attachments and raw e-mails: deleted, or kept because
    /// another contact points at the same file.
    pub files: FilesErased,
    /// Other records that listed their identifiers (left by a lost race
    /// or a crash): the identifiers taken out, empty records removed.
    pub other_records_cleaned: usize,
    /// Identity conflicts naming them, open or resolved.
    pub conflicts_removed: usize,
}

/// Erases a usager (RGPD): the files of their contacts no one else's
/// contact points at, the events naming them, their routed messages
/// (journal and queues), the same contacts as received (INTAKE), their
/// dead letters, identity keys and records, the requests they opened, and
/// the markers those purges leave. `keys` recognizes their identifiers in
/// dead letters. What is done first is what a rerun could not find once
/// the rest is gone: an interrupted forget is run again.
pub async fn forget(bus: &Bus, keys: &Pseudonymizer, usager_id: &str) -> Result<ForgetReport, RouterError> {
    check_id("ID", usager_id)?;
    let ids = bus.usager_history_ids(usager_id).await?;
    let kv = &bus.stores().identity;
    let mut report = ForgetReport {
        usager_ids: ids.clone(),
        ..Default::default()
    };
    let records: Vec<_> = {
        let mut out = Vec::new();
        for id in &ids {
            out.push(identity::read_record(bus, id).await?.map(|(r, _)| r));
        }
        out
    };
    let routed_stream = bus
        .jetstream()
        .get_stream(subjects::ROUTED_STREAM)
        .await
        .map_err(|e| RouterError::jetstream("opening ROUTED", e))?;

    // What the routed messages point at, before they go.
    let mut contacts = BTreeSet::new();
    let mut references = BTreeSet::new();
    let mut message_ids = BTreeSet::new();
    let mut other_keys = BTreeSet::new();
    let mut intake_subjects = BTreeSet::new();
    let mut files = BTreeSet::new();
    for id in &ids {
        for payload in read_subject(bus, subjects::ROUTED_STREAM, &subjects::usager_history(id)).await? {
            if let Ok(routed) = Routed::decode(payload) {
                if let Some(contact) = &routed.contact {
                    contacts.insert(contact.id.clone());
                    files.extend(files_of(contact).map(str::to_owned));
                    if !contact.idempotency_key.is_empty() {
                        let channel = Channel::try_from(contact.channel).unwrap_or(Channel::Unspecified);
                        intake_subjects.insert(subjects::intake_keyed(channel, &contact.idempotency_key));
                    }
                    if let Some(m) = requests::own_message_id(contact) {
                        message_ids.insert(m.to_owned());
                    }
                    // What a follow-up's or a copy's own reference and an
                    // e-mail's first copy left in the requests bucket.
                    if let Some(own) = parse_reference(&contact.reference)
                        && own != routed.reference
                    {
                        other_keys.insert(requests::alias_key(&own));
                    }
                    other_keys.extend(requests::copy_key(contact));
                }
                references.insert(routed.reference.clone());
            }
        }
    }
    if ids.iter().all(|id| !is_known(&records, id)) && contacts.is_empty() {
        // A forget interrupted after its identity step left markers under
        // the id's own keys: the rerun removes those (not the identifiers'
        // ones, whose names it can no longer know).
        let own = [record_key(usager_id), alias_key(usager_id), merged_key(usager_id)];
        drop_markers(kv, own).await?;
        return Err(RouterError::NotFound(format!(
            "no usager {usager_id}: no record and no routed message"
        )));
    }
    // Files and events first: a rerun finds them only while their
    // messages are still there (see `erase_files`).
    report.files = erase_files(bus, files, &ids, &intake_subjects, &contacts).await?;
    report.events_removed = purge_events(bus, &ids).await?;
    for id in &ids {
        report.outbox_messages_purged += bus.purge_outbox_of(id).await?;
    }
    for id in &ids {
        let purged = routed_stream
            .purge()
            .filter(subjects::usager_history(id))
            .await
            .map_err(|e| RouterError::jetstream(format!("purging the history of {id}"), e))?;
        report.routed_messages_purged += purged.purged;
    }
    // Each contact has its own intake subject: purge them one by one. A
    // retry of one of these source messages would then be taken as new.
    let intake_stream = bus
        .jetstream()
        .get_stream_no_info(subjects::INTAKE_STREAM)
        .await
        .map_err(|e| RouterError::jetstream("opening INTAKE", e))?;
    for subject in &intake_subjects {
        let purged = intake_stream
            .purge()
            .filter(subject)
            .await
            .map_err(|e| RouterError::jetstream("purging a contact from INTAKE", e))?;
        report.intake_messages_purged += purged.purged;
    }

    // Identity: every key of every record that still designates one of
    // them, then the records themselves. A record can list a key that went
    // to someone else (a new usager that lost the race for one of its
    // identifiers): that key is theirs, and stays. The purge expects the
    // revision read, so a key re-pointed meanwhile is not removed either.
    let mut person_keys = BTreeSet::new();
    for record in records.iter().flatten() {
        for key in &record.identifiers {
            let Some(entry) = kv
                .entry(key.as_str())
                .await
                .map_err(identity_err("reading an identifier"))?
            else {
                continue;
            };
            let owner = String::from_utf8_lossy(&entry.value).trim().to_owned();
            if entry.operation != kv::Operation::Put || !ids.contains(&owner) {
                report.identity_keys_kept += 1;
                continue;
            }
            kv.purge_expect_revision(key.as_str(), Some(entry.revision))
                .await
                .map_err(identity_err("removing an identifier"))?;
            report.identity_keys_removed += 1;
            person_keys.insert(key.clone());
        }
    }
    for id in &ids {
        for key in [record_key(id), alias_key(id), merged_key(id)] {
            kv.purge(key.as_str())
                .await
                .map_err(identity_err("removing a usager key"))?;
        }
    }
    // Identity conflicts naming them: ids and contact ids only, but they
    // link the erased person to another.
    let conflict_keys = identity_conflicts::keys_naming(bus, &ids).await?;
    for key in &conflict_keys {
        kv.purge(key.as_str())
            .await
            .map_err(identity_err("removing an identity conflict"))?;
    }
    report.conflicts_removed = conflict_keys.len();

    report.other_records_cleaned = clean_other_records(bus, &person_keys, &ids).await?;

    // Requests they opened, and the indexes pointing at their messages.
    let rkv = &bus.stores().requests;
    for reference in &references {
        if let Some(request) = requests::request(bus, reference).await?
            && ids.contains(&request.usager_id)
        {
            rkv.purge(requests::request_key(reference))
                .await
                .map_err(|e| RouterError::requests_store("removing a request", e))?;
            report.requests_removed += 1;
        }
    }
    for key in contacts
        .iter()
        .map(|c| requests::contact_key(c))
        .chain(message_ids.iter().map(|m| requests::msgid_key(m)))
        .chain(other_keys.iter().cloned())
    {
        rkv.purge(key.as_str())
            .await
            .map_err(|e| RouterError::requests_store("removing an index entry", e))?;
        report.index_entries_removed += 1;
    }

    report.dead_letters_removed = purge_dead_letters(bus, keys, &person_keys, &contacts).await?;
    // Last, the markers those purges left under the keys' names.
    let identity_keys = person_keys
        .iter()
        .cloned()
        .chain(
            ids.iter()
                .flat_map(|id| [record_key(id), alias_key(id), merged_key(id)]),
        )
        .chain(conflict_keys);
    report.markers_removed = drop_markers(kv, identity_keys).await?;
    let request_keys = references
        .iter()
        .map(|r| requests::request_key(r))
        .chain(contacts.iter().map(|c| requests::contact_key(c)))
        .chain(message_ids.iter().map(|m| requests::msgid_key(m)))
        .chain(other_keys.iter().cloned());
    report.markers_removed += drop_markers(rkv, request_keys).await?;

    // The erasure's own record names no one: the ids as keyed pseudonyms
    // (whoever holds the key and an id can check it was erased).
    let pseudonyms: Vec<String> = ids.iter().map(|id| keys.pseudonym(id)).collect();
    let event = serde_json::json!({
        "kind": "usager_forgotten", "usager_pseudonyms": pseudonyms,
        "routed_messages_purged": report.routed_messages_purged,
        "outbox_messages_purged": report.outbox_messages_purged,
        "intake_messages_purged": report.intake_messages_purged,
        "dead_letters_removed": report.dead_letters_removed,
        "files_deleted": report.files.deleted, "files_kept_shared": report.files.kept_shared,
        "other_records_cleaned": report.other_records_cleaned,
        "at": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    });
    bus.publish(
        subjects::event("usager_forgotten"),
        &format!("forget-{}-{}", keys.pseudonym(usager_id), Utc::now().timestamp_millis()),
        Bytes::from(event.to_string()),
    )
    .await?;
    Ok(report)
}

/// Takes `person_keys` out of every other `usager.<U>` record that lists
/// them — the record of an id that lost a race for the person (written
/// before its claim, and not removed: a crash, NATS away) or of a usager
/// that lost the claim of one of the person's identifiers — and removes
/// a record left with no identifier. Reads every record: erasure is rare
/// and must leave nothing. Returns how many records were changed.
async fn clean_other_records(bus: &Bus, person_keys: &BTreeSet<String>, ids: &[String]) -> Result<usize, RouterError> {
    if person_keys.is_empty() {
        return Ok(0);
    }
    let stream = format!("KV_{}", subjects::IDENTITY_BUCKET);
    let prefix = format!("$KV.{}.", subjects::IDENTITY_BUCKET);
    let filter = format!("{prefix}{}", record_key(">"));
    let kv = &bus.stores().identity;
    let mut candidates = BTreeSet::new();
    for (_, payload) in read_messages(bus, &stream, &filter).await? {
        if let Ok(record) = serde_json::from_slice::<identity::UsagerRecord>(&payload)
            && !ids.contains(&record.usager_id)
            && record.identifiers.iter().any(|k| person_keys.contains(k))
        {
            candidates.insert(record.usager_id);
        }
    }
    let mut cleaned = 0;
    for usager_id in candidates {
        if usager_records::remove_from_record(kv, &usager_id, person_keys, true).await? {
            cleaned += 1;
        }
    }
    Ok(cleaned)
}

/// Contacts that could not be routed never got a usager id, but those that
/// carry one of the person's identifiers (or are one of their contacts) are
/// theirs all the same: removed one by one from DEADLETTER.
async fn purge_dead_letters(
    bus: &Bus,
    keys: &Pseudonymizer,
    person_keys: &BTreeSet<String>,
    contacts: &BTreeSet<String>,
) -> Result<u64, RouterError> {
    let stream = bus
        .jetstream()
        .get_stream_no_info(subjects::DEADLETTER_STREAM)
        .await
        .map_err(|e| RouterError::jetstream("opening DEADLETTER", e))?;
    let mut removed = 0;
    for (sequence, payload) in read_messages(bus, subjects::DEADLETTER_STREAM, subjects::DEADLETTER_ALL).await? {
        let Ok(letter) = DeadLetter::decode(payload) else {
            continue;
        };
        let Ok(contact) = Contact::decode(letter.payload.as_slice()) else {
            continue;
        };
        let theirs = contacts.contains(&contact.id)
            || identity::identifiers(&contact)
                .iter()
                .any(|id| person_keys.contains(&keys.identity_key(id)));
        if theirs {
            stream
                .delete_message(sequence)
                .await
                .map_err(|e| RouterError::jetstream("removing a dead letter", e))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Review and audit events that name one of `ids` (merges, identity
/// conflicts, reads of their history): removed one by one from EVENTS, so
/// that no id of an erased person is left to link anything to.
async fn purge_events(bus: &Bus, ids: &[String]) -> Result<u64, RouterError> {
    let mut theirs = Vec::new();
    bus.scan(subjects::EVENTS_STREAM, subjects::EVENTS_ALL, |m| {
        let text = String::from_utf8_lossy(m.payload);
        if ids.iter().any(|id| text.contains(id.as_str())) {
            theirs.push(m.sequence);
        }
    })
    .await?;
    let stream = bus
        .jetstream()
        .get_stream_no_info(subjects::EVENTS_STREAM)
        .await
        .map_err(|e| RouterError::jetstream("opening EVENTS", e))?;
    for sequence in &theirs {
        stream
            .delete_message(*sequence)
            .await
            .map_err(|e| RouterError::jetstream("removing an event", e))?;
    }
    Ok(theirs.len() as u64)
}

fn is_known(records: &[Option<identity::UsagerRecord>], id: &str) -> bool {
    records.iter().flatten().any(|r| r.usager_id == id)
}
