//! `guichet explain`: the routing decision of one contact.

use guichet_core::{
    Bus,
    bus::subjects::{self, is_token},
    proto::v1::Routed,
};
use prost::Message;

use crate::{
    RouterError,
    requests::{self, RequestRecord, RoutedIndex},
};

/// A routed contact's decision, for `guichet explain`.
#[derive(Debug, Clone)]
pub struct Explanation {
    pub index: RoutedIndex,
    pub routed: Routed,
    pub request: Option<RequestRecord>,
}

/// Finds the `Routed` of a contact and the request it belongs to.
pub async fn explain(bus: &Bus, contact_id: &str) -> Result<Explanation, RouterError> {
    if !is_token(contact_id) {
        return Err(RouterError::Invalid(format!(
            "`{}` is not a contact id (a ULID such as 01J…)",
            contact_id.escape_default()
        )));
    }
    let index = requests::routed_index(bus, contact_id).await?.ok_or_else(|| {
        RouterError::NotFound(format!(
            "contact {contact_id} has not been routed: not yet (is a router running?), dead-lettered (see stream {}), or forgotten",
            subjects::DEADLETTER_STREAM
        ))
    })?;
    let stream = bus
        .jetstream()
        .get_stream(&index.stream)
        .await
        .map_err(|e| RouterError::jetstream(format!("opening {}", index.stream), e))?;
    let message = stream.direct_get(index.sequence).await.map_err(|e| {
        RouterError::NotFound(format!(
            "contact {contact_id} was routed to {} (sequence {}) but the message is gone ({e}): past the journal's retention or purged",
            index.subject, index.sequence
        ))
    })?;
    let routed = Routed::decode(message.payload)
        .map_err(|e| RouterError::Requests(format!("sequence {} is not a Routed: {e}", index.sequence)))?;
    let request = requests::request(bus, &routed.reference).await?;
    Ok(Explanation { index, routed, request })
}

/// A contract timestamp as RFC 3339 (seconds), or "-".
pub fn rfc3339(ts: Option<&pbjson_types::Timestamp>) -> String {
    ts.and_then(guichet_core::proto::to_datetime)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| "-".into())
}
