//! `guichet queue pull SERVICE`: what a service's back-office sees.

use std::path::Path;

use clap::Subcommand;
use guichet_core::proto::v1::Priority;

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Show the next requests in a service's queue. They stay in the
    /// queue unless --ack is given.
    Pull {
        /// The service, as named in the rules.
        service: String,
        /// How many to show.
        #[arg(long, default_value_t = 10)]
        max: usize,
        /// Acknowledge them: they leave the queue (the journal keeps them).
        #[arg(long)]
        ack: bool,
    },
}

pub async fn run(config_path: &Path, command: QueueCommand) -> anyhow::Result<()> {
    let bus = super::connect_bus(config_path).await?;
    let QueueCommand::Pull { service, max, ack } = command;
    let view = guichet_router::admin::pull_queue(&bus, &service, max, ack).await?;
    println!(
        "queue {}: {} shown, {} more waiting, {} delivered and not acknowledged",
        view.service,
        view.items.len(),
        view.pending,
        view.unacknowledged
    );
    for routed in &view.items {
        let q = routed.qualification.clone().unwrap_or_default();
        let c = routed.contact.clone().unwrap_or_default();
        let received = guichet_router::admin::rfc3339(c.received_at.as_ref());
        let priority = Priority::try_from(q.priority)
            .map(|p| p.as_str_name().trim_start_matches("PRIORITY_").to_lowercase())
            .unwrap_or_default();
        println!(
            "{}  due {}  {}  {}  usager {}  contact {}  received {}{}",
            routed.reference,
            if q.due_date.is_empty() { "-" } else { &q.due_date },
            priority,
            if q.typology.is_empty() {
                "(to qualify)"
            } else {
                &q.typology
            },
            routed.usager_id,
            c.id,
            received,
            if routed.follow_up_of.is_empty() {
                ""
            } else {
                "  follow-up"
            },
        );
        if !c.subject.is_empty() {
            println!("    {}", c.subject);
        }
    }
    if ack {
        println!("{} acknowledged", view.items.len());
    }
    Ok(())
}
