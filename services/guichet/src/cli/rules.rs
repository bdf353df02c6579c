//! `guichet rules check FILE` and `guichet rules test FILE SAMPLE.json…`:
//! the ops workflow that needs no broker. Validation prints every error
//! with its line and column; the dry run shows, per sample contact, the
//! deciding rule, why, and the due date.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use guichet_core::proto::v1::{Contact, Priority};
use guichet_rules::RuleSet;

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Validate a rules file: every error, as FILE:LINE:COLUMN: message.
    Check {
        /// The rules file (TOML), e.g. deploy/rules.example.toml.
        file: PathBuf,
    },
    /// Dry run: route sample contacts (proto3 JSON, as in deploy/samples)
    /// with a rules file, and print which rule decided, why, and the due date.
    Test {
        file: PathBuf,
        /// One or more contacts in proto3 JSON.
        #[arg(required = true)]
        samples: Vec<PathBuf>,
    },
    /// Replay a period's contacts with a rules file, routing nothing: how
    /// decisions would change (services, typologies, due dates, rules
    /// that never fire, example contact ids).
    Replay(super::rules_replay::ReplayArgs),
    /// push, history, rollback: the revisions stored for running routers.
    #[command(flatten)]
    Store(super::rules_store::RulesStoreCommand),
}

/// Runs a `guichet rules` subcommand. `check` and `test` read files only:
/// they need neither the configuration nor NATS.
pub async fn run(_config_path: &Path, command: RulesCommand) -> anyhow::Result<()> {
    match command {
        RulesCommand::Store(command) => super::rules_store::run(_config_path, command).await,
        RulesCommand::Replay(args) => super::rules_replay::run(_config_path, args).await,
        RulesCommand::Check { file } => {
            let rules = load(&file)?;
            println!(
                "{}: valid ({} services, {} rules, manual qualification by {})",
                file.display(),
                rules.services().len(),
                rules.len(),
                rules.manual_service()
            );
            Ok(())
        }
        RulesCommand::Test { file, samples } => {
            let rules = load(&file)?;
            for sample in &samples {
                let text =
                    std::fs::read_to_string(sample).with_context(|| format!("cannot read {}", sample.display()))?;
                let contact: Contact = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not a contact in proto3 JSON", sample.display()))?;
                print!("{}", describe(&rules, &sample.display().to_string(), &contact));
            }
            Ok(())
        }
    }
}

/// Reads and validates a rules file; on failure prints every error (one
/// `file:line:col: message` line each) on stderr.
pub fn load(file: &Path) -> anyhow::Result<RuleSet> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    RuleSet::parse(&text, &file.display().to_string()).map_err(|e| {
        eprintln!("{e}");
        let n = e.errors.len();
        anyhow::anyhow!(
            "{}: {n} error{} in the rules",
            file.display(),
            if n == 1 { "" } else { "s" }
        )
    })
}

fn describe(rules: &RuleSet, name: &str, contact: &Contact) -> String {
    let evaluation = rules.evaluate(contact);
    let received = contact.received_at.as_ref().and_then(guichet_core::proto::to_datetime);
    let mut out = String::new();
    let decision = match (&evaluation.rule_id, evaluation.rule_line) {
        (Some(id), Some(line)) => format!("rule `{id}` (line {line})"),
        (Some(id), None) => format!("rule `{id}`"),
        (None, _) => "no rule".to_owned(),
    };
    out.push_str(&format!("{name}: {decision} → service {}", evaluation.service));
    if !evaluation.typology.is_empty() {
        out.push_str(&format!(", typology {}", evaluation.typology));
    }
    out.push_str(&format!(", priority {}", priority(evaluation.priority)));
    if evaluation.discard {
        out.push_str(", DISCARDED");
    }
    if !evaluation.tags.is_empty() {
        out.push_str(&format!(", tags {}", evaluation.tags.join(" ")));
    }
    out.push('\n');
    for line in &evaluation.explanation {
        out.push_str(&format!("    - {line}\n"));
    }
    let received_at = received.unwrap_or_else(chrono::Utc::now);
    let due = rules.due(received_at, evaluation.deadline);
    out.push_str(&format!(
        "    received {}{}, due {} ({})\n",
        rules.calendar().local_time(received_at),
        if received.is_none() {
            " (no receivedAt in the sample: now)"
        } else {
            ""
        },
        rules.calendar().local_time(due.at),
        due.date_string(),
    ));
    out
}

fn priority(p: Priority) -> &'static str {
    match p {
        Priority::Low => "low",
        Priority::Normal | Priority::Unspecified => "normal",
        Priority::High => "high",
        Priority::Urgent => "urgent",
    }
}
