//! `guichet indicators rebuild` and `guichet stats`: the console's read
//! model from a terminal.

use std::path::Path;

use anyhow::Context;
use chrono::{Duration, NaiveDate, Utc};
use clap::{Args, Subcommand};
use guichet_console::{Console, Filter, Granularity, ToTables};

#[derive(Debug, Subcommand)]
pub enum IndicatorsCommand {
    /// Empty the read model and project every stream again from its first
    /// message (after a schema change, or to check the tables). Stop the
    /// `console` service first: both would otherwise project at once.
    Rebuild,
}

pub async fn run(config_path: &Path, command: IndicatorsCommand) -> anyhow::Result<()> {
    match command {
        IndicatorsCommand::Rebuild => {
            let config = super::load_config(config_path)?;
            let bus = super::connect_bus(config_path).await?;
            let progress = guichet_console::rebuild(&bus, &config.console)
                .await
                .context("rebuilding the console's read model")?;
            println!(
                "read model rebuilt: {} routed contacts, {} events, {} dead letters projected",
                progress.routed, progress.events, progress.dead_letters
            );
            Ok(())
        }
    }
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// First day counted (YYYY-MM-DD, Europe/Paris); default 30 days before `--to`.
    #[arg(long)]
    pub from: Option<NaiveDate>,
    /// Last day counted, included; default today.
    #[arg(long)]
    pub to: Option<NaiveDate>,
    /// day, week or month.
    #[arg(long, default_value = "week")]
    pub granularity: Granularity,
    #[arg(long)]
    pub service: Option<String>,
    /// email, web, phone, counter or postal.
    #[arg(long)]
    pub channel: Option<String>,
    #[arg(long)]
    pub typology: Option<String>,
    #[arg(long)]
    pub site: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// Prints the overview's numbers from the read model (what the console shows).
pub async fn stats(config_path: &Path, args: StatsArgs) -> anyhow::Result<()> {
    let config = super::load_config(config_path)?;
    let store = guichet_console::open(&config.console)
        .await
        .context("opening the console's read model")?;
    let to = args.to.unwrap_or_else(|| Utc::now().date_naive());
    let filter = Filter {
        from: args.from.unwrap_or(to - Duration::days(30)),
        to,
        granularity: args.granularity,
        service: args.service,
        channel: args.channel,
        typology: args.typology,
        site: args.site,
    };
    let overview = Console::new(store.clone()).overview(&filter).await?;
    store.close().await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&overview)?);
        return Ok(());
    }
    println!("{} → {} ({:?})", filter.from, filter.to, filter.granularity);
    for table in overview.tables() {
        println!("\n{}", table.to_text());
    }
    Ok(())
}
