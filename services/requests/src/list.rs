//! ListRequests: the requests of one service, filtered, ordered, paged.
//!
//! Reads every `ref.*` record of the bucket and filters in memory: simple
//! and always current, at a cost linear in the number of requests (the
//! console's SQL read model is the place for heavy queries). The page
//! token is the position after the page's last entry, in the same order.

use chrono::{DateTime, Utc};
use guichet_core::{
    Bus,
    proto::v1::{ListOrder, ListRequestsRequest, RequestStatus},
    request::RequestRecord,
};

use crate::{RequestsError, clock, view};

/// Every request record of the bucket, in one pass: an ordered consumer
/// on the bucket's stream, last value per `ref.*` key (one round trip per
/// batch, not one per request: the sweep reads 100,000 of them).
pub async fn all_records(bus: &Bus) -> Result<Vec<RequestRecord>, RequestsError> {
    let bucket = guichet_core::bus::subjects::REQUESTS_BUCKET;
    let mut out = Vec::new();
    bus.scan_last(&format!("KV_{bucket}"), &format!("$KV.{bucket}.ref.>"), |message| {
        let deleted = message
            .headers
            .and_then(|h| h.get("KV-Operation"))
            .is_some_and(|op| matches!(op.as_str(), "DEL" | "PURGE"));
        if deleted {
            return;
        }
        match serde_json::from_slice(message.payload) {
            Ok(record) => out.push(record),
            // One unreadable record must not hide the others (nor stop
            // the sweep); GetRequest on it says so.
            Err(e) => {
                metrics::counter!("guichet_requests_unreadable_records_total").increment(1);
                tracing::error!(key = %message.subject, error = %e, "unreadable request record skipped");
            }
        }
    })
    .await?;
    Ok(out)
}

/// The filters of a call, checked.
pub struct Filter {
    pub service: String,
    pub statuses: Vec<RequestStatus>,
    pub overdue_only: bool,
    pub due_before: Option<DateTime<Utc>>,
    pub opened_after: Option<DateTime<Utc>>,
    pub opened_before: Option<DateTime<Utc>>,
    pub order: ListOrder,
}

impl Filter {
    pub fn from_request(request: &ListRequestsRequest) -> Result<Self, RequestsError> {
        let mut statuses = Vec::new();
        for (i, s) in request.statuses.iter().enumerate() {
            match RequestStatus::try_from(*s) {
                Ok(status) if status != RequestStatus::Unspecified => statuses.push(status),
                _ => {
                    return Err(RequestsError::Invalid {
                        field: "statuses",
                        reason: format!("entry {i} ({s}) is not a request status"),
                    });
                }
            }
        }
        let at = |t: &Option<pbjson_types::Timestamp>, field: &'static str| match t {
            None => Ok(None),
            Some(t) => guichet_core::proto::to_datetime(t)
                .map(Some)
                .ok_or(RequestsError::Invalid {
                    field,
                    reason: "not a valid timestamp".into(),
                }),
        };
        let order = ListOrder::try_from(request.order).map_err(|_| RequestsError::Invalid {
            field: "order",
            reason: format!("{} is not a list order (DUE or OPENED)", request.order),
        })?;
        Ok(Self {
            service: request.service.clone(),
            statuses,
            overdue_only: request.overdue_only,
            due_before: at(&request.due_before, "due_before")?,
            opened_after: at(&request.opened_after, "opened_after")?,
            opened_before: at(&request.opened_before, "opened_before")?,
            order,
        })
    }

    fn keeps(&self, record: &RequestRecord, now: DateTime<Utc>) -> bool {
        if record.service != self.service {
            return false;
        }
        let status = record.status();
        let status_ok = if self.statuses.is_empty() {
            status != RequestStatus::Closed
        } else {
            self.statuses.contains(&status)
        };
        let due = clock::parse(&record.due_at);
        let opened = clock::parse(&record.opened_at);
        status_ok
            && (!self.overdue_only || view::is_overdue(record, now))
            && self.due_before.is_none_or(|b| due.is_some_and(|d| d < b))
            && self.opened_after.is_none_or(|a| opened.is_some_and(|o| o >= a))
            && self.opened_before.is_none_or(|b| opened.is_some_and(|o| o < b))
    }

    /// The matching records, in order.
    pub fn apply(&self, mut records: Vec<RequestRecord>, now: DateTime<Utc>) -> Vec<RequestRecord> {
        records.retain(|r| self.keeps(r, now));
        match self.order {
            ListOrder::Opened => {
                records.sort_by(|a, b| (&a.opened_at, &a.reference).cmp(&(&b.opened_at, &b.reference)))
            }
            ListOrder::Due | ListOrder::Unspecified => records.sort_by(|a, b| {
                let key = |r: &RequestRecord| {
                    (
                        clock::parse(&r.due_at).is_none(),
                        clock::parse(&r.due_at),
                        r.reference.clone(),
                    )
                };
                key(a).cmp(&key(b))
            }),
        }
        records
    }
}

/// The offset a page token stands for.
pub fn parse_page_token(token: &str) -> Result<usize, RequestsError> {
    if token.is_empty() {
        return Ok(0);
    }
    token
        .strip_prefix("o")
        .and_then(|n| n.parse().ok())
        .ok_or(RequestsError::Invalid {
            field: "page_token",
            reason: "not a token this server gave: pass `end.next_page_token` of the previous page, or nothing".into(),
        })
}

pub fn page_token(offset: usize) -> String {
    format!("o{offset}")
}
