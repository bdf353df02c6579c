//! The lists beside the indicators: overdue requests, dead letters,
//! identity conflict events (from the read model), and what is read live
//! from NATS through the router's own functions: the open identity
//! conflicts, the rules revisions, their diff, and `explain`.

use chrono::{DateTime, Utc};
use guichet_core::{Bus, bus::revisions};
use guichet_router::{admin, live};
use serde::Serialize;
use sqlx::Row;

use super::{
    Filter,
    overview::{Bind, OVERDUE, bind_all, dims_clause},
    table::{Table, ToTables, int},
};
use crate::{ConsoleError, apply::channel_name, store::Store};

/// At most this many rows in a list.
pub const MAX_ROWS: i64 = 1000;

fn db(what: &'static str) -> impl Fn(sqlx::Error) -> ConsoleError {
    move |e| ConsoleError::db(what, e)
}

fn rfc3339(seconds: i64) -> String {
    DateTime::<Utc>::from_timestamp(seconds, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// A request past a deadline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OverdueRow {
    pub reference: String,
    pub service: String,
    pub typology: String,
    /// The deadline passed first (RFC 3339, UTC).
    pub due_at: String,
    /// `engagement` or `legal`.
    pub deadline: String,
    pub status: String,
}

pub async fn overdue(store: &Store, filter: &Filter) -> Result<Vec<OverdueRow>, ConsoleError> {
    filter.validate()?;
    let now = Utc::now().timestamp();
    let mut binds = vec![Bind::Int(now)];
    let dims = dims_clause(filter, 2, &mut binds);
    let sql = format!(
        "SELECT reference, service, typology, engagement_due_at, legal_due_at, status FROM requests \
         WHERE {OVERDUE}{dims} ORDER BY reference LIMIT {MAX_ROWS}"
    );
    let rows = bind_all(sqlx::query(&sql), &binds)
        .fetch_all(store.pool())
        .await
        .map_err(db("reading overdue requests"))?;
    let mut out = Vec::new();
    for row in &rows {
        let engagement: Option<i64> = row.try_get(3).map_err(db("decoding an overdue request"))?;
        let legal: Option<i64> = row.try_get(4).map_err(db("decoding an overdue request"))?;
        let passed = [(engagement, "engagement"), (legal, "legal")]
            .into_iter()
            .filter_map(|(due, kind)| due.filter(|d| *d < now).map(|d| (d, kind)))
            .min();
        let (due, kind) = passed.unwrap_or((0, "engagement"));
        out.push(OverdueRow {
            reference: row.try_get(0).map_err(db("decoding an overdue request"))?,
            service: row.try_get(1).map_err(db("decoding an overdue request"))?,
            typology: row.try_get(2).map_err(db("decoding an overdue request"))?,
            due_at: rfc3339(due),
            deadline: kind.to_owned(),
            status: row.try_get(5).map_err(db("decoding an overdue request"))?,
        });
    }
    // The longest overdue first.
    out.sort_by(|a, b| a.due_at.cmp(&b.due_at).then_with(|| a.reference.cmp(&b.reference)));
    Ok(out)
}

impl ToTables for [OverdueRow] {
    fn tables(&self) -> Vec<Table> {
        let mut t = Table::new(
            "Overdue requests",
            &["reference", "service", "typology", "due at", "deadline", "status"],
        );
        for r in self {
            t.push(vec![
                r.reference.clone(),
                r.service.clone(),
                r.typology.clone(),
                r.due_at.clone(),
                r.deadline.clone(),
                r.status.clone(),
            ]);
        }
        vec![t]
    }
}

/// A dead letter (its origin and reason, not its payload).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetterRow {
    pub sequence: i64,
    pub subject: String,
    pub original_subject: String,
    pub original_stream: String,
    pub original_sequence: i64,
    pub reason: String,
    pub at: String,
}

pub async fn dead_letters(store: &Store) -> Result<Vec<DeadLetterRow>, ConsoleError> {
    let rows = sqlx::query(&format!(
        "SELECT seq, subject, original_subject, original_stream, original_sequence, reason, at \
         FROM dead_letters ORDER BY seq DESC LIMIT {MAX_ROWS}"
    ))
    .fetch_all(store.pool())
    .await
    .map_err(db("reading dead letters"))?;
    rows.iter()
        .map(|row| {
            let e = db("decoding a dead letter");
            Ok(DeadLetterRow {
                sequence: row.try_get(0).map_err(&e)?,
                subject: row.try_get(1).map_err(&e)?,
                original_subject: row.try_get(2).map_err(&e)?,
                original_stream: row.try_get(3).map_err(&e)?,
                original_sequence: row.try_get(4).map_err(&e)?,
                reason: row.try_get(5).map_err(&e)?,
                at: rfc3339(row.try_get(6).map_err(&e)?),
            })
        })
        .collect()
}

impl ToTables for [DeadLetterRow] {
    fn tables(&self) -> Vec<Table> {
        let mut t = Table::new(
            "Dead letters",
            &["sequence", "subject", "from", "original sequence", "reason", "at"],
        );
        for r in self {
            t.push(vec![
                int(r.sequence),
                r.subject.clone(),
                format!("{} {}", r.original_stream, r.original_subject),
                int(r.original_sequence),
                r.reason.clone(),
                r.at.clone(),
            ]);
        }
        vec![t]
    }
}

/// Identifiers of one contact that pointed at different usagers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IdentityConflictRow {
    pub sequence: i64,
    pub contact_id: String,
    /// The usager id kept.
    pub kept: String,
    /// The other usager ids, space-separated.
    pub others: String,
    pub at: String,
}

pub async fn identity_conflicts(store: &Store) -> Result<Vec<IdentityConflictRow>, ConsoleError> {
    let rows = sqlx::query(&format!(
        "SELECT seq, contact_id, kept, others, at FROM identity_conflicts ORDER BY seq DESC LIMIT {MAX_ROWS}"
    ))
    .fetch_all(store.pool())
    .await
    .map_err(db("reading identity conflicts"))?;
    rows.iter()
        .map(|row| {
            let e = db("decoding an identity conflict");
            Ok(IdentityConflictRow {
                sequence: row.try_get(0).map_err(&e)?,
                contact_id: row.try_get(1).map_err(&e)?,
                kept: row.try_get(2).map_err(&e)?,
                others: row.try_get(3).map_err(&e)?,
                at: rfc3339(row.try_get(4).map_err(&e)?),
            })
        })
        .collect()
}

impl ToTables for [IdentityConflictRow] {
    fn tables(&self) -> Vec<Table> {
        let mut t = Table::new("Identity conflicts", &["sequence", "contact", "kept", "others", "at"]);
        for r in self {
            t.push(vec![
                int(r.sequence),
                r.contact_id.clone(),
                r.kept.clone(),
                r.others.clone(),
                r.at.clone(),
            ]);
        }
        vec![t]
    }
}

/// An identity conflict waiting for an operator, as the router keeps it
/// (`guichet usager conflicts`): usager ids, identifier kinds and levels,
/// times and counts; no identifier value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpenConflictRow {
    /// `<usager A>.<usager B>`, for `guichet usager resolve`.
    pub id: String,
    /// The usager the first contact was routed to.
    pub kept: String,
    pub kept_kinds: Vec<String>,
    pub kept_level: String,
    pub other: String,
    pub other_kinds: Vec<String>,
    pub other_level: String,
    /// RFC 3339.
    pub first_at: String,
    pub last_at: String,
    /// Contacts that met the pair while the conflict was open.
    pub contacts: u64,
    /// The latest of them (for `explain`).
    pub latest_contact: Option<String>,
}

pub async fn open_identity_conflicts(bus: &Bus) -> Result<Vec<OpenConflictRow>, ConsoleError> {
    Ok(admin::conflicts(bus)
        .await?
        .into_iter()
        .map(|c| OpenConflictRow {
            latest_contact: c.recent_contacts.last().cloned(),
            id: c.id,
            kept: c.kept.usager_id,
            kept_kinds: c.kept.kinds,
            kept_level: c.kept.level.as_str().to_owned(),
            other: c.other.usager_id,
            other_kinds: c.other.kinds,
            other_level: c.other.level.as_str().to_owned(),
            first_at: c.first_at,
            last_at: c.last_at,
            contacts: c.contacts,
        })
        .collect())
}

impl ToTables for [OpenConflictRow] {
    fn tables(&self) -> Vec<Table> {
        let mut t = Table::new(
            "Open identity conflicts",
            &[
                "conflict",
                "kept",
                "kept by",
                "other",
                "other by",
                "first seen",
                "last seen",
                "contacts",
            ],
        );
        for r in self {
            t.push(vec![
                r.id.clone(),
                r.kept.clone(),
                format!("{} ({})", r.kept_kinds.join(", "), r.kept_level),
                r.other.clone(),
                format!("{} ({})", r.other_kinds.join(", "), r.other_level),
                r.first_at.clone(),
                r.last_at.clone(),
                r.contacts.to_string(),
            ]);
        }
        vec![t]
    }
}

/// One revision of the rules (the router's history, as shown).
pub use guichet_core::bus::revisions::Revision as RulesRevision;

pub async fn rules_revisions(bus: &Bus, key: &str) -> Result<Vec<RulesRevision>, ConsoleError> {
    Ok(live::history(bus, key).await?)
}

impl ToTables for [RulesRevision] {
    fn tables(&self) -> Vec<Table> {
        let mut t = Table::new(
            "Rules revisions",
            &["revision", "pushed at", "pushed by", "origin", "sha256", "state"],
        );
        for r in self {
            let state = if r.deleted {
                "deleted".to_owned()
            } else {
                r.invalid
                    .clone()
                    .map_or_else(|| "valid".to_owned(), |e| format!("invalid: {e}"))
            };
            t.push(vec![
                r.revision.to_string(),
                r.pushed_at.clone(),
                r.pushed_by.clone(),
                r.origin.clone(),
                r.sha256.clone(),
                state,
            ]);
        }
        vec![t]
    }
}

/// One line of a diff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiffLine {
    /// `' '` kept, `'-'` only in `from`, `'+'` only in `to`.
    pub op: char,
    pub text: String,
}

/// The line diff between two revisions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RulesDiff {
    pub from: u64,
    pub to: u64,
    pub lines: Vec<DiffLine>,
}

/// Larger texts are not diffed line by line (the table would be quadratic).
pub const MAX_DIFF_LINES: usize = 4000;

async fn revision_text(bus: &Bus, key: &str, revision: u64) -> Result<String, ConsoleError> {
    revisions::stored_revision(bus, key, revision)
        .await
        .map_err(|e| ConsoleError::bus(&format!("reading revision {revision} of `{key}`"), e))?
        .map(|stored| stored.text)
        .ok_or_else(|| {
            ConsoleError::NotFound(format!(
                "revision {revision} of the rules is not kept (see the rules revisions page for those that are)"
            ))
        })
}

pub async fn rules_diff(bus: &Bus, key: &str, from: u64, to: u64) -> Result<RulesDiff, ConsoleError> {
    let (a, b) = (revision_text(bus, key, from).await?, revision_text(bus, key, to).await?);
    let lines = diff(&a, &b)?;
    Ok(RulesDiff { from, to, lines })
}

/// A line diff by longest common subsequence.
pub fn diff(a: &str, b: &str) -> Result<Vec<DiffLine>, ConsoleError> {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    if a.len() > MAX_DIFF_LINES || b.len() > MAX_DIFF_LINES {
        return Err(ConsoleError::Invalid(format!(
            "a revision has more than {MAX_DIFF_LINES} lines: diff them with `guichet rules history` and a local diff tool"
        )));
    }
    let (n, m) = (a.len(), b.len());
    // lcs[i][j]: the common lines of a[i..] and b[j..].
    let mut lcs = vec![vec![0u16; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1].saturating_add(1)
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    let line = |op, text: &str| DiffLine {
        op,
        text: text.to_owned(),
    };
    while i < n && j < m {
        if a[i] == b[j] {
            out.push(line(' ', a[i]));
            i += 1;
            j += 1;
        } else if lcs[i + 1][j] >= lcs[i][j + 1] {
            out.push(line('-', a[i]));
            i += 1;
        } else {
            out.push(line('+', b[j]));
            j += 1;
        }
    }
    out.extend(a[i..].iter().map(|t| line('-', t)));
    out.extend(b[j..].iter().map(|t| line('+', t)));
    Ok(out)
}

impl ToTables for RulesDiff {
    fn tables(&self) -> Vec<Table> {
        let mut t = Table::new(
            format!("Rules: revision {} → {}", self.from, self.to),
            &["change", "line"],
        );
        for l in &self.lines {
            t.push(vec![l.op.to_string(), l.text.clone()]);
        }
        vec![t]
    }
}

/// How a contact was routed, without its text or the usager's identifiers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExplainView {
    pub contact_id: String,
    pub reference: String,
    pub channel: String,
    pub service: String,
    pub typology: String,
    /// Empty: no rule matched (qualified by hand).
    pub rule_id: String,
    pub rules_revision: u64,
    pub due_date: String,
    pub follow_up_of: String,
    pub explanation: Vec<String>,
    /// The request's status now, if it still exists.
    pub request_status: Option<String>,
}

pub async fn explain(bus: &Bus, contact_id: &str) -> Result<ExplainView, ConsoleError> {
    let found = admin::explain(bus, contact_id).await?;
    let q = found.routed.qualification.clone().unwrap_or_default();
    Ok(ExplainView {
        contact_id: contact_id.to_owned(),
        reference: found.routed.reference.clone(),
        channel: found
            .routed
            .contact
            .as_ref()
            .map(|c| channel_name(c.channel))
            .unwrap_or_default(),
        service: q.service,
        typology: q.typology,
        rule_id: q.rule_id,
        rules_revision: q.rules_revision,
        due_date: q.due_date,
        follow_up_of: found.routed.follow_up_of.clone(),
        explanation: q.explanation,
        request_status: found.request.map(|r| r.status),
    })
}

impl ToTables for ExplainView {
    fn tables(&self) -> Vec<Table> {
        let mut t = Table::new(format!("Contact {}", self.contact_id), &["field", "value"]);
        for (k, v) in [
            ("reference", self.reference.clone()),
            ("channel", self.channel.clone()),
            ("service", self.service.clone()),
            ("typology", self.typology.clone()),
            (
                "rule",
                if self.rule_id.is_empty() {
                    "(none: by hand)".into()
                } else {
                    self.rule_id.clone()
                },
            ),
            ("rules revision", self.rules_revision.to_string()),
            ("due date", self.due_date.clone()),
            ("follow-up of", self.follow_up_of.clone()),
            ("request status", self.request_status.clone().unwrap_or_default()),
        ] {
            t.push(vec![k.to_owned(), v]);
        }
        for line in &self.explanation {
            t.push(vec!["why".to_owned(), line.clone()]);
        }
        vec![t]
    }
}

#[cfg(test)]
mod tests {
    use super::diff;

    #[test]
    fn diffs_keep_common_lines() {
        let d = diff("a\nb\nc\n", "a\nc\nd\n").unwrap_or_default();
        let ops: String = d.iter().map(|l| l.op).collect();
        assert_eq!(ops, " - +");
        assert_eq!(
            d.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(),
            ["a", "b", "c", "d"]
        );
    }
}
