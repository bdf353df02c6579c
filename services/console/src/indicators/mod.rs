//! The indicators of issue 16 and the lists beside them, as plain
//! `Serialize` structs the web console and `guichet stats` present. Every
//! definition is in docs/console.md.
//!
//! [`Console`] is the handle: [`Console::overview`] (volumes, backlog and
//! its trend, delays, shares, mixes) reads the daily aggregates the
//! projection keeps, plus the current backlog from the request rows;
//! [`lists`] holds the overdue list, dead letters, identity conflicts,
//! rules revisions and `explain`.

pub mod lists;
mod overview;
pub mod period;
pub mod table;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

pub use lists::{
    DeadLetterRow, ExplainView, IdentityConflictRow, OpenConflictRow, OverdueRow, RulesDiff, RulesRevision,
};
pub use period::Granularity;
pub use table::{Table, ToTables};

use crate::{ConsoleError, store::Store};

/// What to count: a period of days (both included, dates in the rules'
/// time zone, Europe/Paris) cut into days, weeks or months, and optional
/// filters on the request's dimensions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub granularity: Granularity,
    pub service: Option<String>,
    pub channel: Option<String>,
    pub typology: Option<String>,
    pub site: Option<String>,
}

/// The longest period one query covers.
pub const MAX_DAYS: i64 = 3700;

impl Filter {
    /// Checks the period: `from` ≤ `to`, at most [`MAX_DAYS`] days.
    pub fn validate(&self) -> Result<(), ConsoleError> {
        if self.from > self.to {
            return Err(ConsoleError::Invalid(format!(
                "from ({}) is after to ({}): swap them",
                self.from, self.to
            )));
        }
        if (self.to - self.from).num_days() >= MAX_DAYS {
            return Err(ConsoleError::Invalid(format!(
                "the period {} → {} is longer than {MAX_DAYS} days: shorten it",
                self.from, self.to
            )));
        }
        for (name, value) in [
            ("service", &self.service),
            ("channel", &self.channel),
            ("typology", &self.typology),
            ("site", &self.site),
        ] {
            if let Some(v) = value
                && (v.is_empty() || v.len() > 128)
            {
                return Err(ConsoleError::Invalid(format!(
                    "{name} filter must be 1 to 128 characters (omit it to count all)"
                )));
            }
        }
        Ok(())
    }
}

/// Counts over the period.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Volumes {
    /// New requests received (volume in).
    pub received: i64,
    /// Closures (volume out).
    pub closed: i64,
    /// Requests answered for the first time.
    pub answered: i64,
    /// Follow-up contacts on existing requests (re-contacts).
    pub recontacts: i64,
    /// Transfers into the filtered services.
    pub transfers_in: i64,
    /// Transfers out of the filtered services.
    pub transfers_out: i64,
    pub reopenings: i64,
    /// New requests no rule qualified (manual qualification).
    pub manual: i64,
}

/// One period of the series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    /// The first day of the period (Monday for weeks, the 1st for months).
    pub start: NaiveDate,
    pub received: i64,
    pub closed: i64,
    /// Requests not closed at the end of the period's last day.
    pub backlog: i64,
}

/// The backlog now (not limited to the period).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Backlog {
    /// Not closed, not waiting for the usager (open, taken, answered).
    pub open: i64,
    pub waiting_usager: i64,
    /// Not answered nor closed nor waiting, past a deadline.
    pub overdue: i64,
}

/// The spread of one delay.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delay {
    /// `acknowledgment`, `take`, `first_answer` or `closure`.
    pub milestone: String,
    /// Requests measured.
    pub count: i64,
    pub median_hours: Option<i64>,
    pub p90_hours: Option<i64>,
    pub median_business_days: Option<i64>,
    pub p90_business_days: Option<i64>,
}

/// A numerator over a denominator.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Share {
    pub count: i64,
    pub of: i64,
}

impl Share {
    pub fn ratio(&self) -> Option<f64> {
        (self.of > 0).then(|| self.count as f64 / self.of as f64)
    }
}

/// One key of a mix (channel, typology, service).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MixRow {
    pub key: String,
    pub count: i64,
    pub share: Option<f64>,
}

/// Everything the overview page shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Overview {
    pub filter: Filter,
    pub volumes: Volumes,
    pub series: Vec<Point>,
    pub backlog: Backlog,
    pub delays: Vec<Delay>,
    /// First answers given by the engagement deadline, of those with one.
    pub within_engagement: Share,
    /// First answers given by the legal deadline, of those with one.
    pub within_legal: Share,
    /// New requests qualified by hand, of all new requests.
    pub manual: Share,
    /// Re-contacts per new request.
    pub recontacts_per_request: Option<f64>,
    /// New requests by channel of the first contact.
    pub channels: Vec<MixRow>,
    /// New requests by typology.
    pub typologies: Vec<MixRow>,
    /// New requests by service.
    pub services: Vec<MixRow>,
}

/// The indicators over one read model.
#[derive(Clone)]
pub struct Console {
    store: Store,
    /// The bus, for what is read live (open identity conflicts, rules
    /// revisions, `explain`).
    bus: Option<guichet_core::Bus>,
    rules_key: String,
}

impl Console {
    /// A console over the read model only: the live lists answer
    /// "unavailable".
    pub fn new(store: Store) -> Self {
        Self {
            store,
            bus: None,
            rules_key: "rules".into(),
        }
    }

    /// A console that also reads the rules revisions (`rules_key` in the
    /// config KV) and explains contacts through `bus`.
    pub fn with_bus(store: Store, bus: guichet_core::Bus, rules_key: &str) -> Self {
        Self {
            store,
            bus: Some(bus),
            rules_key: rules_key.to_owned(),
        }
    }

    fn bus(&self) -> Result<&guichet_core::Bus, ConsoleError> {
        self.bus
            .as_ref()
            .ok_or_else(|| ConsoleError::Bus("this console has no NATS connection (retry from `guichet run`)".into()))
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// All the indicators of the period.
    pub async fn overview(&self, filter: &Filter) -> Result<Overview, ConsoleError> {
        filter.validate()?;
        overview::overview(&self.store, filter).await
    }

    /// The overview of one service.
    pub async fn service(&self, filter: &Filter, service: &str) -> Result<Overview, ConsoleError> {
        let filter = Filter {
            service: Some(service.to_owned()),
            ..filter.clone()
        };
        self.overview(&filter).await
    }

    /// The overview of one typology.
    pub async fn typology(&self, filter: &Filter, typology: &str) -> Result<Overview, ConsoleError> {
        let filter = Filter {
            typology: Some(typology.to_owned()),
            ..filter.clone()
        };
        self.overview(&filter).await
    }

    /// Requests past a deadline now, the latest due first (the period is
    /// not used; the dimension filters are).
    pub async fn overdue(&self, filter: &Filter) -> Result<Vec<OverdueRow>, ConsoleError> {
        lists::overdue(&self.store, filter).await
    }

    /// Dead letters recorded, newest first.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetterRow>, ConsoleError> {
        lists::dead_letters(&self.store).await
    }

    /// The identity conflicts waiting for a decision, oldest first (read
    /// live from the router's identity bucket).
    pub async fn open_identity_conflicts(&self) -> Result<Vec<OpenConflictRow>, ConsoleError> {
        lists::open_identity_conflicts(self.bus()?).await
    }

    /// Identity conflicts published by the router, newest first.
    pub async fn identity_conflicts(&self) -> Result<Vec<IdentityConflictRow>, ConsoleError> {
        lists::identity_conflicts(&self.store).await
    }

    /// The kept revisions of the rules, oldest first.
    pub async fn rules_revisions(&self) -> Result<Vec<RulesRevision>, ConsoleError> {
        lists::rules_revisions(self.bus()?, &self.rules_key).await
    }

    /// The line diff between two revisions of the rules.
    pub async fn rules_diff(&self, from: u64, to: u64) -> Result<RulesDiff, ConsoleError> {
        lists::rules_diff(self.bus()?, &self.rules_key, from, to).await
    }

    /// How a contact was routed (the router's `explain`).
    pub async fn explain(&self, contact_id: &str) -> Result<ExplainView, ConsoleError> {
        lists::explain(self.bus()?, contact_id).await
    }
}
