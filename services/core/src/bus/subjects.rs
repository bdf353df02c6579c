//! The bus's names: streams, subjects, buckets. One place, so that no
//! service spells a subject by hand.

use crate::proto::v1::Channel;

/// Every contact, as adapters publish it: `guichet.intake.<channel>.<key>`.
pub const INTAKE_STREAM: &str = "INTAKE";
/// The journal and the service queues: `guichet.routed.<service>.<usager>`.
pub const ROUTED_STREAM: &str = "ROUTED";
/// What could not be processed, with the reason: `guichet.deadletter.<origin>`.
pub const DEADLETTER_STREAM: &str = "DEADLETTER";
/// Events for review and audit (identity conflicts, merges, erasures,
/// rules pushes): `guichet.events.<kind>`.
pub const EVENTS_STREAM: &str = "EVENTS";
/// Notifications to send (created by `notify`):
/// `guichet.outbox.<kind>.<usager>.<reference>.<event>`.
pub const OUTBOX_STREAM: &str = "OUTBOX";

pub const INTAKE_ALL: &str = "guichet.intake.>";
pub const ROUTED_ALL: &str = "guichet.routed.>";
pub const DEADLETTER_ALL: &str = "guichet.deadletter.>";
pub const EVENTS_ALL: &str = "guichet.events.>";
pub const OUTBOX_ALL: &str = "guichet.outbox.>";

/// Identifier hash → usager id.
pub const IDENTITY_BUCKET: &str = "guichet_identity";
/// Request reference → request record.
pub const REQUESTS_BUCKET: &str = "guichet_requests";
/// Mailbox → UIDVALIDITY and last ingested UID.
pub const CHECKPOINTS_BUCKET: &str = "guichet_checkpoints";
/// Rules revisions and other ops-maintained configuration.
pub const CONFIG_BUCKET: &str = "guichet_config";
/// Mail: ingested Message-IDs, the guard across UIDVALIDITY changes.
pub const REPLAY_GUARD_BUCKET: &str = "guichet_seen";
/// Short-lived ownership leases (one watcher per mailbox).
pub const LEASES_BUCKET: &str = "guichet_leases";
/// Raw e-mails and attachments, by SHA-256.
pub const ATTACHMENTS_STORE: &str = "guichet_attachments";

/// `guichet.intake.<channel>`: the prefix of one channel's contacts.
pub fn intake(channel: Channel) -> String {
    format!("guichet.intake.{}", channel.token())
}

/// `guichet.intake.<channel>.<key>`, where `<key>` is a hash of the
/// contact's idempotency key (128 bits, hex). One subject per source
/// message lets JetStream itself refuse a second copy
/// (`Nats-Expected-Last-Subject-Sequence: 0`) for as long as INTAKE keeps
/// the first, in the same round trip as the publish.
pub fn intake_keyed(channel: Channel, idempotency_key: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(idempotency_key.as_bytes());
    format!("guichet.intake.{}.{}", channel.token(), hex::encode(&digest[..16]))
}

/// The channel token of an intake subject (`guichet.intake.<channel>[.<key>]`).
pub fn intake_channel(subject: &str) -> Option<&str> {
    subject.strip_prefix("guichet.intake.")?.split('.').next()
}

/// `guichet.routed.<service>.<usager_id>`.
pub fn routed(service: &str, usager_id: &str) -> String {
    format!("guichet.routed.{service}.{usager_id}")
}

/// The filter of one service's queue: `guichet.routed.<service>.>`.
pub fn service_queue(service: &str) -> String {
    format!("guichet.routed.{service}.>")
}

/// The filter of one usager's whole history: `guichet.routed.*.<usager_id>`.
pub fn usager_history(usager_id: &str) -> String {
    format!("guichet.routed.*.{usager_id}")
}

/// Core-NATS decision event: `guichet.decided.<contact_id>`.
pub fn decided(contact_id: &str) -> String {
    format!("guichet.decided.{contact_id}")
}

/// `guichet.deadletter.<origin>` (origin: the service that gave up).
pub fn deadletter(origin: &str) -> String {
    format!("guichet.deadletter.{origin}")
}

/// `guichet.events.<kind>`.
pub fn event(kind: &str) -> String {
    format!("guichet.events.{kind}")
}

/// `guichet.outbox.<kind>.<usager_id>.<reference>.<event>`: one subject per
/// notification, so that JetStream refuses a second copy for as long as
/// OUTBOX keeps the first; the usager's token lets an erasure purge it.
pub fn outbox(kind: &str, usager_id: &str, reference: &str, event: &str) -> String {
    format!("guichet.outbox.{kind}.{usager_id}.{reference}.{event}")
}

/// Every notification to one usager on OUTBOX (what an erasure purges).
pub fn outbox_of_usager(usager_id: &str) -> String {
    format!("guichet.outbox.*.{usager_id}.>")
}

/// The stream of ours that stores `subject`, if any.
pub fn stream_of(subject: &str) -> Option<&'static str> {
    [
        (INTAKE_ALL, INTAKE_STREAM),
        (ROUTED_ALL, ROUTED_STREAM),
        (DEADLETTER_ALL, DEADLETTER_STREAM),
        (EVENTS_ALL, EVENTS_STREAM),
        (OUTBOX_ALL, OUTBOX_STREAM),
    ]
    .into_iter()
    .find(|(all, _)| subject.starts_with(all.trim_end_matches('>')))
    .map(|(_, stream)| stream)
}

/// Whether `s` can be one subject token (service names, usager ids).
pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_follow_the_design() {
        assert_eq!(intake(Channel::Email), "guichet.intake.email");
        let keyed = intake_keyed(Channel::Email, "mail:accueil:7:42");
        assert!(keyed.starts_with("guichet.intake.email."), "{keyed}");
        assert_eq!(keyed.len(), "guichet.intake.email.".len() + 32);
        assert_eq!(keyed, intake_keyed(Channel::Email, "mail:accueil:7:42"));
        assert_ne!(keyed, intake_keyed(Channel::Email, "mail:accueil:7:43"));
        assert_eq!(intake_channel(&keyed), Some("email"));
        assert_eq!(intake_channel("guichet.intake.web"), Some("web"));
        assert_eq!(intake_channel("guichet.routed.x.U1"), None);
        assert_eq!(routed("urbanisme", "U1"), "guichet.routed.urbanisme.U1");
        assert_eq!(usager_history("U1"), "guichet.routed.*.U1");
        assert_eq!(stream_of(&keyed), Some(INTAKE_STREAM));
        assert_eq!(stream_of("guichet.routed.x.U1"), Some(ROUTED_STREAM));
        assert_eq!(stream_of("guichet.intake"), None);
        assert_eq!(stream_of("other.subject"), None);
        assert!(is_token("etat-civil_2"));
        assert!(!is_token("a.b") && !is_token("a*") && !is_token("") && !is_token("a b"));
    }
}
