//! What the operators' commands do: merge and forget usagers, explain a
//! routing decision, look at a service's queue. The `guichet` binary
//! prints the reports these return.

use std::{collections::BTreeSet, time::Duration};

use async_nats::jetstream::{
    AckKind,
    consumer::{DeliverPolicy, pull},
    kv,
};
use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use guichet_core::{
    Bus,
    bus::{
        subjects::{self, is_token},
        usagers::{alias_key, merged_key, record_key},
    },
    ids::parse_reference,
    privacy::Pseudonymizer,
    proto::v1::{Channel, Contact, DeadLetter, Routed},
};
use prost::Message;

use crate::{
    RouterError,
    dispatch::queue_consumer,
    erase_files::{FilesErased, erase_files, files_of},
    identity::{self, add_to_record},
    requests::{self, RequestRecord, RoutedIndex},
    tombstones::drop_markers,
};

fn check_id(what: &str, id: &str) -> Result<(), RouterError> {
    if is_token(id) {
        Ok(())
    } else {
        Err(RouterError::Invalid(format!(
            "{what} `{}` is not a usager id (e.g. U01J…: letters, digits, - and _ only)",
            id.escape_default()
        )))
    }
}

fn identity_err<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> RouterError + '_ {
    move |e| RouterError::identity_store(what, e)
}

/// What `guichet usager merge A B` did.
#[derive(Debug, Clone)]
pub struct MergeReport {
    pub kept: String,
    pub merged: String,
    pub identifiers_moved: usize,
    /// The ids whose routed messages now make up the kept usager's history.
    pub history_ids: Vec<String>,
    /// B was already merged into A: the merge was only completed.
    pub already_merged: bool,
}

/// Merges usager `other` into `keep`: `other` becomes an alias of `keep`,
/// its identifiers point at `keep`, and `keep`'s history covers both.
pub async fn merge(bus: &Bus, keep: &str, other: &str) -> Result<MergeReport, RouterError> {
    check_id("KEEP", keep)?;
    check_id("OTHER", other)?;
    if keep == other {
        return Err(RouterError::Invalid("KEEP and OTHER are the same usager".into()));
    }
    let kv = &bus.stores().identity;
    let keep_canonical = bus.canonical_usager(keep).await?;
    if keep_canonical != keep {
        return Err(RouterError::Invalid(format!(
            "{keep} was itself merged into {keep_canonical}: merge into {keep_canonical} instead"
        )));
    }
    let other_canonical = bus.canonical_usager(other).await?;
    let already_merged = other_canonical == keep;
    if !already_merged && other_canonical != other {
        return Err(RouterError::Invalid(format!(
            "{other} was already merged into {other_canonical}; merge {other_canonical} instead"
        )));
    }
    if identity::read_record(bus, keep).await?.is_none() {
        return Err(RouterError::NotFound(format!(
            "no usager {keep} (no record in the identity bucket)"
        )));
    }
    let other_record = identity::read_record(bus, other).await?.map(|(r, _)| r);
    if other_record.is_none() && !already_merged {
        return Err(RouterError::NotFound(format!(
            "no usager {other} (no record in the identity bucket)"
        )));
    }

    // History first (so that no message is ever out of every history),
    // then the alias (lookups now land on KEEP), then the keys.
    let joining: Vec<String> = std::iter::once(other.to_owned())
        .chain(read_json_list(bus, &merged_key(other)).await?)
        .collect();
    let history = add_to_merged_list(bus, keep, &joining).await?;
    kv.put(alias_key(other), Bytes::from(keep.to_owned()))
        .await
        .map_err(|e| RouterError::identity_store("writing the alias", e))?;
    let keys = other_record.map(|r| r.identifiers).unwrap_or_default();
    for key in &keys {
        kv.put(key.as_str(), Bytes::from(keep.to_owned()))
            .await
            .map_err(|e| RouterError::identity_store("re-pointing an identifier", e))?;
    }
    add_to_record(kv, keep, keys.iter().cloned()).await?;
    if let Err(e) = kv.purge(record_key(other)).await {
        tracing::warn!(usager_id = other, error = %e, "merged usager's record not removed");
    }
    let _ = kv.purge(merged_key(other)).await;

    let event = serde_json::json!({
        "kind": "usager_merged", "kept": keep, "merged": other,
        "identifiers_moved": keys.len(), "at": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    });
    bus.publish(
        subjects::event("usager_merged"),
        &format!("merge-{other}-into-{keep}"),
        Bytes::from(event.to_string()),
    )
    .await?;
    let mut history_ids = vec![keep.to_owned()];
    history_ids.extend(history);
    Ok(MergeReport {
        kept: keep.to_owned(),
        merged: other.to_owned(),
        identifiers_moved: keys.len(),
        history_ids,
        already_merged,
    })
}

/// Adds `ids` to `merged.<keep>`, revision-checked: two merges into the
/// same usager at once both land (a plain put lost one, which a later
/// `forget` then missed). Returns the list as written.
async fn add_to_merged_list(bus: &Bus, keep: &str, ids: &[String]) -> Result<Vec<String>, RouterError> {
    let kv = &bus.stores().identity;
    let key = merged_key(keep);
    for _ in 0..16 {
        let entry = kv
            .entry(key.as_str())
            .await
            .map_err(|e| RouterError::identity_store(format!("reading {key}"), e))?;
        let (mut list, revision): (Vec<String>, Option<u64>) = match entry {
            Some(entry) if entry.operation == kv::Operation::Put => (
                serde_json::from_slice(&entry.value)
                    .map_err(|e| RouterError::Identity(format!("{key} is not a JSON list of usager ids ({e})")))?,
                Some(entry.revision),
            ),
            Some(entry) => (Vec::new(), Some(entry.revision)),
            None => (Vec::new(), None),
        };
        for id in ids {
            if id != keep && !list.contains(id) {
                list.push(id.clone());
            }
        }
        let value = Bytes::from(serde_json::to_vec(&list).map_err(|e| RouterError::Invalid(e.to_string()))?);
        let written_list = list;
        // `Err(None)`: another merge wrote it meanwhile, read it again.
        let written: Result<u64, Option<String>> = match revision {
            Some(revision) => kv
                .update(key.as_str(), value, revision)
                .await
                .map_err(|e| (e.kind() != kv::UpdateErrorKind::WrongLastRevision).then(|| e.to_string())),
            None => kv
                .create(key.as_str(), value)
                .await
                .map_err(|e| (e.kind() != kv::CreateErrorKind::AlreadyExists).then(|| e.to_string())),
        };
        match written {
            Ok(_) => return Ok(written_list),
            Err(None) => continue,
            Err(Some(e)) => return Err(RouterError::identity_store("writing the merged list", e)),
        }
    }
    Err(RouterError::identity_store(
        "writing the merged list",
        "too many concurrent merges; retry",
    ))
}

async fn read_json_list(bus: &Bus, key: &str) -> Result<Vec<String>, RouterError> {
    let value = bus
        .stores()
        .identity
        .get(key)
        .await
        .map_err(|e| RouterError::identity_store(format!("reading {key}"), e))?;
    match value {
        None => Ok(Vec::new()),
        Some(v) => serde_json::from_slice(&v)
            .map_err(|e| RouterError::Identity(format!("{key} is not a JSON list of usager ids ({e})"))),
    }
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
    let identity_keys = person_keys.iter().cloned().chain(
        ids.iter()
            .flat_map(|id| [record_key(id), alias_key(id), merged_key(id)]),
    );
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
        let key = record_key(&usager_id);
        // Compare-and-set against routers adding identifiers meanwhile.
        for _ in 0..8 {
            let Some((mut record, revision)) = identity::read_record(bus, &usager_id).await? else {
                break;
            };
            let before = record.identifiers.len();
            record.identifiers.retain(|k| !person_keys.contains(k));
            if record.identifiers.len() == before {
                break;
            }
            let written = if record.identifiers.is_empty() {
                kv.purge_expect_revision(key.as_str(), Some(revision)).await
            } else {
                let value = serde_json::to_vec(&record)
                    .map_err(|e| RouterError::Identity(format!("encoding a record: {e}")))?;
                kv.update(key.as_str(), Bytes::from(value), revision).await.map(|_| ())
            };
            match written {
                Ok(()) => {
                    cleaned += 1;
                    break;
                }
                // 10164 (a competing write in flight on a cluster) is `Other`.
                Err(e)
                    if matches!(
                        e.kind(),
                        kv::UpdateErrorKind::WrongLastRevision | kv::UpdateErrorKind::Other
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(RouterError::identity_store("cleaning another usager's record", e)),
            }
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
    scan_messages(bus, subjects::EVENTS_STREAM, subjects::EVENTS_ALL, |m| {
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

/// Every payload on `filter` in `stream`, oldest first.
pub async fn read_subject(bus: &Bus, stream: &str, filter: &str) -> Result<Vec<Bytes>, RouterError> {
    Ok(read_messages(bus, stream, filter)
        .await?
        .into_iter()
        .map(|(_, payload)| payload)
        .collect())
}

/// Every message on `filter` in `stream` as (sequence, payload), oldest first.
async fn read_messages(bus: &Bus, stream: &str, filter: &str) -> Result<Vec<(u64, Bytes)>, RouterError> {
    let mut out = Vec::new();
    scan_messages(bus, stream, filter, |message| {
        out.push((message.sequence, message.payload.clone()))
    })
    .await?;
    Ok(out)
}

/// One message as a stream stores it.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub sequence: u64,
    pub subject: String,
    pub payload: Bytes,
}

/// Every message on `filter` in `stream`, oldest first, in memory: for
/// the operators' commands that show or compare them all (dead letters,
/// rules replay). Forget scans instead ([`scan_messages`]).
pub(crate) async fn read_stored(bus: &Bus, stream: &str, filter: &str) -> Result<Vec<Stored>, RouterError> {
    let mut out = Vec::new();
    scan_messages(bus, stream, filter, |message| {
        out.push(Stored {
            sequence: message.sequence,
            subject: message.subject.to_owned(),
            payload: message.payload.clone(),
        })
    })
    .await?;
    Ok(out)
}

/// One message of a stream, as [`scan_messages`] shows it.
pub(crate) struct Scanned<'a> {
    pub sequence: u64,
    pub subject: &'a str,
    pub payload: &'a Bytes,
}

/// Shows every message on `filter` in `stream` to `visit`, oldest first,
/// one at a time (a whole journal is never held in memory), up to the
/// last one there when the scan began.
pub(crate) async fn scan_messages(
    bus: &Bus,
    stream: &str,
    filter: &str,
    mut visit: impl FnMut(Scanned<'_>),
) -> Result<(), RouterError> {
    let stream = bus
        .jetstream()
        .get_stream(stream)
        .await
        .map_err(|e| RouterError::jetstream(format!("opening {stream}"), e))?;
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: filter.to_owned(),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| RouterError::jetstream(format!("reading {filter}"), e))?;
    let mut consumer = consumer;
    let pending = consumer
        .info()
        .await
        .map_err(|e| RouterError::jetstream(format!("reading {filter}"), e))?
        .num_pending;
    if pending == 0 {
        return Ok(());
    }
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| RouterError::jetstream(format!("reading {filter}"), e))?;
    while let Some(message) = tokio::time::timeout(Duration::from_secs(10), messages.next())
        .await
        .map_err(|_| RouterError::jetstream(format!("reading {filter}"), "timed out"))?
    {
        let message = message.map_err(|e| RouterError::jetstream(format!("reading {filter}"), e))?;
        let (sequence, left) = message
            .info()
            .map(|i| (i.stream_sequence, i.pending))
            .map_err(|e| RouterError::jetstream(format!("reading {filter}"), e))?;
        visit(Scanned {
            sequence,
            subject: message.subject.as_str(),
            payload: &message.payload,
        });
        if left == 0 {
            break;
        }
    }
    Ok(())
}

/// A routed contact's decision, for `guichet explain`.
#[derive(Debug, Clone)]
pub struct Explanation {
    pub index: RoutedIndex,
    pub routed: Routed,
    pub request: Option<RequestRecord>,
}

/// Finds the `Routed` of a contact and the request it belongs to.
pub async fn explain(bus: &Bus, contact_id: &str) -> Result<Explanation, RouterError> {
    if !is_token(contact_id) {
        return Err(RouterError::Invalid(format!(
            "`{}` is not a contact id (a ULID such as 01J…)",
            contact_id.escape_default()
        )));
    }
    let index = requests::routed_index(bus, contact_id).await?.ok_or_else(|| {
        RouterError::NotFound(format!(
            "contact {contact_id} has not been routed: not yet (is a router running?), dead-lettered (see stream {}), or forgotten",
            subjects::DEADLETTER_STREAM
        ))
    })?;
    let stream = bus
        .jetstream()
        .get_stream(&index.stream)
        .await
        .map_err(|e| RouterError::jetstream(format!("opening {}", index.stream), e))?;
    let message = stream.direct_get(index.sequence).await.map_err(|e| {
        RouterError::NotFound(format!(
            "contact {contact_id} was routed to {} (sequence {}) but the message is gone ({e}): past the journal's retention or purged",
            index.subject, index.sequence
        ))
    })?;
    let routed = Routed::decode(message.payload)
        .map_err(|e| RouterError::Requests(format!("sequence {} is not a Routed: {e}", index.sequence)))?;
    let request = requests::request(bus, &routed.reference).await?;
    Ok(Explanation { index, routed, request })
}

/// What a back-office sees in its queue.
#[derive(Debug, Clone)]
pub struct QueueView {
    pub service: String,
    /// Messages not yet delivered to the back-office.
    pub pending: u64,
    /// Delivered, not yet acknowledged.
    pub unacknowledged: usize,
    pub items: Vec<Routed>,
}

/// Pulls up to `max` messages from a service's queue; acknowledges them
/// only when `ack` (otherwise they go back to the queue at once).
pub async fn pull_queue(bus: &Bus, service: &str, max: usize, ack: bool) -> Result<QueueView, RouterError> {
    if !is_token(service) {
        return Err(RouterError::Invalid(format!(
            "`{}` is not a service name (letters, digits, - and _ only)",
            service.escape_default()
        )));
    }
    let stream = bus
        .jetstream()
        .get_stream(subjects::ROUTED_STREAM)
        .await
        .map_err(|e| RouterError::jetstream("opening ROUTED", e))?;
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = stream
        .get_consumer(&queue_consumer(service))
        .await
        .map_err(|_| {
            RouterError::NotFound(format!(
                "no queue for service `{service}`: routers create one per service of the active rules (see `guichet rules history`)"
            ))
        })?;
    let mut items = Vec::new();
    if max > 0 {
        let mut batch = consumer
            .fetch()
            .max_messages(max)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .map_err(|e| RouterError::jetstream(format!("pulling the queue of {service}"), e))?;
        while let Some(message) = batch.next().await {
            let message = message.map_err(|e| RouterError::jetstream(format!("pulling the queue of {service}"), e))?;
            match Routed::decode(message.payload.clone()) {
                Ok(routed) => items.push(routed),
                Err(e) => tracing::warn!(error = %e, "a message in the queue is not a Routed"),
            }
            let kind = if ack { AckKind::Ack } else { AckKind::Nak(None) };
            message
                .ack_with(kind)
                .await
                .map_err(|e| RouterError::jetstream("acknowledging", e))?;
        }
    }
    let info = consumer
        .info()
        .await
        .map_err(|e| RouterError::jetstream(format!("reading the queue of {service}"), e))?;
    Ok(QueueView {
        service: service.to_owned(),
        pending: info.num_pending,
        unacknowledged: info.num_ack_pending,
        items,
    })
}

/// A contract timestamp as RFC 3339 (seconds), or "-".
pub fn rfc3339(ts: Option<&pbjson_types::Timestamp>) -> String {
    ts.and_then(guichet_core::proto::to_datetime)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| "-".into())
}
