//! `guichet usager merge KEEP OTHER` and `guichet usager forget ID`.

use std::path::Path;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum UsagerCommand {
    /// Merge usager OTHER into KEEP (one person known under two ids):
    /// OTHER becomes an alias of KEEP, its identifiers point at KEEP, and
    /// KEEP's history covers both. Nothing is merged automatically.
    Merge {
        /// The usager id that stays.
        keep: String,
        /// The usager id merged into it.
        other: String,
    },
    /// Erase a usager (RGPD): their routed messages in the journal and
    /// the queues, their identity keys and records, their requests, and
    /// their files (attachments, raw e-mails) no other contact points at.
    Forget {
        /// The usager id (every id merged into it is erased too).
        id: String,
        /// Confirm the erasure without asking (it cannot be undone).
        #[arg(long)]
        yes: bool,
    },
}

pub async fn run(config_path: &Path, command: UsagerCommand) -> anyhow::Result<()> {
    let bus = super::connect_bus(config_path).await?;
    match command {
        UsagerCommand::Merge { keep, other } => {
            let report = guichet_router::admin::merge(&bus, &keep, &other).await?;
            if report.already_merged {
                println!(
                    "{} was already merged into {}; merge completed",
                    report.merged, report.kept
                );
            } else {
                println!("merged {} into {}", report.merged, report.kept);
            }
            println!("  identifiers re-pointed: {}", report.identifiers_moved);
            println!(
                "  {}'s history now covers: {}",
                report.kept,
                report.history_ids.join(", ")
            );
        }
        UsagerCommand::Forget { id, yes } => {
            if !yes {
                anyhow::bail!("forgetting {id} erases their history for good: run again with --yes to confirm");
            }
            let keys = super::load_config(config_path)?.pseudonymizer()?;
            let report = guichet_router::admin::forget(&bus, &keys, &id).await?;
            println!("forgot usager {}", report.usager_ids.join(", "));
            println!("  routed messages purged: {}", report.routed_messages_purged);
            println!("  notifications purged from OUTBOX: {}", report.outbox_messages_purged);
            println!(
                "  received contacts purged from INTAKE: {}",
                report.intake_messages_purged
            );
            println!("  dead letters removed: {}", report.dead_letters_removed);
            println!("  events naming them removed: {}", report.events_removed);
            println!("  identity keys removed: {}", report.identity_keys_removed);
            if report.identity_keys_kept > 0 {
                println!(
                    "  identity keys kept (listed in their record, but another usager's): {}",
                    report.identity_keys_kept
                );
            }
            println!("  requests removed: {}", report.requests_removed);
            println!("  index entries removed: {}", report.index_entries_removed);
            println!(
                "  files deleted: {} (kept, another contact has the same file: {})",
                report.files.deleted, report.files.kept_shared
            );
            if report.other_records_cleaned > 0 {
                println!(
                    "  other records that listed their identifiers, cleaned: {}",
                    report.other_records_cleaned
                );
            }
        }
    }
    Ok(())
}
