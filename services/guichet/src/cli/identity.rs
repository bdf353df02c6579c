//! `guichet identity rekey`: moves the identity bucket to the configured
//! `privacy.pseudonym_key` (see `guichet_router::rekey`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use guichet_core::{privacy::Pseudonymizer, secret::Secret};
use guichet_router::rekey::OldKeys;

#[derive(Debug, Subcommand)]
pub enum IdentityCommand {
    /// Migrate the identity bucket's keys to `privacy.pseudonym_key`.
    /// Safe to interrupt and to run again; stop the routers meanwhile.
    Rekey {
        /// What the existing keys were written with: `plain-hash` (plain
        /// SHA-256, before keyed pseudonyms existed), or the file holding
        /// the previous `privacy.pseudonym_key` (rotation: successors are
        /// found from the identifiers of the routed contacts in the journal).
        #[arg(long)]
        from_key: String,
        /// Stop after migrating this many keys (the records pass then
        /// waits for a run without limit).
        #[arg(long)]
        limit: Option<usize>,
    },
}

pub async fn run(config_path: &Path, command: IdentityCommand) -> anyhow::Result<()> {
    match command {
        IdentityCommand::Rekey { from_key, limit } => {
            let from = if from_key == "plain-hash" {
                OldKeys::PlainHash
            } else {
                let secret = Secret::File {
                    file: PathBuf::from(&from_key),
                }
                .resolve("--from-key")?;
                OldKeys::Key(Pseudonymizer::new(secret.as_bytes()).context("--from-key: the previous key")?)
            };
            let keys = super::load_config(config_path)?.pseudonymizer()?;
            let bus = super::connect_bus(config_path).await?;
            let report = guichet_router::rekey::rekey(&bus, &keys, &from, limit).await?;
            println!("identity keys migrated: {}", report.keys_migrated);
            println!("usager records updated: {}", report.records_updated);
            if report.keys_left > 0 {
                println!("old keys left: {} (run the command again)", report.keys_left);
            }
            if report.keys_unknown > 0 {
                println!(
                    "old keys not migrated: {} (no routed contact of theirs left in the journal; \
                     those people will be new usagers at their next contact)",
                    report.keys_unknown
                );
            }
            for (plain, keyed) in &report.conflicts {
                println!(
                    "conflict: an identifier of {plain} was already claimed by {keyed}; review, then `guichet usager merge` if they are one person"
                );
            }
        }
    }
    Ok(())
}
