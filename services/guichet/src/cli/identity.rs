//! `guichet identity rekey`: moves the identity bucket to the configured
//! `privacy.pseudonym_key` (see `guichet_router::rekey`).

use std::path::Path;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum IdentityCommand {
    /// Migrate the identity bucket's keys to `privacy.pseudonym_key`.
    /// Safe to interrupt and to run again; stop the routers meanwhile.
    Rekey {
        /// What the existing keys were written with: `plain-hash` (plain
        /// SHA-256, before keyed pseudonyms existed).
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
            if from_key != "plain-hash" {
                // A previous HMAC key cannot be undone from the bucket
                // alone (that is the point of a keyed hash): rotation
                // would need the identifiers in clear, from the streams.
                anyhow::bail!(
                    "--from-key {from_key}: only `plain-hash` is supported; rotating from a previous key is not implemented"
                );
            }
            let keys = super::load_config(config_path)?.pseudonymizer()?;
            let bus = super::connect_bus(config_path).await?;
            let report = guichet_router::rekey::rekey_plain(&bus, &keys, limit).await?;
            println!("identity keys migrated: {}", report.keys_migrated);
            println!("usager records updated: {}", report.records_updated);
            if report.keys_left > 0 {
                println!("plain keys left: {} (run the command again)", report.keys_left);
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
