//! One usager id per person: resolving a contact's identity claims.
//!
//! Identifiers are normalized by [`guichet_core::identity`] and looked up
//! in `guichet_identity` by keyed hash ([`Pseudonymizer::identity_key`]) (layout in
//! [`guichet_core::bus::usagers`]). A new person gets a new id claimed on
//! their strongest identifier with [`guichet_core::bus::claim`] (a write
//! expecting no value, then, if refused, a read from the stream leader),
//! so two routers racing on the same new person end with one id: the
//! loser learns the winner's id from the leader, removes the record it
//! wrote for its own id, and routes the contact to the winner at once.
//! New identifiers attach to the usager found. When identifiers point at
//! different usagers — found so, or because a claim was lost to another
//! usager — the strongest identifier wins — the highest level first
//! ([`crate::levels`]: certified > verified > declared, the level being
//! the higher of the claim's and the one the usager holds it at), then
//! the strongest kind (account > e-mail > phone). A conflict between a
//! certified designation and identifiers held only as declared by others
//! is settled without review (an `identity_conflict_settled` event; a
//! certified claim of an identifier held declared re-points it to the
//! certified usager). Any other conflict re-points nothing: it is
//! recorded for review ([`crate::identity_conflicts`], unless an operator
//! already said the two are distinct people) and an `identity_conflict`
//! event is published: a person is never split silently. A lower level
//! never re-points an identifier held at a higher level.
//!
//! With an [`IdentityCache`] the lookups are answered from memory. A
//! known usager bringing an identifier the cache does not know is read
//! from the stream leader before anything is attached, so the strongest
//! identifier is chosen on fresh data. A new person is created on the
//! cache's word: an identifier claimed meanwhile by another router is
//! found by the claim itself, and shows as the winner (strongest) or a
//! conflict (weaker).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
};

use async_nats::jetstream::kv::{self, Operation, UpdateErrorKind};
use bytes::Bytes;
use chrono::Utc;
use guichet_core::{
    Bus,
    bus::{
        claim::{self, Claim, leader_entry},
        subjects::{self, is_token},
        usagers::{alias_key, follow_aliases},
    },
    identity::{Identifier, IdentifierKind, normalize_account, normalize_email, normalize_phone},
    privacy::Pseudonymizer,
    proto::v1::{Contact, Flag, FlagKind, identity_resolution::Outcome},
};

pub use crate::usager_records::{UsagerRecord, read_record};
use crate::{
    RouterError,
    identity_cache::IdentityCache,
    identity_conflicts::{self, Recorded, Side},
    levels::Level,
    usager_records::{add_to_record, put_record, read_record_from_leader, remove_from_record, remove_record},
};

/// An identifier of a contact that designates another usager than the
/// one chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct Disagreement {
    /// "account", "email" or "phone".
    pub kind: String,
    /// The usager it designates.
    pub usager_id: String,
    /// The level that usager holds it at.
    pub held: Level,
    /// The level this contact claims it at.
    pub claimed: Level,
}

/// What the resolution of one contact found.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolution {
    pub usager_id: String,
    pub outcome: Outcome,
    /// Kinds of the identifiers that designate the usager ("email", ...).
    pub matched_by: Vec<String>,
    /// Kinds of every identifier of the contact that designates the usager
    /// once resolved (found or claimed now).
    pub designated_by: Vec<String>,
    /// The level the usager is designated at: the highest among those
    /// identifiers (the claim's or the holding's).
    pub level: Level,
    /// Identifiers designating other usagers, left for review.
    pub conflicts: Vec<Disagreement>,
    /// Identifiers designating other usagers at the declared level only,
    /// against a certified designation: settled without review.
    pub settled: Vec<Disagreement>,
    /// Kinds re-pointed to the usager by this contact's certified claims.
    pub re_pointed: Vec<String>,
    /// One flag per identity claim that was not usable (see [`claims`]).
    pub unusable: Vec<Flag>,
}

/// The normalized identifiers of a contact, strongest first. Claims that
/// do not normalize are skipped (and counted), never fatal.
pub fn identifiers(contact: &Contact) -> Vec<Identifier> {
    claims(contact).0
}

/// The contact's usable identifiers, strongest first, and one flag per
/// claim that is not usable. The router does not trust the adapters'
/// checks: a claim that fails the shared rule ([`guichet_core::identity`])
/// designates nobody — it is neither looked up nor attached — and the
/// routed contact says so.
pub fn claims(contact: &Contact) -> (Vec<Identifier>, Vec<Flag>) {
    let (claimed, flags) = claimed(contact);
    (claimed.into_iter().map(|(id, _)| id).collect(), flags)
}

/// [`claims`], each identifier with the level the contact claims it at.
pub fn claimed(contact: &Contact) -> (Vec<(Identifier, Level)>, Vec<Flag>) {
    let Some(claims) = &contact.claims else {
        return (Vec::new(), Vec::new());
    };
    let mut out = Vec::new();
    let mut flags = Vec::new();
    let mut push = |field: &'static str, result: Result<Identifier, guichet_core::Error>| match result {
        Ok(id) => out.push(id),
        Err(e) => {
            metrics::counter!("guichet_router_unusable_claims_total", "field" => field).increment(1);
            tracing::debug!(contact_id = %contact.id, field, "identity claim not usable; ignored");
            flags.push(Flag {
                kind: FlagKind::MalformedHeader as i32,
                reason: format!(
                    "usager.{field} not used to identify the usager: {}",
                    e.identity_reason()
                ),
            });
        }
    };
    if !claims.account_id.trim().is_empty() {
        push(
            "account_id",
            normalize_account(&claims.account_issuer, &claims.account_id),
        );
    }
    if !claims.email.trim().is_empty() {
        push("email", normalize_email(&claims.email));
    }
    if !claims.phone.trim().is_empty() {
        push("phone", normalize_phone(&claims.phone));
    }
    out.sort_by_key(|id| id.kind);
    let out = out
        .into_iter()
        .map(|id| {
            let level = Level::claimed(claims, id.kind);
            (id, level)
        })
        .collect();
    (out, flags)
}

/// Resolves the contact's usager, claiming or attaching identifiers,
/// reading the KV directly (no cache).
pub async fn resolve(bus: &Bus, keys: &Pseudonymizer, contact: &Contact) -> Result<Resolution, RouterError> {
    resolve_with(bus, keys, None, contact).await
}

/// [`resolve`], answering lookups from `cache` when it can.
pub async fn resolve_with(
    bus: &Bus,
    keys: &Pseudonymizer,
    cache: Option<&IdentityCache>,
    contact: &Contact,
) -> Result<Resolution, RouterError> {
    let (ids, unusable) = claimed(contact);
    if ids.is_empty() {
        return Ok(Resolution {
            usager_id: anonymous_id(&contact.id),
            outcome: Outcome::Anonymous,
            matched_by: Vec::new(),
            designated_by: Vec::new(),
            level: Level::Declared,
            conflicts: Vec::new(),
            settled: Vec::new(),
            re_pointed: Vec::new(),
            unusable,
        });
    }
    let reader = Reader {
        bus,
        keys,
        cache,
        fresh: false,
    };
    let mut resolution = try_resolve(&reader, &ids).await?;
    resolution.unusable = unusable;
    if !resolution.settled.is_empty() {
        publish_settled(bus, contact, &resolution).await?;
    }
    if !resolution.conflicts.is_empty() {
        record_conflicts(bus, contact, &mut resolution).await?;
        if resolution.conflicts.is_empty() {
            // Every pair was settled by an operator: two people.
            resolution.outcome = Outcome::Known;
        } else {
            publish_conflict(bus, contact, &resolution).await?;
        }
    }
    Ok(resolution)
}

/// The usager id of a contact with no identifier: its own, derived from
/// the contact id, so that a redelivery gets the same one.
pub fn anonymous_id(contact_id: &str) -> String {
    format!("U{contact_id}")
}

/// What a key of the identity bucket holds.
enum Stored {
    Absent,
    Text(Arc<str>),
    /// A value that is not UTF-8: never written by guichet.
    NotText,
}

/// Reads identity keys for one resolution attempt: from the cache when
/// there is one and the attempt may trust it, else from the KV (keeping
/// what it read in the cache, under a [`crate::identity_cache::Ticket`]).
struct Reader<'a> {
    bus: &'a Bus,
    /// Computes identity keys (keyed: see [`guichet_core::privacy`]).
    keys: &'a Pseudonymizer,
    cache: Option<&'a IdentityCache>,
    /// Read the KV even on a cache hit (after a lost race).
    fresh: bool,
}

impl Reader<'_> {
    fn kv(&self) -> &kv::Store {
        &self.bus.stores().identity
    }

    async fn read(&self, key: &str, what: &str) -> Result<Stored, RouterError> {
        if !self.fresh
            && let Some(cached) = self.cache.and_then(|c| c.get(key))
        {
            return Ok(cached.map_or(Stored::Absent, Stored::Text));
        }
        let ticket = self.cache.and_then(|c| c.ticket(key));
        let entry = if self.fresh {
            // From the stream leader: a replica may not have the write of
            // another router yet, and a fresh read is made to see it.
            leader_entry(self.kv(), key)
                .await
                .map_err(|e| RouterError::identity_store(format!("reading {what}"), e))?
                .map(|(value, revision, tombstone)| (value, revision, !tombstone))
        } else {
            self.kv()
                .entry(key)
                .await
                .map_err(|e| RouterError::identity_store(format!("reading {what}"), e))?
                .map(|entry| (entry.value, entry.revision, entry.operation == Operation::Put))
        };
        let (stored, revision) = match entry {
            Some((value, revision, true)) => match std::str::from_utf8(&value) {
                Ok(text) => (Stored::Text(Arc::from(text)), revision),
                Err(_) => return Ok(Stored::NotText),
            },
            Some((_, revision, false)) => (Stored::Absent, revision),
            None => (Stored::Absent, 0),
        };
        if let (Some(cache), Some(ticket)) = (self.cache, ticket) {
            let value = match &stored {
                Stored::Text(text) => Some(&**text),
                _ => None,
            };
            cache.fill(ticket, key, value, revision);
        }
        Ok(stored)
    }

    /// Remembers a key this router just wrote (`ticket` taken before the
    /// write), so that the usager's next contacts need no read.
    fn wrote(&self, ticket: Option<crate::identity_cache::Ticket>, key: &str, value: Option<&str>, revision: u64) {
        if let (Some(cache), Some(ticket)) = (self.cache, ticket) {
            cache.fill(ticket, key, value, revision);
        }
    }

    fn ticket(&self, key: &str) -> Option<crate::identity_cache::Ticket> {
        self.cache.and_then(|c| c.ticket(key))
    }

    /// The (canonical) usager an identifier points at, if any.
    async fn lookup(&self, id: &Identifier) -> Result<Option<String>, RouterError> {
        let key = self.keys.identity_key(id);
        match self.read(&key, &format!("a {} key", id.kind.as_str())).await? {
            Stored::Absent => Ok(None),
            Stored::Text(text) => Ok(Some(self.owner(&key, text.trim()).await?)),
            Stored::NotText => Err(RouterError::Identity(format!("key {key} does not hold UTF-8 text"))),
        }
    }

    /// The canonical usager that `raw`, the value of `key`, designates.
    async fn owner(&self, key: &str, raw: &str) -> Result<String, RouterError> {
        let not_an_id = |value: &str| {
            RouterError::Identity(format!(
                "key {key} leads to `{}`, which is not a usager id (letters, digits, - and _ only); fix or purge the key",
                value.escape_default()
            ))
        };
        if !is_token(raw) {
            return Err(not_an_id(raw));
        }
        let canonical = self.canonical(raw).await?;
        if !is_token(&canonical) {
            return Err(not_an_id(&canonical));
        }
        Ok(canonical)
    }

    /// Follows merges (`alias.<U>`) with [`follow_aliases`], as
    /// [`Bus::canonical_usager`] does, through this reader.
    async fn canonical(&self, usager_id: &str) -> Result<String, RouterError> {
        follow_aliases(usager_id, |key| async move {
            Ok(match self.read(&key, "an alias").await? {
                Stored::Text(next) => Some(next.to_string()),
                _ => None,
            })
        })
        .await
    }
}

/// Resolves one contact's identifiers, strongest first.
///
/// Every identifier ends designating someone: found, claimed for the
/// usager chosen, or found claimed by another router meanwhile. A claim
/// lost to another usager is a conflict, so a person is never split
/// without an `identity_conflict` event; a lost race for the strongest
/// identifier of a new person makes its winner the usager, in the same
/// attempt (no NAK, no retry). Levels are read from the usagers' records
/// only when identifiers disagree, and written only for claims above
/// declared: the common contact costs no more than before.
async fn try_resolve(reader: &Reader<'_>, claimed: &[(Identifier, Level)]) -> Result<Resolution, RouterError> {
    let ids: Vec<Identifier> = claimed.iter().map(|(id, _)| id.clone()).collect();
    let level_of = |id: &Identifier| {
        claimed
            .iter()
            .find(|(c, _)| c == id)
            .map_or(Level::Declared, |(_, l)| *l)
    };
    let (mut known, mut unknown) = classify(reader, &ids).await?;
    if !reader.fresh && !known.is_empty() && !unknown.is_empty() {
        // A known usager with an identifier the cache has not seen: another
        // router may have claimed it a moment ago, and which usager wins
        // and what joins their record depend on it. Rare (a new identifier
        // for a known person): read them all from the KV.
        (known, unknown) = classify(&Reader { fresh: true, ..*reader }, &ids).await?;
    }
    let kv = reader.kv();
    let mut holdings = Holdings::new(reader.keys);
    // Who each identifier designates once this resolution is done, and
    // whether it did before (found) or was claimed now.
    let mut owners: Vec<(&Identifier, String, bool)> = known.iter().map(|(id, u)| (*id, u.clone(), true)).collect();

    let (chosen, created) = if let Some(chosen) = strongest(kv, &mut holdings, &owners, &level_of).await? {
        (chosen.1, false)
    } else {
        // A new person: the record first (so that `forget` always finds
        // every key), then the strongest key decides who created them.
        let usager_id = guichet_core::ids::usager_id();
        // Nobody can alias an id before its record exists: taken now, the
        // ticket lets the cache learn "no alias" for the new usager.
        let alias = alias_key(&usager_id);
        let alias_ticket = reader.ticket(&alias);
        let record = UsagerRecord {
            usager_id: usager_id.clone(),
            created_at: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            identifiers: ids.iter().map(|id| reader.keys.identity_key(id)).collect(),
            levels: above_declared(reader.keys, claimed.iter().map(|(id, l)| (id, *l))),
        };
        put_record(kv, &record).await?;
        let first = unknown.remove(0);
        match claim_key(reader, first, &usager_id).await? {
            None => {
                reader.wrote(alias_ticket, &alias, None, 0);
                owners.push((first, usager_id.clone(), false));
                (usager_id, true)
            }
            Some(holder) => {
                // Another router created this person a moment ago: theirs
                // is the id. Ours was never used: its record goes.
                metrics::counter!("guichet_router_identity_races_total").increment(1);
                remove_record(kv, &usager_id).await?;
                owners.push((first, holder.clone(), true));
                (holder, false)
            }
        }
    };
    if !unknown.is_empty() {
        if !created {
            let levels = above_declared(reader.keys, unknown.iter().map(|id| (*id, level_of(id))));
            add_to_record(
                kv,
                &chosen,
                unknown.iter().map(|id| reader.keys.identity_key(id)),
                &levels,
            )
            .await?;
        }
        for id in unknown {
            match claim_key(reader, id, &chosen).await? {
                Some(holder) => owners.push((id, holder, true)),
                None => owners.push((id, chosen.clone(), false)),
            }
        }
    }
    if created {
        metrics::counter!("guichet_router_usagers_created_total").increment(1);
    }
    // The strongest identifier decides, including one that another router
    // claimed while this contact was being resolved.
    owners.sort_by_key(|(id, _, _)| id.kind);
    let (level, winner) = strongest(kv, &mut holdings, &owners, &level_of)
        .await?
        .unwrap_or((Level::Declared, chosen));
    let mut matched_by = Vec::new();
    let mut designated_by = Vec::new();
    let mut disagreements = Vec::new();
    // The winner's identifiers claimed above the level it holds them at.
    let mut raised = BTreeMap::new();
    for (id, owner, found) in &owners {
        let claimed_level = level_of(id);
        if *owner != winner {
            let held = if *found {
                holdings.held(kv, owner, id).await?
            } else {
                claimed_level
            };
            disagreements.push((
                *id,
                Disagreement {
                    kind: id.kind.as_str().to_owned(),
                    usager_id: owner.clone(),
                    held,
                    claimed: claimed_level,
                },
            ));
            continue;
        }
        designated_by.push(id.kind.as_str().to_owned());
        if *found {
            matched_by.push(id.kind.as_str().to_owned());
            if claimed_level > Level::Declared {
                raised.insert(reader.keys.identity_key(id), claimed_level);
            }
        }
    }
    if !raised.is_empty() {
        add_to_record(kv, &winner, [], &raised).await?;
    }
    // Certified against declared holdings only: settled without review.
    let settle = level == Level::Certified
        && !disagreements.is_empty()
        && disagreements.iter().all(|(_, d)| d.held == Level::Declared);
    let mut re_pointed = Vec::new();
    if settle {
        for (id, d) in &disagreements {
            if d.claimed > d.held && re_point(reader, id, &d.usager_id, &winner, d.claimed).await? {
                re_pointed.push(d.kind.clone());
            }
        }
    }
    let disagreements: Vec<Disagreement> = disagreements.into_iter().map(|(_, d)| d).collect();
    let (conflicts, settled) = if settle {
        (Vec::new(), disagreements)
    } else {
        (disagreements, Vec::new())
    };
    Ok(Resolution {
        usager_id: winner,
        outcome: match (conflicts.is_empty(), created) {
            (false, _) => Outcome::Conflict,
            (true, true) => Outcome::Created,
            (true, false) => Outcome::Known,
        },
        matched_by,
        designated_by,
        level,
        conflicts,
        settled,
        re_pointed,
        unusable: Vec::new(),
    })
}

/// The level of each of `ids` above declared, by identity key.
fn above_declared<'i>(
    keys: &Pseudonymizer,
    ids: impl IntoIterator<Item = (&'i Identifier, Level)>,
) -> BTreeMap<String, Level> {
    ids.into_iter()
        .filter(|(_, level)| *level > Level::Declared)
        .map(|(id, level)| (keys.identity_key(id), level))
        .collect()
}

/// The usager `owners` (sorted strongest kind first) designate: the one
/// whose identifier weighs most — the higher of the level claimed and the
/// level held first, then the kind — with that level. `None`: no owner.
/// Reads the records' levels only when the owners disagree.
async fn strongest(
    kv: &kv::Store,
    holdings: &mut Holdings<'_>,
    owners: &[(&Identifier, String, bool)],
    level_of: &impl Fn(&Identifier) -> Level,
) -> Result<Option<(Level, String)>, RouterError> {
    let Some((_, first, _)) = owners.first() else {
        return Ok(None);
    };
    if owners.iter().all(|(_, owner, _)| owner == first) {
        let level = owners.iter().map(|(id, _, _)| level_of(id)).max().unwrap_or_default();
        return Ok(Some((level, first.clone())));
    }
    let mut best: Option<(Level, IdentifierKind, String)> = None;
    for (id, owner, found) in owners {
        let mut level = level_of(id);
        if *found {
            level = level.max(holdings.held(kv, owner, id).await?);
        }
        // Higher level first; at the same level the stronger kind (owners
        // are sorted, so the first seen).
        if best.as_ref().is_none_or(|(l, _, _)| level > *l) {
            best = Some((level, id.kind, owner.clone()));
        }
    }
    Ok(best.map(|(level, _, owner)| (level, owner)))
}

/// The levels usagers hold identifiers at, read from their records (on
/// the stream leader) once per resolution.
struct Holdings<'a> {
    keys: &'a Pseudonymizer,
    levels: HashMap<String, BTreeMap<String, Level>>,
}

impl<'a> Holdings<'a> {
    fn new(keys: &'a Pseudonymizer) -> Self {
        Self {
            keys,
            levels: HashMap::new(),
        }
    }

    /// The level `usager_id` holds `id` at (declared when unrecorded).
    async fn held(&mut self, kv: &kv::Store, usager_id: &str, id: &Identifier) -> Result<Level, RouterError> {
        if !self.levels.contains_key(usager_id) {
            // From the leader: a replica may not have a level raised a
            // moment ago by another router.
            let levels = read_record_from_leader(kv, usager_id)
                .await?
                .map(|(record, _)| record.levels)
                .unwrap_or_default();
            self.levels.insert(usager_id.to_owned(), levels);
        }
        let key = self.keys.identity_key(id);
        Ok(self
            .levels
            .get(usager_id)
            .and_then(|levels| levels.get(&key))
            .copied()
            .unwrap_or_default())
    }
}

/// Points `id`, held at the declared level by `from`, at `to`: a
/// certified claim settled their conflict. The key joins `to`'s record
/// first (so that `forget` always finds it), then is re-pointed
/// compare-and-set against the revision that named `from` (a key changed
/// meanwhile is left as it is), then leaves `from`'s record. Whether it
/// was re-pointed.
async fn re_point(
    reader: &Reader<'_>,
    id: &Identifier,
    from: &str,
    to: &str,
    level: Level,
) -> Result<bool, RouterError> {
    let kv = reader.kv();
    let key = reader.keys.identity_key(id);
    let Some((value, revision)) = claim::leader_value(kv, &key)
        .await
        .map_err(|e| RouterError::identity_store("reading an identifier to re-point", e))?
    else {
        return Ok(false);
    };
    let raw = std::str::from_utf8(&value)
        .map_err(|_| RouterError::Identity(format!("key {key} does not hold UTF-8 text")))?;
    let fresh = Reader { fresh: true, ..*reader };
    if fresh.owner(&key, raw.trim()).await? != from {
        return Ok(false);
    }
    add_to_record(kv, to, [key.clone()], &BTreeMap::from([(key.clone(), level)])).await?;
    match kv.update(key.as_str(), Bytes::from(to.to_owned()), revision).await {
        Ok(_) => {}
        // Changed meanwhile (10164 on a cluster is `Other`): left alone.
        Err(e) if matches!(e.kind(), UpdateErrorKind::WrongLastRevision | UpdateErrorKind::Other) => return Ok(false),
        Err(e) => return Err(RouterError::identity_store("re-pointing an identifier", e)),
    }
    remove_from_record(kv, from, &BTreeSet::from([key]), false).await?;
    metrics::counter!("guichet_router_identifiers_repointed_total").increment(1);
    Ok(true)
}

/// The identifiers that designate a usager (with that usager) and those
/// that designate nobody, strongest first.
async fn classify<'i>(
    reader: &Reader<'_>,
    ids: &'i [Identifier],
) -> Result<(Vec<(&'i Identifier, String)>, Vec<&'i Identifier>), RouterError> {
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for id in ids {
        match reader.lookup(id).await? {
            Some(u) => known.push((id, u)),
            None => unknown.push(id),
        }
    }
    Ok((known, unknown))
}

/// Points `id` at `usager_id` unless it designates someone already:
/// `None` when claimed, else the (canonical) usager holding it, read from
/// the stream leader whatever the server said about the refused write.
async fn claim_key(reader: &Reader<'_>, id: &Identifier, usager_id: &str) -> Result<Option<String>, RouterError> {
    let key = reader.keys.identity_key(id);
    let ticket = reader.ticket(&key);
    let what = || format!("claiming a {} key", id.kind.as_str());
    match claim::claim(reader.kv(), &key, Bytes::from(usager_id.to_owned()))
        .await
        .map_err(|e| RouterError::identity_store(what(), e))?
    {
        Claim::Won(revision) => {
            reader.wrote(ticket, &key, Some(usager_id), revision);
            Ok(None)
        }
        Claim::Held { value, revision } => {
            let raw = std::str::from_utf8(&value)
                .map_err(|_| RouterError::Identity(format!("key {key} does not hold UTF-8 text")))?;
            reader.wrote(ticket, &key, Some(raw), revision);
            let fresh = Reader { fresh: true, ..*reader };
            Ok(Some(fresh.owner(&key, raw.trim()).await?))
        }
    }
}

/// Records each pair of a conflict for review ([`identity_conflicts`]),
/// keeping in `resolution.conflicts` only the pairs still open (an
/// operator may have said they are two people).
async fn record_conflicts(bus: &Bus, contact: &Contact, resolution: &mut Resolution) -> Result<(), RouterError> {
    let kv = &bus.stores().identity;
    let mut others: BTreeMap<String, Vec<Disagreement>> = BTreeMap::new();
    for d in resolution.conflicts.drain(..) {
        others.entry(d.usager_id.clone()).or_default().push(d);
    }
    let kept = Side {
        usager_id: resolution.usager_id.clone(),
        kinds: resolution.designated_by.clone(),
        level: resolution.level,
    };
    for (usager_id, ds) in others {
        let other = Side {
            usager_id,
            kinds: ds.iter().map(|d| d.kind.clone()).collect(),
            level: ds.iter().map(|d| d.held).max().unwrap_or_default(),
        };
        match identity_conflicts::record(kv, &contact.id, kept.clone(), other).await? {
            Recorded::Open { .. } => resolution.conflicts.extend(ds),
            Recorded::Settled(_) => {
                metrics::counter!("guichet_router_identity_conflicts_settled_total").increment(1);
            }
        }
    }
    Ok(())
}

/// The other usagers of `disagreements`, each with its kinds and levels.
fn others_json(disagreements: &[Disagreement]) -> Vec<serde_json::Value> {
    let mut others: BTreeMap<&str, Vec<serde_json::Value>> = BTreeMap::new();
    for d in disagreements {
        others.entry(d.usager_id.as_str()).or_default().push(serde_json::json!({
            "kind": d.kind, "held": d.held, "claimed": d.claimed,
        }));
    }
    others
        .into_iter()
        .map(|(u, identifiers)| serde_json::json!({ "usager_id": u, "identifiers": identifiers }))
        .collect()
}

/// A conflict settled by level (certified against declared): an event,
/// no review.
async fn publish_settled(bus: &Bus, contact: &Contact, resolution: &Resolution) -> Result<(), RouterError> {
    let event = serde_json::json!({
        "kind": "identity_conflict_settled",
        "contact_id": contact.id,
        "kept": {
            "usager_id": resolution.usager_id,
            "designated_by": resolution.designated_by,
            "level": resolution.level,
        },
        "others": others_json(&resolution.settled),
        "re_pointed": resolution.re_pointed,
        "action": "none: a certified designation wins over declared ones",
        "at": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    });
    tracing::info!(
        contact_id = %contact.id,
        kept = %resolution.usager_id,
        re_pointed = ?resolution.re_pointed,
        "identity conflict settled by level: certified over declared"
    );
    bus.publish(
        subjects::event("identity_conflict_settled"),
        &format!("identity-settled-{}", contact.id),
        Bytes::from(event.to_string()),
    )
    .await?;
    Ok(())
}

async fn publish_conflict(bus: &Bus, contact: &Contact, resolution: &Resolution) -> Result<(), RouterError> {
    let others: BTreeSet<&str> = resolution.conflicts.iter().map(|d| d.usager_id.as_str()).collect();
    let conflict_ids: Vec<String> = others
        .iter()
        .map(|u| identity_conflicts::conflict_id(&resolution.usager_id, u))
        .collect();
    let event = serde_json::json!({
        "kind": "identity_conflict",
        "contact_id": contact.id,
        "kept": {
            "usager_id": resolution.usager_id,
            "matched_by": resolution.matched_by,
            "level": resolution.level,
        },
        "others": others_json(&resolution.conflicts),
        "conflicts": conflict_ids,
        "action": "review: `guichet usager conflicts`, then `guichet usager resolve ID merge|distinct`",
        "at": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    });
    metrics::counter!("guichet_router_identity_conflicts_total").increment(1);
    tracing::warn!(
        contact_id = %contact.id,
        kept = %resolution.usager_id,
        others = ?others,
        "identity conflict: identifiers point at different usagers; kept the strongest, recorded for review"
    );
    bus.publish(
        subjects::event("identity_conflict"),
        &format!("identity-conflict-{}", contact.id),
        Bytes::from(event.to_string()),
    )
    .await?;
    Ok(())
}
