//! `guichet deadletter list|show|replay|discard`: what the router gave up
//! on, without raw NATS tools (logic in `guichet_router::deadletter`).

use std::path::Path;

use chrono::Utc;
use clap::Subcommand;
use guichet_router::deadletter::{self, Pending};
use serde_json::json;

#[derive(Debug, Subcommand)]
pub enum DeadletterCommand {
    /// The pending dead letters, oldest first: id, origin, deliveries,
    /// age, reason.
    List {
        /// Only those of this origin (the service that gave up: `router`).
        #[arg(long)]
        origin: Option<String>,
        /// One JSON object per line, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// One dead letter: the reason, where it came from, and the contact
    /// (id, channel, source, reception time; never its content).
    Show {
        /// The id shown by `list`.
        id: u64,
        #[arg(long)]
        json: bool,
    },
    /// Send dead letters back to where they failed, once the cause is
    /// fixed. Safe to repeat: a contact already routed is not routed again.
    Replay {
        /// The id shown by `list`.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<u64>,
        /// Every pending replayable one.
        #[arg(long)]
        all: bool,
        /// With --all: only those of this origin.
        #[arg(long, requires = "all")]
        origin: Option<String>,
        /// Who replays (recorded in the event); defaults to $USER.
        #[arg(long, env = "USER", default_value = "unknown")]
        by: String,
    },
    /// Give up on a dead letter for good, saying why (recorded as an event).
    Discard {
        /// The id shown by `list`.
        id: u64,
        /// Why (recorded; no personal data).
        #[arg(long)]
        reason: String,
        /// Who discards (recorded in the event); defaults to $USER.
        #[arg(long, env = "USER", default_value = "unknown")]
        by: String,
    },
}

pub async fn run(config_path: &Path, command: DeadletterCommand) -> anyhow::Result<()> {
    let bus = super::connect_bus(config_path).await?;
    match command {
        DeadletterCommand::List { origin, json } => {
            let pending = deadletter::list(&bus, origin.as_deref()).await?;
            if json {
                for p in &pending {
                    println!("{}", as_json(p));
                }
            } else {
                println!("{} pending dead letter(s)", pending.len());
                for p in &pending {
                    println!(
                        "{}  {}  {} deliveries  {} ago  {}",
                        p.id,
                        p.origin,
                        p.letter.deliveries,
                        age(p),
                        p.letter.reason
                    );
                }
            }
        }
        DeadletterCommand::Show { id, json } => {
            let p = deadletter::get(&bus, id).await?;
            if json {
                println!("{}", as_json(&p));
            } else {
                let l = &p.letter;
                println!("dead letter {}  (origin {}, {} ago)", p.id, p.origin, age(&p));
                println!("  reason: {}", l.reason);
                println!(
                    "  from: {} sequence {} ({})",
                    l.original_stream, l.original_sequence, l.original_subject
                );
                println!("  deliveries: {}", l.deliveries);
                println!("  failed at: {}", guichet_router::admin::rfc3339(l.failed_at.as_ref()));
                match p.contact() {
                    Some(c) => println!(
                        "  contact {}  channel {}  source {}  received {}",
                        c.id, c.channel, c.source, c.received_at
                    ),
                    None if l.payload.is_empty() => {
                        println!("  payload omitted (too large): see {}", l.original_stream)
                    }
                    None => println!("  payload: not a contact ({} bytes)", l.payload.len()),
                }
                if l.undecodable {
                    println!("  failed on its content: replaying cannot help; discard it once handled");
                }
            }
        }
        DeadletterCommand::Replay { id, all, origin, by } => {
            if all {
                let outcomes = deadletter::replay_all(&bus, origin.as_deref(), &by).await?;
                let mut failed = 0;
                for (id, outcome) in &outcomes {
                    match outcome {
                        Ok(r) => println!("{id}: contact {} sent back to {}", r.contact_id, r.subject),
                        Err(e) => {
                            failed += 1;
                            println!("{id}: not replayed: {e}");
                        }
                    }
                }
                println!("{} replayed, {failed} failed", outcomes.len() - failed);
                if failed > 0 {
                    anyhow::bail!("{failed} dead letter(s) not replayed (see above); run again to retry them");
                }
            } else if let Some(id) = id {
                let r = deadletter::replay(&bus, id, &by).await?;
                println!(
                    "dead letter {id}: contact {} sent back to {} (INTAKE sequence {}); watch it with `guichet explain {}`",
                    r.contact_id, r.subject, r.intake_sequence, r.contact_id
                );
            }
        }
        DeadletterCommand::Discard { id, reason, by } => {
            let p = deadletter::discard(&bus, id, &reason, &by).await?;
            println!(
                "dead letter {} discarded (recorded in guichet.events.deadletter.discarded)",
                p.id
            );
        }
    }
    Ok(())
}

fn age(p: &Pending) -> String {
    let Some(at) = p.failed_at() else {
        return "?".into();
    };
    let secs = (Utc::now() - at).num_seconds().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn as_json(p: &Pending) -> serde_json::Value {
    let contact = p.contact();
    json!({
        "id": p.id,
        "origin": p.origin,
        "reason": p.letter.reason,
        "deliveries": p.letter.deliveries,
        "undecodable": p.letter.undecodable,
        "failed_at": guichet_router::admin::rfc3339(p.letter.failed_at.as_ref()),
        "original_stream": p.letter.original_stream,
        "original_sequence": p.letter.original_sequence,
        "original_subject": p.letter.original_subject,
        "contact": contact.map(|c| json!({
            "id": c.id, "channel": c.channel, "source": c.source, "received_at": c.received_at,
        })),
    })
}
