//! `guichet usager merge KEEP OTHER`, `guichet usager forget ID`, and the
//! review of identity conflicts: `guichet usager conflicts`,
//! `guichet usager resolve ID merge|distinct`.

use std::path::Path;

use clap::{Subcommand, ValueEnum};
use guichet_router::{admin::Decision, identity_conflicts::ConflictRecord};
use serde_json::json;

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
    /// The identity conflicts waiting for a decision, oldest first: id,
    /// the two usager ids, the identifier kinds and levels designating
    /// each, when, how many contacts met them. Ids only, no personal data.
    Conflicts {
        /// One JSON object per line, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Decide a conflict: `merge` (one person: the other usager is merged
    /// into the one the router kept, as `usager merge` does) or
    /// `distinct` (two people: the pair is never raised again).
    Resolve {
        /// The conflict id, as `usager conflicts` lists it.
        id: String,
        decision: DecisionArg,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DecisionArg {
    Merge,
    Distinct,
}

fn conflict_json(c: &ConflictRecord) -> serde_json::Value {
    json!({
        "id": c.id,
        "kept": c.kept,
        "other": c.other,
        "first_at": c.first_at,
        "last_at": c.last_at,
        "contacts": c.contacts,
        "recent_contacts": c.recent_contacts,
    })
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
            if report.conflicts_removed > 0 {
                println!("  identity conflicts naming them removed: {}", report.conflicts_removed);
            }
        }
        UsagerCommand::Conflicts { json } => {
            let open = guichet_router::admin::conflicts(&bus).await?;
            if json {
                for c in &open {
                    println!("{}", conflict_json(c));
                }
            } else {
                println!("{} open identity conflict(s)", open.len());
                for c in &open {
                    println!("{}", c.id);
                    for (role, side) in [("kept ", &c.kept), ("other", &c.other)] {
                        println!(
                            "  {role} {}  by {} ({})",
                            side.usager_id,
                            side.kinds.join(", "),
                            side.level
                        );
                    }
                    println!(
                        "  since {}, last {}, {} contact(s), latest {}",
                        c.first_at,
                        c.last_at,
                        c.contacts,
                        c.recent_contacts.last().map_or("-", String::as_str)
                    );
                }
            }
        }
        UsagerCommand::Resolve { id, decision } => {
            let decision = match decision {
                DecisionArg::Merge => Decision::Merge,
                DecisionArg::Distinct => Decision::Distinct,
            };
            let report = guichet_router::admin::resolve(&bus, &id, decision).await?;
            let c = &report.conflict;
            if report.already {
                println!(
                    "conflict {} was already resolved as {}; nothing changed",
                    c.id,
                    c.status.as_str()
                );
            } else {
                println!("conflict {} resolved as {}", c.id, c.status.as_str());
            }
            if let Some(merge) = &report.merge {
                println!("  merged {} into {}", merge.merged, merge.kept);
                println!("  identifiers re-pointed: {}", merge.identifiers_moved);
            } else if decision == Decision::Distinct {
                println!(
                    "  {} and {} are two people: the routers will not raise this conflict again",
                    c.kept.usager_id, c.other.usager_id
                );
            }
        }
    }
    Ok(())
}
