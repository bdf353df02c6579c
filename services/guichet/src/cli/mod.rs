//! The command line: one module per subcommand.

mod console;
mod deadletter;
mod explain;
mod identity;
mod indicators;
mod queue;
mod request;
mod revisions;
mod rules;
mod rules_replay;
mod rules_store;
mod run;
mod templates;
mod usager;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use guichet::Config;

#[derive(Debug, Parser)]
#[command(
    name = "guichet",
    version,
    about = "guichet: the single front door of a town hall's citizen-relationship management",
    long_about = "Every contact (e-mail, web form, phone, counter, letter) becomes one normalized message on NATS JetStream, is qualified by ops-maintained rules and lands in the right service's queue with one usager id."
)]
pub struct Cli {
    /// The configuration file (TOML). Keys can be overridden by
    /// GUICHET__SECTION__KEY environment variables.
    #[arg(short, long, env = "GUICHET_CONFIG", default_value = "guichet.toml", global = true)]
    pub config: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway: some or all services in this process.
    Run(run::RunArgs),
    /// Check the configuration file and exit.
    #[command(name = "check-config")]
    CheckConfig,
    /// Usager identities: merge two ids of one person, erase a usager,
    /// review and resolve identity conflicts.
    #[command(subcommand)]
    Usager(usager::UsagerCommand),
    /// The identity bucket: migrate its keys to `privacy.pseudonym_key`.
    #[command(subcommand)]
    Identity(identity::IdentityCommand),
    /// Print why a contact was routed where it was.
    Explain(explain::ExplainArgs),
    /// Look at a service's queue as its back-office sees it.
    #[command(subcommand)]
    Queue(queue::QueueCommand),
    /// The request lifecycle: show, list, update (take, answer, close ...).
    #[command(subcommand)]
    Request(request::RequestCommand),
    /// The routing rules: check a file, dry-run it on sample contacts.
    #[command(subcommand)]
    Rules(rules::RulesCommand),
    /// What the router gave up on: list, show, replay, discard.
    #[command(subcommand)]
    Deadletter(deadletter::DeadletterCommand),
    /// The notification templates: check, preview, push, history, rollback.
    #[command(subcommand)]
    Templates(templates::TemplatesCommand),
    /// The console's read model: rebuild it from the streams.
    #[command(subcommand)]
    Indicators(indicators::IndicatorsCommand),
    /// Print the indicators (volumes, backlog, delays, mixes) of a period.
    Stats(indicators::StatsArgs),
    /// The web console: hash a local account's password.
    #[command(subcommand)]
    Console(console::ConsoleCommand),
}

pub async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => run::run(&cli.config, args).await,
        Command::CheckConfig => {
            load_config(&cli.config)?;
            println!("{}: configuration is valid", cli.config.display());
            Ok(())
        }
        Command::Usager(command) => usager::run(&cli.config, command).await,
        Command::Identity(command) => identity::run(&cli.config, command).await,
        Command::Explain(args) => explain::run(&cli.config, args).await,
        Command::Queue(command) => queue::run(&cli.config, command).await,
        Command::Request(command) => request::run(&cli.config, command).await,
        Command::Rules(command) => rules::run(&cli.config, command).await,
        Command::Deadletter(command) => deadletter::run(&cli.config, command).await,
        Command::Templates(command) => templates::run(&cli.config, command).await,
        Command::Indicators(command) => indicators::run(&cli.config, command).await,
        Command::Stats(args) => indicators::stats(&cli.config, args).await,
        Command::Console(command) => console::run(command),
    }
}

/// Loads and validates the configuration, with the file in the error.
pub fn load_config(path: &std::path::Path) -> anyhow::Result<Config> {
    Config::load(path).context("invalid configuration")
}

/// Connects to the configured NATS (topology ensured), for the operators'
/// commands that read or change the bus.
pub async fn connect_bus(path: &std::path::Path) -> anyhow::Result<guichet_core::Bus> {
    let config = load_config(path)?;
    let (urls, nats) = config.nats_client()?;
    guichet_core::Bus::start(
        &urls,
        &nats,
        &config.topology,
        &tokio_util::sync::CancellationToken::new(),
    )
    .await
    .with_context(|| format!("cannot reach NATS at {}", guichet_core::config::redact_urls(&urls)))
}
