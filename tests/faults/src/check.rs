//! The verdict, from what the streams hold: every acknowledged contact is
//! in INTAKE exactly once and in ROUTED exactly once; nothing is in INTAKE
//! twice or routed twice, whether acknowledged or not; and nothing went to
//! the dead letters.
//!
//! Contacts are recognised by what the source knows: a web submission by
//! its idempotency key (`web:<form>:<Idempotency-Key>`), an e-mail by its
//! Message-ID. An unacknowledged submission may be stored (the 202 was
//! lost with the process), but at most once, and then routed once.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, SystemTime},
};

use async_nats::jetstream;
use guichet_core::{
    bus::subjects,
    proto::v1::{Contact, DeadLetter, Routed, contact::Details},
};
use guichet_harness::streams::{StoredMessage, read_all};
use prost::Message;

/// How long a read of a whole stream may take (a few thousand messages).
const READ_WITHIN: Duration = Duration::from_secs(60);

/// One thing the source was told was received (or might have been).
#[derive(Debug, Clone)]
pub struct Expected {
    /// The idempotency key (web) or Message-ID (mail).
    pub source_key: String,
    /// Acknowledged: a 202, or an e-mail moved out of the inbox.
    pub acknowledged: bool,
    /// The contact id the 202 gave, to compare with what is stored.
    pub contact_id: Option<String>,
}

/// What the streams hold, indexed.
pub struct Holdings {
    /// Source key → contacts stored under it, with when they were stored.
    pub intake: BTreeMap<String, Vec<(String, SystemTime)>>,
    /// Contact id → how many `Routed` carry it.
    pub routed: BTreeMap<String, usize>,
    /// Contact id (of the dead-lettered INTAKE message) → the reasons given.
    pub dead_letters: BTreeMap<String, Vec<String>>,
    pub undecodable: usize,
}

impl Holdings {
    /// Reads INTAKE, ROUTED and DEADLETTER.
    pub async fn read(js: &jetstream::Context) -> Result<Self, String> {
        let mut holdings = Self {
            intake: BTreeMap::new(),
            routed: BTreeMap::new(),
            dead_letters: BTreeMap::new(),
            undecodable: 0,
        };
        for StoredMessage { payload, .. } in read_all(js, subjects::DEADLETTER_STREAM, READ_WITHIN).await? {
            let letter = DeadLetter::decode(payload.as_slice()).unwrap_or_default();
            let id = Contact::decode(letter.payload.as_slice())
                .map(|c| c.id)
                .unwrap_or_else(|_| format!("(undecodable, {})", letter.original_subject));
            holdings.dead_letters.entry(id).or_default().push(letter.reason);
        }
        for StoredMessage { payload, published, .. } in read_all(js, subjects::INTAKE_STREAM, READ_WITHIN).await? {
            match Contact::decode(payload.as_slice()) {
                Ok(contact) => {
                    let key = match &contact.details {
                        Some(Details::Email(email)) => email.message_id.clone(),
                        _ => contact.idempotency_key.clone(),
                    };
                    holdings.intake.entry(key).or_default().push((contact.id, published));
                }
                Err(_) => holdings.undecodable += 1,
            }
        }
        for StoredMessage { payload, .. } in read_all(js, subjects::ROUTED_STREAM, READ_WITHIN).await? {
            match Routed::decode(payload.as_slice()) {
                Ok(Routed {
                    contact: Some(contact), ..
                }) => *holdings.routed.entry(contact.id).or_insert(0) += 1,
                _ => holdings.undecodable += 1,
            }
        }
        Ok(holdings)
    }

    /// Every stored contact has been routed or dead-lettered.
    pub fn settled(&self) -> bool {
        self.intake
            .values()
            .flatten()
            .all(|(id, _)| self.routed.contains_key(id) || self.dead_letters.contains_key(id))
    }

    /// When each stored contact of `keys` was stored.
    pub fn stored_at<'a>(&'a self, keys: impl Iterator<Item = &'a str>) -> Vec<SystemTime> {
        keys.filter_map(|k| self.intake.get(k))
            .flatten()
            .map(|(_, at)| *at)
            .collect()
    }
}

/// Reads the streams until every stored contact is routed, at most `within`.
pub async fn settle(js: &jetstream::Context, within: Duration) -> Result<Holdings, String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        // A read can fail while a cluster still settles (a request to a
        // node that is catching up times out): read again until the end.
        match Holdings::read(js).await {
            Ok(holdings) if holdings.settled() || tokio::time::Instant::now() > deadline => return Ok(holdings),
            Err(e) if tokio::time::Instant::now() > deadline => return Err(e),
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The judgement of one run.
#[derive(Debug, Default, Clone)]
pub struct Verdict {
    pub acknowledged: usize,
    /// Acknowledged contacts missing from INTAKE or ROUTED (or stored
    /// under another contact id than the one acknowledged).
    pub lost: Vec<String>,
    /// Source keys stored more than once, contacts routed more than once.
    pub duplicates: Vec<String>,
    /// Anything else wrong: unrouted contacts, dead letters, strangers.
    pub problems: Vec<String>,
}

/// Compares what sources were told with what the streams hold.
pub fn judge(expected: &[Expected], holdings: &Holdings) -> Verdict {
    let mut verdict = Verdict::default();
    let known: BTreeSet<&str> = expected.iter().map(|e| e.source_key.as_str()).collect();
    let acknowledged: BTreeSet<&str> = expected
        .iter()
        .filter(|e| e.acknowledged)
        .map(|e| e.source_key.as_str())
        .collect();
    for e in expected {
        let stored = holdings
            .intake
            .get(&e.source_key)
            .map(Vec::as_slice)
            .unwrap_or_default();
        if e.acknowledged {
            verdict.acknowledged += 1;
            match stored {
                [] => verdict
                    .lost
                    .push(format!("{}: acknowledged, not in INTAKE", e.source_key)),
                [(id, _), ..] if e.contact_id.as_ref().is_some_and(|acked| acked != id) => verdict.lost.push(format!(
                    "{}: acknowledged as {}, INTAKE holds {id}",
                    e.source_key,
                    e.contact_id.as_deref().unwrap_or_default()
                )),
                [(id, _), ..] if !holdings.routed.contains_key(id) => {
                    let why = if holdings.dead_letters.contains_key(id) {
                        "dead-lettered"
                    } else {
                        "not routed"
                    };
                    verdict
                        .lost
                        .push(format!("{}: contact {id} in INTAKE, {why}", e.source_key));
                }
                _ => {}
            }
        }
        if stored.len() > 1 {
            verdict
                .duplicates
                .push(format!("{}: {} times in INTAKE", e.source_key, stored.len()));
        }
    }
    for (key, stored) in &holdings.intake {
        if !known.contains(key.as_str()) {
            verdict.problems.push(format!("{key}: in INTAKE, not sent by the load"));
        }
        for (id, _) in stored {
            match holdings.routed.get(id) {
                Some(1) => {}
                Some(n) => verdict.duplicates.push(format!("{key}: contact {id} routed {n} times")),
                // Acknowledged ones are counted lost above.
                None if acknowledged.contains(key.as_str()) => {}
                None => verdict
                    .problems
                    .push(format!("{key}: contact {id} stored (unacknowledged), never routed")),
            }
        }
    }
    let stored_ids: BTreeSet<&str> = holdings.intake.values().flatten().map(|(id, _)| id.as_str()).collect();
    for id in holdings.routed.keys().filter(|id| !stored_ids.contains(id.as_str())) {
        verdict.problems.push(format!("contact {id} routed, not in INTAKE"));
    }
    if !holdings.dead_letters.is_empty() {
        let routed_too = holdings
            .dead_letters
            .keys()
            .filter(|id| holdings.routed.contains_key(*id))
            .count();
        let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
        for reason in holdings.dead_letters.values().flatten() {
            *reasons.entry(reason.as_str()).or_insert(0) += 1;
        }
        verdict.problems.push(format!(
            "{} contact(s) dead-lettered ({routed_too} of them routed as well), reasons: {reasons:?}",
            holdings.dead_letters.len()
        ));
    }
    if holdings.undecodable > 0 {
        verdict.problems.push(format!(
            "{} undecodable message(s) in INTAKE/ROUTED",
            holdings.undecodable
        ));
    }
    verdict
}

/// The longest time within `[start, end]` without an acknowledgment, the
/// acknowledgments being at `times` (those after `end` close a gap open
/// at `end`: an outage at the end lasts until service came back).
pub fn longest_gap(start: SystemTime, end: SystemTime, mut times: Vec<SystemTime>) -> Duration {
    times.sort();
    let mut longest = Duration::ZERO;
    let mut previous = start;
    for t in times.into_iter().filter(|t| *t >= start) {
        longest = longest.max(t.duration_since(previous).unwrap_or_default());
        previous = t;
        if t >= end {
            return longest;
        }
    }
    longest.max(end.duration_since(previous).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn the_longest_gap_counts_the_edges_and_an_outage_past_the_end() {
        let gap = |times: &[u64]| longest_gap(at(1000), at(2000), times.iter().map(|t| at(*t)).collect());
        assert_eq!(gap(&[]), Duration::from_millis(1000));
        assert_eq!(gap(&[1100, 1200, 1900]), Duration::from_millis(700));
        assert_eq!(gap(&[1300, 1400]), Duration::from_millis(600));
        assert_eq!(gap(&[1100, 1200, 2500, 2600]), Duration::from_millis(1300));
        assert_eq!(gap(&[500, 1050, 1100]), Duration::from_millis(900));
    }

    fn holdings(intake: &[(&str, &str)], routed: &[&str]) -> Holdings {
        let mut h = Holdings {
            intake: BTreeMap::new(),
            routed: BTreeMap::new(),
            dead_letters: BTreeMap::new(),
            undecodable: 0,
        };
        for (key, id) in intake {
            h.intake
                .entry((*key).to_owned())
                .or_default()
                .push(((*id).to_owned(), at(0)));
        }
        for id in routed {
            *h.routed.entry((*id).to_owned()).or_insert(0) += 1;
        }
        h
    }

    fn acked(key: &str, id: &str) -> Expected {
        Expected {
            source_key: key.into(),
            acknowledged: true,
            contact_id: Some(id.into()),
        }
    }

    #[test]
    fn the_verdict_sees_losses_duplicates_and_strangers() {
        let unacked = Expected {
            source_key: "k3".into(),
            acknowledged: false,
            contact_id: None,
        };
        let expected = [acked("k1", "c1"), acked("k2", "c2"), unacked];
        let clean = judge(&expected, &holdings(&[("k1", "c1"), ("k2", "c2")], &["c1", "c2"]));
        assert!(clean.lost.is_empty() && clean.duplicates.is_empty() && clean.problems.is_empty());
        assert_eq!(clean.acknowledged, 2);

        let lost = judge(&expected, &holdings(&[("k1", "c1")], &["c1"]));
        assert_eq!(lost.lost.len(), 1, "{lost:?}");
        let unrouted = judge(&expected, &holdings(&[("k1", "c1"), ("k2", "c2")], &["c1"]));
        assert_eq!(unrouted.lost.len(), 1, "{unrouted:?}");
        let other_id = judge(&expected, &holdings(&[("k1", "c1"), ("k2", "c9")], &["c1", "c9"]));
        assert_eq!(other_id.lost.len(), 1, "{other_id:?}");

        let twice = judge(
            &expected,
            &holdings(&[("k1", "c1"), ("k1", "c1b"), ("k2", "c2")], &["c1", "c1b", "c2"]),
        );
        assert_eq!(twice.duplicates.len(), 1, "{twice:?}");
        let routed_twice = judge(&expected, &holdings(&[("k1", "c1"), ("k2", "c2")], &["c1", "c2", "c2"]));
        assert_eq!(routed_twice.duplicates.len(), 1, "{routed_twice:?}");

        let stranger = judge(
            &expected,
            &holdings(&[("k1", "c1"), ("k2", "c2"), ("zz", "c7")], &["c1", "c2", "c7"]),
        );
        assert_eq!(stranger.problems.len(), 1, "{stranger:?}");
        let unacked_unrouted = judge(
            &expected,
            &holdings(&[("k1", "c1"), ("k2", "c2"), ("k3", "c3")], &["c1", "c2"]),
        );
        assert_eq!(unacked_unrouted.problems.len(), 1, "{unacked_unrouted:?}");
    }
}
