//! `faults`: the long randomized fault-injection campaign (`scripts/faults`).
//!
//! Runs N scenarios one after the other, cycling through the fault kinds
//! (or only `--kind`), each with a seed derived from `--seed`, prints each
//! run and then a table per kind, and exits 1 if any acknowledged contact
//! was lost or stored or routed twice, or a run found another failure.
//! A failing run is replayed alone with `--runs 1 --seed <its seed> --raw-seed`.

use std::{collections::BTreeMap, process::ExitCode, time::Duration};

use clap::Parser;
use guichet_faults::{Kind, Pace, RunReport, derive_seed};

#[derive(Debug, Parser)]
#[command(about = "Kill guichet, nats-server, Dovecot and cluster nodes under load; check the streams.")]
struct Args {
    /// Number of runs.
    #[arg(long, default_value_t = 20)]
    runs: u64,
    /// The campaign's seed; run n uses a seed derived from it.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Only this kind: gateway, nats, dovecot, cluster, hostile.
    #[arg(long)]
    kind: Option<Kind>,
    /// Use --seed itself as the first run's seed (to replay one run).
    #[arg(long)]
    raw_seed: bool,
    /// Seconds of load per run.
    #[arg(long, default_value_t = Pace::CAMPAIGN.load.as_secs())]
    load_seconds: u64,
}

#[derive(Default)]
struct Tally {
    runs: usize,
    failed: usize,
    acknowledged: usize,
    lost: usize,
    duplicates: usize,
    problems: usize,
    longest: Duration,
    longest_seed: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(campaign(args))
}

async fn campaign(args: Args) -> ExitCode {
    let pace = Pace {
        load: Duration::from_secs(args.load_seconds),
        ..Pace::CAMPAIGN
    };
    let started = std::time::Instant::now();
    let mut tallies: BTreeMap<Kind, Tally> = BTreeMap::new();
    let mut errors = 0;
    println!(
        "fault campaign: {} runs, seed {}, {} s of load per run",
        args.runs, args.seed, args.load_seconds
    );
    for n in 0..args.runs {
        let kind = args.kind.unwrap_or(Kind::ALL[(n % Kind::ALL.len() as u64) as usize]);
        let seed = if args.raw_seed && n == 0 {
            args.seed
        } else {
            derive_seed(args.seed, n)
        };
        // A panic in a harness (a server that will not start) ends this
        // run, not the campaign.
        let outcome = tokio::spawn(guichet_faults::run(kind, seed, pace)).await;
        let report: RunReport = match outcome {
            Ok(Ok(report)) => report,
            Ok(Err(e)) => {
                errors += 1;
                println!("run {}/{}: {kind} seed={seed} could not run: {e}", n + 1, args.runs);
                continue;
            }
            Err(e) => {
                errors += 1;
                println!("run {}/{}: {kind} seed={seed} panicked: {e}", n + 1, args.runs);
                continue;
            }
        };
        println!("run {}/{}: {report}", n + 1, args.runs);
        if !report.passed() {
            println!("{}", report.failures(10));
        }
        let tally = tallies.entry(kind).or_default();
        tally.runs += 1;
        tally.failed += usize::from(!report.passed());
        tally.acknowledged += report.acknowledged;
        tally.lost += report.lost.len();
        tally.duplicates += report.duplicates.len();
        tally.problems += report.problems.len();
        if report.longest_unavailability >= tally.longest {
            tally.longest = report.longest_unavailability;
            tally.longest_seed = seed;
        }
    }
    println!();
    println!(
        "| kind | runs | failed | acknowledged | lost | duplicates | other problems | longest unavailability (seed) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (kind, t) in &tallies {
        println!(
            "| {kind} | {} | {} | {} | {} | {} | {} | {:.1} s ({}) |",
            t.runs,
            t.failed,
            t.acknowledged,
            t.lost,
            t.duplicates,
            t.problems,
            t.longest.as_secs_f64(),
            t.longest_seed
        );
    }
    println!(
        "\n{} runs in {:.0} min, seed {}{}",
        args.runs,
        started.elapsed().as_secs_f64() / 60.0,
        args.seed,
        if errors > 0 {
            format!(", {errors} could not run")
        } else {
            String::new()
        }
    );
    let failed = tallies.values().any(|t| t.failed > 0);
    if failed || errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
