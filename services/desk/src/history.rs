//! `GetUsagerHistory`: a usager's routed contacts, newest first, paged.
//!
//! The history is the ROUTED stream filtered by `guichet.routed.*.<id>`
//! for the usager and every id merged into it. An ordered consumer
//! ([`guichet_core::Bus::scan_until`]) reads the filtered messages oldest first and
//! keeps only the last `page_size` below the page bound, so memory stays
//! bounded whatever the history's length. A page token is the stream
//! sequence the next (older) page must stay below.
//!
//! What a site may read is its history scope
//! (`desk.sites.<site>.history`): `all`, `own_site` (only the contacts
//! recorded at that site, filtered before paging) or `none`. Every page is
//! recorded in the access journal ([`crate::access`]) before it is
//! returned.
//!
//! Each entry carries where its request stands now (reference, service,
//! status, both deadlines, overdue), read from the requests bucket once
//! per reference of the page: the ROUTED stream says how a contact was
//! routed, the bucket what happened to its request since.

use std::{collections::VecDeque, ops::ControlFlow, time::Duration};

use guichet_core::{
    bus::subjects::{self, ROUTED_STREAM},
    identity::{Identifier, normalize_email, normalize_phone},
    proto::v1::{
        Channel, GetUsagerHistoryRequest, GetUsagerHistoryResponse, HistoryEnd, HistoryEntry, HistoryRequest, Routed,
        get_usager_history_request::Usager, get_usager_history_response::Item,
    },
    request::{RequestRecord, parse_outcome, request_key},
};
use prost::Message;
use tokio::time::Instant;
use tonic::Status;

use crate::{
    access::{self, HistoryRead},
    auth::Site,
    config::HistoryScope,
    state::State,
    status::{Violations, bus_status},
    validate::{MAX_ID_LEN, identity_reason},
};

/// Longest a history read may take without a caller deadline.
const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(10);
const TOKEN_PREFIX: &str = "before-";

/// One page of a usager's history, as the messages to stream.
pub async fn history(
    state: &State,
    site: &Site,
    request: GetUsagerHistoryRequest,
    deadline: Option<Instant>,
) -> Result<Vec<GetUsagerHistoryResponse>, Status> {
    crate::auth::check_site(site, &request.site)?;
    let scope = scope_of(state, site);
    if scope == HistoryScope::None {
        return Err(Status::permission_denied(format!(
            "site `{}` may not read histories (`desk.sites.{}.history = \"none\"`)",
            site.0, site.0
        )));
    }
    let HistoryQuery {
        who,
        page_size,
        before,
        agent_id,
    } = validate(state, &request)?;
    let looked_up_by = who.field();
    // `own_site`: only contacts recorded at this site; an unknown
    // identifier gets the same answer as a usager with none here, so that
    // the answer does not tell whether the town hall knows the person.
    let only_site = (scope == HistoryScope::OwnSite).then_some(site.0.as_str());
    let denied_here = || {
        Status::permission_denied(format!(
            "site `{}` may read only the contacts recorded at it (`desk.sites.{}.history = \"own_site\"`), \
             and no contact of this usager was recorded here",
            site.0, site.0
        ))
    };
    if !state.bus.is_connected() {
        return Err(bus_status(
            &guichet_core::Error::Unavailable("not connected".into()),
            "reading the history",
        ));
    }
    let until = deadline.unwrap_or_else(|| Instant::now() + DEFAULT_READ_TIMEOUT);
    let read = async {
        let usager_id = match who {
            UsagerDesignation::Id(id) => id,
            UsagerDesignation::Identifier(identifier, field) => {
                match state.bus.usager_of(&state.privacy, &identifier).await {
                    Ok(Some(id)) => id,
                    Ok(None) if only_site.is_some() => return Err(denied_here()),
                    Ok(None) => {
                        return Err(Status::not_found(format!(
                            "no usager is known by this {field} (it may not have been routed yet)"
                        )));
                    }
                    Err(e) => return Err(bus_status(&e, "looking up the usager")),
                }
            }
        };
        let ids = state
            .bus
            .usager_history_ids(&usager_id)
            .await
            .map_err(|e| bus_status(&e, "looking up the usager"))?;
        let (mut entries, more) = read_page(state, &ids, only_site, page_size, before).await?;
        add_request_status(state, &mut entries).await?;
        Ok((ids, entries, more))
    };
    let (ids, entries, more) = tokio::time::timeout_at(until, read).await.map_err(|_| {
        Status::deadline_exceeded(
            "the message broker did not give the history in time; retry, or ask for a smaller page",
        )
    })??;
    // A page a site may see is never empty: a next page exists only when
    // older entries of this site do.
    if only_site.is_some() && entries.is_empty() {
        return Err(denied_here());
    }
    access::record(
        state,
        &HistoryRead {
            site,
            agent_id: &agent_id,
            usager_ids: &ids,
            looked_up_by,
            scope,
            contacts: entries.len(),
            first_page: before.is_none(),
        },
    )
    .await?;
    let next_page_token = match (more, entries.last()) {
        (true, Some(oldest)) => format!("{TOKEN_PREFIX}{}", oldest.sequence),
        _ => String::new(),
    };
    tracing::info!(site = %site.0, usager_id = %ids[0], entries = entries.len(), "history read");
    let end = HistoryEnd {
        usager_id: ids[0].clone(),
        merged_usager_ids: ids[1..].to_vec(),
        entries: u32::try_from(entries.len()).unwrap_or(u32::MAX),
        next_page_token,
    };
    let mut out: Vec<GetUsagerHistoryResponse> = entries
        .into_iter()
        .map(|e| GetUsagerHistoryResponse {
            item: Some(Item::Entry(e)),
        })
        .collect();
    out.push(GetUsagerHistoryResponse {
        item: Some(Item::End(end)),
    });
    Ok(out)
}

/// The site's `desk.sites.<site>.history`; `none` for a site not
/// configured (which cannot authenticate anyway).
fn scope_of(state: &State, site: &Site) -> HistoryScope {
    state
        .config
        .sites
        .get(&site.0)
        .map_or(HistoryScope::None, |s| s.history)
}

/// How the request designates the usager.
enum UsagerDesignation {
    Id(String),
    Identifier(Identifier, &'static str),
}

impl UsagerDesignation {
    /// The request field that designated the usager.
    fn field(&self) -> &'static str {
        match self {
            UsagerDesignation::Id(_) => "usager_id",
            UsagerDesignation::Identifier(_, "e-mail") => "email",
            UsagerDesignation::Identifier(..) => "phone",
        }
    }
}

/// A history request once checked.
struct HistoryQuery {
    who: UsagerDesignation,
    page_size: usize,
    before: Option<u64>,
    agent_id: String,
}

fn validate(state: &State, r: &GetUsagerHistoryRequest) -> Result<HistoryQuery, Status> {
    let mut v = Violations::default();
    let agent_id = r.agent_id.trim();
    if agent_id.len() > MAX_ID_LEN || agent_id.chars().any(char::is_control) {
        v.add(
            "agent_id",
            format!("at most {MAX_ID_LEN} characters, no control characters"),
        );
    }
    let who = match &r.usager {
        None => {
            v.add("usager", "required: one of usager_id, email or phone");
            None
        }
        Some(Usager::UsagerId(id)) => {
            let id = id.trim();
            if subjects::is_token(id) {
                Some(UsagerDesignation::Id(id.to_owned()))
            } else {
                v.add("usager_id", "a usager id such as \"U01J…\" (letters, digits, '-', '_')");
                None
            }
        }
        Some(Usager::Email(e)) => match normalize_email(e) {
            Ok(i) => Some(UsagerDesignation::Identifier(i, "e-mail")),
            Err(e) => {
                v.add("email", identity_reason(&e));
                None
            }
        },
        Some(Usager::Phone(p)) => match normalize_phone(p) {
            Ok(i) => Some(UsagerDesignation::Identifier(i, "phone number")),
            Err(e) => {
                v.add("phone", identity_reason(&e));
                None
            }
        },
    };
    let max = state.config.history_max_page_size;
    let page_size = match r.page_size {
        0 => state.config.history_page_size,
        n if n > max => {
            v.add("page_size", format!("at most {max} (`desk.history_max_page_size`)"));
            max
        }
        n => n,
    };
    let before = if r.page_token.is_empty() {
        None
    } else {
        match r
            .page_token
            .strip_prefix(TOKEN_PREFIX)
            .and_then(|s| s.parse::<u64>().ok())
        {
            Some(seq) => Some(seq),
            None => {
                v.add(
                    "page_token",
                    "not a token this service gave: pass `end.next_page_token` unchanged, or nothing for the first page",
                );
                None
            }
        }
    };
    v.into_result()?;
    match who {
        Some(who) => Ok(HistoryQuery {
            who,
            page_size: page_size as usize,
            before,
            agent_id: agent_id.to_owned(),
        }),
        None => Err(Violations::single("usager", "required")),
    }
}

/// Whether `routed` was recorded at `site` by desk (a desk channel and
/// the site as its source; a web form or mailbox of the same name is not).
fn recorded_at(routed: &Routed, site: &str) -> bool {
    routed.contact.as_ref().is_some_and(|c| {
        matches!(
            Channel::try_from(c.channel),
            Ok(Channel::Counter | Channel::Phone | Channel::Postal)
        ) && c.source.as_ref().is_some_and(|s| s.name == site)
    })
}

/// Sets each entry's `request` from the requests bucket: one read per
/// distinct reference of the page.
async fn add_request_status(state: &State, entries: &mut [HistoryEntry]) -> Result<(), Status> {
    let mut references: Vec<String> = entries
        .iter()
        .filter_map(|e| e.routed.as_ref())
        .map(|r| r.reference.clone())
        .filter(|r| !r.is_empty())
        .collect();
    references.sort();
    references.dedup();
    let kv = &state.bus.stores().requests;
    let reads = references.iter().map(|reference| async move {
        let value = kv.get(request_key(reference)).await.map_err(|e| {
            bus_status(
                &guichet_core::Error::Unavailable(e.to_string()),
                "reading the requests of the history",
            )
        })?;
        let record = value.and_then(|v| match serde_json::from_slice::<RequestRecord>(&v) {
            Ok(record) => Some(record),
            Err(e) => {
                // Shown without a status rather than failing the history.
                tracing::warn!(reference = %reference, error = %e, "undecodable request record left out of a history");
                None
            }
        });
        Ok::<_, Status>((reference.clone(), record))
    });
    let now = chrono::Utc::now();
    let found: std::collections::HashMap<String, HistoryRequest> = futures::future::try_join_all(reads)
        .await?
        .into_iter()
        .filter_map(|(reference, record)| {
            record.map(|r| {
                let summary = HistoryRequest {
                    reference: r.reference.clone(),
                    service: r.service.clone(),
                    status: r.status().into(),
                    deadlines: Some(r.deadlines()),
                    overdue: r.is_overdue(now),
                    outcome: parse_outcome(&r.outcome).unwrap_or_default().into(),
                };
                (reference, summary)
            })
        })
        .collect();
    for entry in entries.iter_mut() {
        entry.request = entry.routed.as_ref().and_then(|r| found.get(&r.reference)).cloned();
    }
    Ok(())
}

/// The newest `page_size` entries below `before` (recorded at
/// `only_site`, when given), newest first, and whether older ones exist.
async fn read_page(
    state: &State,
    ids: &[String],
    only_site: Option<&str>,
    page_size: usize,
    before: Option<u64>,
) -> Result<(Vec<HistoryEntry>, bool), Status> {
    let filters: Vec<String> = ids.iter().map(|id| subjects::usager_history(id)).collect();
    let mut window: VecDeque<HistoryEntry> = VecDeque::with_capacity(page_size + 1);
    let mut more = false;
    state
        .bus
        .scan_until(ROUTED_STREAM, &filters, |message| {
            let sequence = message.sequence;
            if before.is_some_and(|b| sequence >= b) {
                return ControlFlow::Break(());
            }
            match Routed::decode(message.payload.clone()) {
                Ok(routed) if only_site.is_some_and(|site| !recorded_at(&routed, site)) => {}
                Ok(routed) => {
                    window.push_back(HistoryEntry {
                        routed: Some(routed),
                        sequence,
                        request: None,
                    });
                    if window.len() > page_size {
                        window.pop_front();
                        more = true;
                    }
                }
                Err(e) => {
                    metrics::counter!("guichet_desk_history_undecodable_total").increment(1);
                    tracing::warn!(sequence, error = %e, "undecodable routed message left out of a history");
                }
            }
            ControlFlow::Continue(())
        })
        .await
        .map_err(|e| bus_status(&e, "reading the history"))?;
    let mut page: Vec<HistoryEntry> = window.into_iter().collect();
    page.reverse();
    Ok((page, more))
}
