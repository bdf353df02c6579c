//! `guichet explain CONTACT_ID`: why a contact went where it went.

use std::path::Path;

use clap::Args;
use guichet_core::proto::v1::{Priority, identity_resolution::Outcome};
use guichet_router::admin::rfc3339;

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The contact id (a ULID, as in the adapter's receipt or logs).
    pub contact_id: String,
}

pub async fn run(config_path: &Path, args: ExplainArgs) -> anyhow::Result<()> {
    let bus = super::connect_bus(config_path).await?;
    let e = guichet_router::admin::explain(&bus, &args.contact_id).await?;
    let q = e.routed.qualification.clone().unwrap_or_default();
    let contact = e.routed.contact.clone().unwrap_or_default();
    let at = |ts: &Option<_>| rfc3339(ts.as_ref());
    println!("contact    {}", contact.id);
    println!(
        "received   {} via {}",
        at(&contact.received_at),
        channel(contact.channel)
    );
    println!(
        "routed     {} to {} (stream {} sequence {})",
        at(&e.routed.routed_at),
        e.index.subject,
        e.index.stream,
        e.index.sequence
    );
    let own = &contact.reference;
    println!(
        "reference  {}{}",
        e.routed.reference,
        match (
            e.routed.follow_up_of.is_empty(),
            own.is_empty() || *own == e.routed.reference
        ) {
            (true, _) => String::new(),
            (false, true) => " (follow-up)".into(),
            // Given at intake; now an alias that finds this request.
            (false, false) => format!(" (follow-up; its own reference {own} is an alias of it)"),
        }
    );
    println!("usager     {} ({})", e.routed.usager_id, identity(&e.routed));
    println!(
        "service    {}{}",
        q.service,
        if q.discarded {
            " (discarded as noise: journal only)"
        } else {
            ""
        }
    );
    println!("typology   {}", if q.typology.is_empty() { "-" } else { &q.typology });
    println!(
        "priority   {}",
        Priority::try_from(q.priority).map(|p| p.as_str_name()).unwrap_or("?")
    );
    println!(
        "due        {} ({})",
        if q.due_date.is_empty() { "-" } else { &q.due_date },
        at(&q.due_at)
    );
    if q.legal_due_at.is_some() {
        println!(
            "legal      {} after {} ({})",
            guichet_core::proto::v1::ImplicitDecision::try_from(q.implicit_decision)
                .map(|d| d.as_str_name().trim_start_matches("IMPLICIT_DECISION_").to_lowercase())
                .unwrap_or_default(),
            q.legal_delay,
            at(&q.legal_due_at)
        );
    }
    println!(
        "rule       {}",
        if q.rule_id.is_empty() { "(none)" } else { &q.rule_id }
    );
    println!(
        "revision   {}{}",
        q.rules_revision,
        if q.rules_revision == 0 {
            " (built-in: no rules pushed)"
        } else {
            ""
        }
    );
    if !q.tags.is_empty() {
        println!("tags       {}", q.tags.join(", "));
    }
    println!("why");
    for line in &q.explanation {
        println!("  - {line}");
    }
    if let Some(r) = &e.request {
        println!(
            "request    {} status {} service {} opened by {} ({} contact(s))",
            r.reference,
            r.status,
            r.service,
            r.opened_by,
            r.contacts.len()
        );
    }
    Ok(())
}

fn channel(c: i32) -> &'static str {
    guichet_core::proto::v1::Channel::try_from(c)
        .map(|c| c.token())
        .unwrap_or("unspecified")
}

fn identity(routed: &guichet_core::proto::v1::Routed) -> String {
    let Some(id) = &routed.identity else {
        return "-".into();
    };
    let outcome = match Outcome::try_from(id.outcome) {
        Ok(Outcome::Known) => "known",
        Ok(Outcome::Created) => "new usager",
        Ok(Outcome::Conflict) => "identifiers in conflict: strongest kept, event published",
        Ok(Outcome::Anonymous) => "anonymous: no identifier",
        _ => "?",
    };
    if id.matched_by.is_empty() {
        outcome.to_owned()
    } else {
        format!("{outcome}, by {}", id.matched_by.join(" and "))
    }
}
