//! Fault injection: real processes on loopback, killed under load.
//!
//! Each run starts the real `guichet` binary (see [`binary`]), real
//! nats-server from `deploy/nats` (one node with `sync_interval: always`,
//! or the 3-node R3 cluster) and, for mail, a real Dovecot; puts load on
//! it as a forms platform (signed submissions retried with the same
//! idempotency key) or a mail server (APPENDs) would; strikes one kind of
//! fault at times drawn from a seed; then judges from the streams
//! themselves ([`check`]) that every acknowledged contact is stored once in
//! INTAKE and routed once in ROUTED, and measures the longest time without
//! an acknowledgment.
//!
//! The same seed draws the same faults (times, durations, nodes); what the
//! processes do in between is the machine's. `tests/short.rs` runs one
//! short run of each kind with a fixed seed; `scripts/faults` runs the long
//! randomized campaign (`src/main.rs`).

pub mod binary;
pub mod check;
pub mod gateway;
pub mod hostile;
pub mod mail_load;
mod scenarios;
pub mod web_load;

use std::{fmt, str::FromStr, time::Duration};

/// The kinds of fault, one scenario each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// SIGKILL of the guichet process under web load, started again.
    Gateway,
    /// SIGKILL of the single nats-server (`sync_interval: always`).
    Nats,
    /// SIGKILL of Dovecot under mail load.
    Dovecot,
    /// 3-node R3 cluster: the INTAKE leader killed and restarted, then another node.
    Cluster,
    /// Slow and oversized unauthenticated clients beside the signed load.
    Hostile,
}

impl Kind {
    pub const ALL: [Kind; 5] = [Kind::Gateway, Kind::Nats, Kind::Dovecot, Kind::Cluster, Kind::Hostile];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Gateway => "gateway",
            Kind::Nats => "nats",
            Kind::Dovecot => "dovecot",
            Kind::Cluster => "cluster",
            Kind::Hostile => "hostile",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Kind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Kind::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            format!("unknown fault kind `{s}` (expected one of: gateway, nats, dovecot, cluster, hostile)")
        })
    }
}

/// How long a run's load lasts; the faults are drawn inside it.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub load: Duration,
    /// Submissions (or e-mails) per second.
    pub rate: f64,
}

impl Pace {
    /// The `cargo test` version: a run of each kind in about 20 s.
    pub const SHORT: Pace = Pace {
        load: Duration::from_secs(10),
        rate: 40.0,
    };
    /// The campaign's: a run in 25-40 s.
    pub const CAMPAIGN: Pace = Pace {
        load: Duration::from_secs(18),
        rate: 50.0,
    };
}

/// What one run found.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub kind: Kind,
    pub seed: u64,
    pub acknowledged: usize,
    pub lost: Vec<String>,
    pub duplicates: Vec<String>,
    /// Other failures: unrouted or unacknowledged contacts, dead letters,
    /// a valid submission refused, a process that would not start.
    pub problems: Vec<String>,
    /// The faults as they struck ("killed nats-2 (leader) at 3.1 s for 1.2 s").
    pub faults: Vec<String>,
    /// Facts worth printing that judge nothing (hostile clients' answers).
    pub notes: Vec<String>,
    pub longest_unavailability: Duration,
    pub took: Duration,
}

impl RunReport {
    pub fn passed(&self) -> bool {
        self.lost.is_empty() && self.duplicates.is_empty() && self.problems.is_empty()
    }

    /// Everything wrong, one line each (at most `most` lines per list).
    pub fn failures(&self, most: usize) -> String {
        let mut out = Vec::new();
        for (what, list) in [
            ("lost", &self.lost),
            ("duplicate", &self.duplicates),
            ("problem", &self.problems),
        ] {
            for line in list.iter().take(most) {
                out.push(format!("  {what}: {line}"));
            }
            if list.len() > most {
                out.push(format!("  … and {} more {what}", list.len() - most));
            }
        }
        out.join("\n")
    }
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{kind:<8} seed={seed:<20} acknowledged={ack:<5} lost={lost} duplicates={dup} problems={prob} \
             longest_unavailability={unavail:.2}s took={took:.0}s\n  faults: {faults}",
            kind = self.kind,
            seed = self.seed,
            ack = self.acknowledged,
            lost = self.lost.len(),
            dup = self.duplicates.len(),
            prob = self.problems.len(),
            unavail = self.longest_unavailability.as_secs_f64(),
            took = self.took.as_secs_f64(),
            faults = self.faults.join("; "),
        )?;
        for note in &self.notes {
            write!(f, "\n  {note}")?;
        }
        Ok(())
    }
}

/// Runs one scenario of `kind` with faults drawn from `seed`. An error
/// means the run could not take place (a server that would not start),
/// which is not a verdict on guichet.
pub async fn run(kind: Kind, seed: u64, pace: Pace) -> Result<RunReport, String> {
    scenarios::run(kind, seed, pace).await
}

/// The seed of run `n` of a campaign started with `seed` (SplitMix64: runs
/// get unrelated seeds, and any run can be replayed alone with its own).
pub fn derive_seed(seed: u64, n: u64) -> u64 {
    let mut z = seed.wrapping_add(n.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
