//! `guichet rules push FILE`, `guichet rules history`,
//! `guichet rules rollback REV`: the rules revisions in the config bucket.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum RulesStoreCommand {
    /// Validate FILE and make it the rules of every running router (a new
    /// revision; routers pick it up live).
    Push {
        file: PathBuf,
        /// First replay this period (e.g. 30d) with FILE and show how
        /// decisions would change, then ask before pushing.
        #[arg(long, value_parser = super::rules_replay::parse_duration)]
        replay: Option<std::time::Duration>,
        /// With --replay: push without asking.
        #[arg(long, requires = "replay")]
        yes: bool,
    },
    /// List the stored rules revisions, oldest first.
    History,
    /// Push the text of an older revision again (validated) as a new one.
    Rollback {
        /// The revision, as listed by `guichet rules history`.
        revision: u64,
    },
}

pub async fn run(config_path: &Path, command: RulesStoreCommand) -> anyhow::Result<()> {
    let config = super::load_config(config_path)?;
    let key = config.router.rules_key.clone();
    let bus = super::connect_bus(config_path).await?;
    match command {
        RulesStoreCommand::Push { file, replay, yes } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            if let Some(since) = replay {
                let rules = super::rules::load(&file)?;
                if !super::rules_replay::confirm_push(&bus, &rules, since, yes).await? {
                    anyhow::bail!("not pushed: nothing changed");
                }
            }
            let pushed =
                guichet_router::live::push(&bus, &key, &text, &file.display().to_string(), &super::revisions::who())
                    .await?;
            println!(
                "pushed {} as rules revision {} (sha256 {}); running routers switch to it now",
                file.display(),
                pushed.revision,
                &pushed.sha256[..12]
            );
            println!("  service queues: {}", pushed.services.join(", "));
        }
        RulesStoreCommand::History => {
            let revisions = guichet_router::live::history(&bus, &key).await?;
            if revisions.is_empty() {
                println!("no rules pushed yet under `{key}`: routers send every contact to manual qualification");
            }
            super::revisions::print_history(&revisions);
        }
        RulesStoreCommand::Rollback { revision } => {
            let pushed = guichet_router::live::rollback(&bus, &key, revision, &super::revisions::who()).await?;
            println!(
                "rolled back: the text of revision {revision} is now revision {}; running routers switch to it now",
                pushed.revision
            );
        }
    }
    Ok(())
}
