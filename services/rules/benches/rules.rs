//! `scripts/bench rules`: the cost of rule evaluation per contact with 10
//! and with 5,000 rules, on the same contacts, beside a baseline measured
//! in the same run: decoding the contact from protobuf, the least work a
//! router does for every message. Prints contacts/s, p50/p99 and ratios.

use std::time::{Duration, Instant};

use guichet_core::proto::v1::Contact;
use guichet_rules::{RuleSet, testing};
use prost::Message;

const CONTACTS: usize = 2_000;
const ROUNDS: usize = 10;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Runs `f` over every contact ROUNDS times; returns (contacts/s, p50, p99).
fn measure(contacts: &[Vec<u8>], mut f: impl FnMut(&[u8]) -> usize) -> (f64, Duration, Duration) {
    let mut sink = 0usize;
    // Warm-up.
    for c in contacts {
        sink = sink.wrapping_add(f(c));
    }
    let start = Instant::now();
    for _ in 0..ROUNDS {
        for c in contacts {
            sink = sink.wrapping_add(f(c));
        }
    }
    let rate = (ROUNDS * contacts.len()) as f64 / start.elapsed().as_secs_f64();
    let mut each: Vec<Duration> = contacts
        .iter()
        .map(|c| {
            let t = Instant::now();
            sink = sink.wrapping_add(f(c));
            t.elapsed()
        })
        .collect();
    each.sort();
    std::hint::black_box(sink);
    (rate, percentile(&each, 0.5), percentile(&each, 0.99))
}

fn evaluate(rules: &RuleSet) -> impl FnMut(&[u8]) -> usize + '_ {
    move |bytes: &[u8]| {
        let contact = Contact::decode(bytes).unwrap_or_default();
        rules.evaluate(&contact).rules_examined
    }
}

fn main() {
    // The same contacts for every case: most carry the keyword of one rule
    // of the large file, some match nothing.
    let contacts: Vec<Vec<u8>> = (0..CONTACTS)
        .map(|i| testing::contact_for((i * 7) % 5_500).encode_to_vec())
        .collect();

    let t = Instant::now();
    let small = RuleSet::parse(&testing::generate_rules(10), "10 rules").expect("valid generated rules");
    let small_compile = t.elapsed();
    let t = Instant::now();
    let large = RuleSet::parse(&testing::generate_rules(5_000), "5000 rules").expect("valid generated rules");
    let large_compile = t.elapsed();

    let decode = |bytes: &[u8]| Contact::decode(bytes).map_or(0, |c| c.body.len());
    let (base, base50, base99) = measure(&contacts, decode);
    let (r10, p50_10, p99_10) = measure(&contacts, evaluate(&small));
    let (r5k, p50_5k, p99_5k) = measure(&contacts, evaluate(&large));
    let examined: usize = contacts
        .iter()
        .map(|b| {
            large
                .evaluate(&Contact::decode(b.as_slice()).unwrap_or_default())
                .rules_examined
        })
        .sum();

    println!("rules: evaluation per contact ({CONTACTS} contacts x {ROUNDS} rounds, one thread)");
    println!("  compile: 10 rules {small_compile:.2?}, 5000 rules {large_compile:.2?}");
    println!("  baseline  decode only          {base:>12.0} contacts/s  p50 {base50:>9.2?}  p99 {base99:>9.2?}");
    println!("  decode + evaluate, 10 rules    {r10:>12.0} contacts/s  p50 {p50_10:>9.2?}  p99 {p99_10:>9.2?}");
    println!("  decode + evaluate, 5000 rules  {r5k:>12.0} contacts/s  p50 {p50_5k:>9.2?}  p99 {p99_5k:>9.2?}");
    println!("  ratio 5000 rules / 10 rules: {:.2}", r5k / r10);
    println!("  ratio 5000 rules / decode-only baseline: {:.2}", r5k / base);
    println!(
        "  rules examined per contact with 5000 rules: {:.1} on average",
        examined as f64 / CONTACTS as f64
    );
}
