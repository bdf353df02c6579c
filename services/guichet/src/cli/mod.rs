//! The command line: one module per subcommand.

mod rules;
mod run;

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
    /// The routing rules: check a file, dry-run it on sample contacts.
    #[command(subcommand)]
    Rules(rules::RulesCommand),
}

pub async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => run::run(&cli.config, args).await,
        Command::CheckConfig => {
            load_config(&cli.config)?;
            println!("{}: configuration is valid", cli.config.display());
            Ok(())
        }
        Command::Rules(command) => rules::run(&cli.config, command).await,
    }
}

/// Loads and validates the configuration, with the file in the error.
pub fn load_config(path: &std::path::Path) -> anyhow::Result<Config> {
    Config::load(path).context("invalid configuration")
}
