//! `guichet rules replay FILE`: what a candidate rules file would change
//! on the contacts of a period (logic in `guichet_router::rules_replay`).

use std::{io::Write, path::PathBuf, time::Duration};

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use clap::Args;
use guichet_router::rules_replay::{self, Period, Report};
use guichet_rules::RuleSet;

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The candidate rules file (TOML).
    pub file: PathBuf,
    #[command(flatten)]
    pub period: PeriodArgs,
    /// Only contacts decided for, or that would go to, this service
    /// (repeatable).
    #[arg(long = "service")]
    pub services: Vec<String>,
    /// The summary as one JSON object, for scripts.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PeriodArgs {
    /// The contacts received this long ago until now, e.g. 30d, 12h.
    #[arg(long, value_parser = parse_duration, conflicts_with_all = ["from", "to"])]
    pub since: Option<Duration>,
    /// The first day or instant (YYYY-MM-DD or RFC 3339).
    #[arg(long, value_parser = parse_instant)]
    pub from: Option<DateTime<Utc>>,
    /// The end, excluded (YYYY-MM-DD or RFC 3339); now when absent.
    #[arg(long, value_parser = parse_instant)]
    pub to: Option<DateTime<Utc>>,
}

/// The default period when none is given.
const DEFAULT_SINCE: Duration = Duration::from_secs(30 * 86_400);

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime_serde::re::humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration such as 30d or 12h: {e}"))
}

fn parse_instant(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(at) = DateTime::parse_from_rfc3339(s) {
        return Ok(at.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
        .ok_or_else(|| format!("`{s}` is neither a date (YYYY-MM-DD) nor an RFC 3339 instant"))
}

impl PeriodArgs {
    pub fn period(&self, services: Vec<String>) -> anyhow::Result<Period> {
        let now = Utc::now();
        let (from, to) = match (self.since, self.from, self.to) {
            (Some(since), _, _) => (
                now - chrono::Duration::from_std(since).context("--since is too long")?,
                now,
            ),
            (None, Some(from), to) => (from, to.unwrap_or(now)),
            (None, None, Some(_)) => anyhow::bail!("--to needs --from (or use --since)"),
            (None, None, None) => (now - chrono::Duration::from_std(DEFAULT_SINCE)?, now),
        };
        Ok(Period { from, to, services })
    }
}

/// Loads the period from the bus and compares it with `rules`.
pub async fn report(bus: &guichet_core::Bus, rules: &RuleSet, period: &Period) -> anyhow::Result<Report> {
    Ok(rules_replay::replay(bus, rules, period).await?)
}

pub fn print(report: &Report, period: &Period) {
    println!(
        "replayed {} contacts received from {} to {} ({} from INTAKE, {} from ROUTED's copies; {} follow-ups and copies not compared)",
        report.contacts,
        period.from.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        period.to.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        report.from_intake,
        report.contacts - report.from_intake,
        report.joined
    );
    println!("{} would be decided differently", report.changed);
    println!("services (before → after):");
    for (change, n) in &report.services {
        println!("  {n:>7}  {change}");
    }
    if !report.typologies.is_empty() {
        println!("typologies (before → after):");
        for (change, n) in &report.typologies {
            println!("  {n:>7}  {change}");
        }
    }
    if !report.due_shifts.is_empty() {
        println!("due dates moved:");
        for (days, n) in &report.due_shifts {
            println!("  {n:>7}  {days:+} day(s)");
        }
    }
    if !report.never_fired.is_empty() {
        println!("rules that would never fire: {}", report.never_fired.join(", "));
    }
    if !report.examples.is_empty() {
        println!("examples (guichet explain ID):");
        for (change, ids) in &report.examples {
            println!("  {change}: {}", ids.join(" "));
        }
    }
}

/// `rules push --replay`: shows the summary, then asks (unless `yes`).
pub async fn confirm_push(
    bus: &guichet_core::Bus,
    rules: &RuleSet,
    since: Duration,
    yes: bool,
) -> anyhow::Result<bool> {
    let period = PeriodArgs {
        since: Some(since),
        from: None,
        to: None,
    }
    .period(Vec::new())?;
    print(&report(bus, rules, &period).await?, &period);
    if yes {
        return Ok(true);
    }
    print!("push these rules? [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

pub async fn run(config_path: &std::path::Path, args: ReplayArgs) -> anyhow::Result<()> {
    let rules = super::rules::load(&args.file)?;
    let period = args.period.period(args.services)?;
    let bus = super::connect_bus(config_path).await?;
    let report = report(&bus, &rules, &period).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print(&report, &period);
    }
    Ok(())
}
