//! `guichet request show|list|update`: the request lifecycle from the
//! command line, for operators (the same checks as the gRPC API, applied
//! directly on the bus; the client recorded is `cli`).

use std::path::Path;

use anyhow::{Context, bail};
use clap::Subcommand;
use guichet_core::{
    proto::v1::{ListRequestsRequest, Outcome, Transition},
    request::{parse_outcome, parse_transition},
};
use guichet_requests::{events, list, store, view};

#[derive(Debug, Subcommand)]
pub enum RequestCommand {
    /// Show one request: status, deadlines, contacts, history.
    Show {
        /// The reference, e.g. 2026-7K3F-9QXM.
        reference: String,
    },
    /// List a service's requests (not closed), earliest deadline first.
    List {
        #[arg(long)]
        service: String,
        /// Only those past a deadline without an answer.
        #[arg(long)]
        overdue: bool,
        #[arg(long, default_value_t = 50)]
        max: usize,
    },
    /// Apply one transition: take, request_documents, resume, answer,
    /// close, reopen, transfer.
    Update {
        reference: String,
        transition: String,
        /// The agent making the change.
        #[arg(long)]
        agent: String,
        #[arg(long, default_value = "")]
        note: String,
        /// CLOSE: granted, refused, informed, redirected, withdrawn, no_action.
        #[arg(long)]
        outcome: Option<String>,
        /// TRANSFER: the service taking it over.
        #[arg(long)]
        to: Option<String>,
        /// Apply only at this version.
        #[arg(long)]
        expected_version: Option<u64>,
        /// The idempotency id (default: a fresh one).
        #[arg(long)]
        id: Option<String>,
        /// request_documents, answer, close: e-mail the usager a status message.
        #[arg(long)]
        notify_usager: bool,
        /// request_documents: one piece asked for (repeat the flag for each).
        #[arg(long = "document")]
        documents: Vec<String>,
    },
}

pub async fn run(config_path: &Path, command: RequestCommand) -> anyhow::Result<()> {
    let bus = super::connect_bus(config_path).await?;
    let now = chrono::Utc::now();
    match command {
        RequestCommand::Show { reference } => {
            let reference = store::canonical_reference(&reference)?;
            let Some((record, _)) = store::read(&bus.stores().requests, &reference).await? else {
                bail!("no request has reference {reference}");
            };
            let v = view::view(&record, true, now);
            println!(
                "{}  {}  service {}  typology {}  version {}{}",
                v.reference,
                record.status,
                v.service,
                if v.typology.is_empty() { "-" } else { &v.typology },
                v.version,
                if v.overdue { "  OVERDUE" } else { "" }
            );
            println!(
                "opened {} by contact {} ({})",
                record.opened_at, record.opened_by, record.channel
            );
            println!(
                "engagement due {}{}",
                if record.due_at.is_empty() { "-" } else { &record.due_at },
                if record.suspended_since.is_empty() {
                    String::new()
                } else {
                    format!("  (suspended since {})", record.suspended_since)
                }
            );
            if !record.legal_due_at.is_empty() {
                println!(
                    "legal due {} (implicit {})",
                    record.legal_due_at, record.implicit_decision
                );
            }
            println!("contacts: {}", record.contacts.join(", "));
            for h in &record.history {
                println!(
                    "  v{} {} {} → {} by {}{} at {}{}{}",
                    h.version,
                    h.transition,
                    h.from_status,
                    h.to_status,
                    h.agent_id,
                    if h.client.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", h.client)
                    },
                    h.occurred_at,
                    if h.outcome.is_empty() {
                        String::new()
                    } else {
                        format!(" outcome {}", h.outcome)
                    },
                    if h.note.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", h.note)
                    },
                );
            }
        }
        RequestCommand::List { service, overdue, max } => {
            let filter = list::Filter::from_request(&ListRequestsRequest {
                service: service.clone(),
                overdue_only: overdue,
                ..Default::default()
            })?;
            let matching = filter.apply(list::all_records(&bus).await?, now);
            println!(
                "service {service}: {} request(s){}",
                matching.len(),
                if overdue { " overdue" } else { "" }
            );
            for record in matching.iter().take(max) {
                println!(
                    "{}  {}  due {}  {}  v{}{}",
                    record.reference,
                    record.status,
                    if record.due_date.is_empty() {
                        "-"
                    } else {
                        &record.due_date
                    },
                    if record.typology.is_empty() {
                        "-"
                    } else {
                        &record.typology
                    },
                    record.current_version(),
                    if view::is_overdue(record, now) { "  OVERDUE" } else { "" }
                );
            }
        }
        RequestCommand::Update {
            reference,
            transition,
            agent,
            note,
            outcome,
            to,
            expected_version,
            id,
            notify_usager,
            documents,
        } => {
            let reference = store::canonical_reference(&reference)?;
            let transition = parse_transition(&transition.to_lowercase())
                .filter(|t| *t != Transition::Open)
                .with_context(|| {
                    format!(
                        "`{transition}`: expected take, request_documents, resume, answer, close, reopen or transfer"
                    )
                })?;
            let outcome = match outcome {
                None => Outcome::Unspecified,
                Some(o) => parse_outcome(&o).with_context(|| {
                    format!("--outcome `{o}`: expected granted, refused, informed, redirected, withdrawn or no_action")
                })?,
            };
            if transition == Transition::Close && outcome == Outcome::Unspecified {
                bail!("close needs --outcome (granted, refused, informed, redirected, withdrawn, no_action)");
            }
            if agent.trim().is_empty() {
                bail!("--agent: required, the agent's id");
            }
            let change = store::Change {
                transition,
                agent_id: agent.trim().to_owned(),
                client: "cli".into(),
                client_request_id: id.unwrap_or_else(guichet_core::ids::contact_id),
                note,
                expected_version,
                outcome,
                to_service: to.unwrap_or_default(),
                notify_usager,
                documents: documents.iter().map(|d| d.trim().to_owned()).collect(),
            };
            if let Some((field, reason)) = store::check_notice(transition, notify_usager, &documents).first() {
                let flag = if *field == "documents" {
                    "--document"
                } else {
                    "--notify-usager"
                };
                bail!("{flag}: {reason}");
            }
            if transition == Transition::Transfer && !guichet_core::bus::subjects::is_token(&change.to_service) {
                bail!("transfer needs --to SERVICE");
            }
            let stream = events::events_stream(&bus).await?;
            let allow = |_: &str| Ok(());
            // The clocks count on the calendar of the rules in force.
            let rules_key = super::load_config(config_path)?.requests.rules_key;
            let in_force = guichet_rules::InForce::default();
            let rules = guichet_requests::clock::Rules::InForce {
                rules: &in_force,
                key: &rules_key,
            };
            let applied = store::update(&bus, &stream, &reference, &change, &allow, rules, now)
                .await?
                .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
            println!(
                "{} is {} (version {}){}",
                applied.record.reference,
                applied.record.status,
                applied.version,
                if applied.duplicate { ", already applied" } else { "" }
            );
        }
    }
    Ok(())
}
