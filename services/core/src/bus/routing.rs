//! Where a routed contact is: the `contact.<id>` index in
//! `guichet_requests`, written by the router once the `Routed` envelope is
//! stored, read by `guichet explain` and by the desk when a retry asks for
//! the routing decision of a contact routed long ago.

use prost::Message;
use serde::{Deserialize, Serialize};

use super::{Bus, subjects::REQUESTS_BUCKET};
use crate::{
    Error,
    proto::v1::{Decision, Routed},
};

/// `contact.<id>` → this, in `guichet_requests`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RoutedIndex {
    pub stream: String,
    pub sequence: u64,
    pub subject: String,
    pub reference: String,
}

/// The index key of a contact.
pub fn contact_key(contact_id: &str) -> String {
    format!("contact.{contact_id}")
}

/// The short decision event the router announces for a routed contact.
pub fn decision_of(routed: &Routed) -> Decision {
    let q = routed.qualification.clone().unwrap_or_default();
    Decision {
        contact_id: routed.contact.as_ref().map(|c| c.id.clone()).unwrap_or_default(),
        reference: routed.reference.clone(),
        usager_id: routed.usager_id.clone(),
        service: q.service,
        typology: q.typology,
        due_at: q.due_at,
        due_date: q.due_date,
        follow_up: !routed.follow_up_of.is_empty(),
        legal_due_at: q.legal_due_at,
        implicit_decision: q.implicit_decision,
    }
}

impl Bus {
    /// Where the contact's `Routed` is, if it was routed.
    pub async fn routed_index(&self, contact_id: &str) -> Result<Option<RoutedIndex>, Error> {
        let key = contact_key(contact_id);
        let value = self
            .inner
            .stores
            .requests
            .get(key.as_str())
            .await
            .map_err(|e| Error::store(REQUESTS_BUCKET, e))?;
        match value {
            None => Ok(None),
            Some(value) => serde_json::from_slice(&value).map(Some).map_err(|e| Error::Store {
                store: REQUESTS_BUCKET.into(),
                reason: format!("{key} is not a contact index entry ({e})"),
            }),
        }
    }

    /// Records where the contact's `Routed` is.
    pub async fn put_routed_index(&self, contact_id: &str, index: &RoutedIndex) -> Result<(), Error> {
        let value = serde_json::to_vec(index).map_err(|e| Error::Store {
            store: REQUESTS_BUCKET.into(),
            reason: format!("encoding the contact index: {e}"),
        })?;
        self.inner
            .stores
            .requests
            .put(contact_key(contact_id), value.into())
            .await
            .map_err(|e| Error::store(REQUESTS_BUCKET, e))?;
        Ok(())
    }

    /// The contact's `Routed`, if it was routed and is still in the journal.
    pub async fn routed_contact(&self, contact_id: &str) -> Result<Option<Routed>, Error> {
        let Some(index) = self.routed_index(contact_id).await? else {
            return Ok(None);
        };
        let stream = self
            .inner
            .jetstream
            .get_stream_no_info(&index.stream)
            .await
            .map_err(|e| Error::store(&index.stream, e))?;
        let message = match stream.direct_get(index.sequence).await {
            Ok(message) => message,
            Err(e) if e.kind() == async_nats::jetstream::stream::DirectGetErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::store(&index.stream, e)),
        };
        Routed::decode(message.payload).map(Some).map_err(|e| Error::Decode {
            subject: message.subject.to_string(),
            reason: e.to_string(),
        })
    }
}
