//! What a `RecordContact` request must satisfy before anything is stored:
//! the contract's limits (ids, subject, notes, attachments), the channel's
//! details, the usager's claims (through the same normalizers as the
//! router) and `[desk]`'s limits. Every violation is collected and named
//! in one INVALID_ARGUMENT, so an agent fixes everything at once.

use std::time::Duration;

use guichet_core::{
    identity::{normalize_email, normalize_phone},
    proto::v1::{CallDirection, Channel, IdentityClaims, RecordContactRequest, record_contact_request},
};
use tonic::Status;

use crate::{
    config::DeskConfig,
    status::{Violations, printable},
};

/// Longest `client_request_id`, `agent_id`.
pub const MAX_ID_LEN: usize = 128;
/// Longest subject, in characters.
const MAX_SUBJECT_CHARS: usize = 300;
/// Largest notes, in bytes.
const MAX_NOTES_BYTES: usize = 64 * 1024;
/// Most attachments on one contact.
const MAX_ATTACHMENTS: usize = 16;

/// What the validation kept: the parts of the request that go on the bus.
pub struct ValidRecord {
    pub channel: Channel,
    pub client_request_id: String,
    pub subject: String,
    pub wait: Option<Duration>,
}

/// Checks a `RecordContact` request against the contract's limits and
/// `config`'s; every violation is named in one INVALID_ARGUMENT.
pub fn record_request(config: &DeskConfig, r: &RecordContactRequest) -> Result<ValidRecord, Status> {
    let mut v = Violations::default();

    let crid = r.client_request_id.trim();
    if crid.is_empty() {
        v.add(
            "client_request_id",
            "required: an id of this request, reused on every retry (e.g. a UUID)",
        );
    } else if crid.len() > MAX_ID_LEN
        || !crid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    {
        v.add(
            "client_request_id",
            format!("1 to {MAX_ID_LEN} characters among letters, digits, '-', '_', '.', ':'"),
        );
    }

    let channel = match Channel::try_from(r.channel) {
        Ok(c @ (Channel::Counter | Channel::Phone | Channel::Postal)) => c,
        Ok(Channel::Unspecified) => {
            v.add("channel", "required: CHANNEL_COUNTER, CHANNEL_PHONE or CHANNEL_POSTAL");
            Channel::Unspecified
        }
        Ok(other) => {
            v.add(
                "channel",
                format!(
                    "{} contacts have their own adapter; desk records CHANNEL_COUNTER, CHANNEL_PHONE or CHANNEL_POSTAL",
                    other.as_str_name()
                ),
            );
            other
        }
        Err(_) => {
            v.add(
                "channel",
                format!(
                    "unknown channel {}; expected CHANNEL_COUNTER, CHANNEL_PHONE or CHANNEL_POSTAL",
                    r.channel
                ),
            );
            Channel::Unspecified
        }
    };

    let agent = r.agent_id.trim();
    if agent.is_empty() {
        v.add("agent_id", "required: the id of the agent who took the contact");
    } else if agent.len() > MAX_ID_LEN || agent.chars().any(char::is_control) {
        v.add(
            "agent_id",
            format!("at most {MAX_ID_LEN} characters, no control characters"),
        );
    }

    let subject = r.subject.trim();
    if subject.is_empty() {
        v.add("subject", "required: one line saying what the contact is about");
    } else if subject.chars().count() > MAX_SUBJECT_CHARS {
        v.add("subject", format!("at most {MAX_SUBJECT_CHARS} characters"));
    } else if subject.chars().any(char::is_control) {
        v.add("subject", "one line: no line breaks or control characters");
    }

    if r.notes.len() > MAX_NOTES_BYTES {
        v.add(
            "notes",
            format!(
                "{} bytes is over the limit of {MAX_NOTES_BYTES} bytes; attach long documents instead",
                r.notes.len()
            ),
        );
    }
    let language = r.language.trim();
    if language.len() > 35 || !language.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        v.add("language", "a BCP 47 tag such as \"fr\" or \"fr-FR\"");
    }

    if let Some(u) = &r.usager {
        validate_claims(u, &mut v);
    }

    match (&r.details, channel) {
        (None, _) => {}
        (Some(record_contact_request::Details::Call(c)), Channel::Phone) => {
            if CallDirection::try_from(c.direction).is_err() {
                v.add("call.direction", format!("unknown call direction {}", c.direction));
            }
            if c.line.len() > MAX_ID_LEN {
                v.add("call.line", format!("at most {MAX_ID_LEN} characters"));
            }
        }
        (Some(record_contact_request::Details::Counter(_)), Channel::Counter) => {}
        (Some(record_contact_request::Details::Postal(p)), Channel::Postal) => {
            if !p.dated.is_empty() && chrono::NaiveDate::parse_from_str(&p.dated, "%Y-%m-%d").is_err() {
                v.add("postal.dated", "a date as YYYY-MM-DD");
            }
            if p.registered_number.len() > 64 {
                v.add("postal.registered_number", "at most 64 characters");
            }
        }
        (Some(_), Channel::Unspecified | Channel::Email | Channel::Web) => {}
        (Some(d), _) => {
            let (field, fits) = match d {
                record_contact_request::Details::Call(_) => ("call", "CHANNEL_PHONE"),
                record_contact_request::Details::Counter(_) => ("counter", "CHANNEL_COUNTER"),
                record_contact_request::Details::Postal(_) => ("postal", "CHANNEL_POSTAL"),
            };
            v.add(field, format!("these details go with {fits} only"));
        }
    }

    if r.attachments.len() > MAX_ATTACHMENTS {
        v.add("attachments", format!("at most {MAX_ATTACHMENTS} attachments"));
    }
    let limit = config.max_attachment_size;
    for (i, a) in r.attachments.iter().enumerate() {
        if a.content.is_empty() {
            v.add(format!("attachments[{i}].content"), "empty file");
        } else if a.content.len() > limit {
            v.add(
                format!("attachments[{i}].content"),
                format!(
                    "{} bytes is over the limit of {limit} bytes (`desk.max_attachment_size`)",
                    a.content.len()
                ),
            );
        }
        if a.file_name.len() > 255 {
            v.add(format!("attachments[{i}].file_name"), "at most 255 bytes");
        }
        let mt = a.media_type.trim();
        if !mt.is_empty() && !is_media_type(mt) {
            v.add(
                format!("attachments[{i}].media_type"),
                "a media type such as \"application/pdf\"",
            );
        }
    }

    let wait = if r.wait_for_routing {
        match &r.routing_timeout {
            None => Some(config.wait_for_routing_timeout),
            Some(d) => {
                let max = config.wait_for_routing_max;
                match (u64::try_from(d.seconds), u32::try_from(d.nanos)) {
                    (Ok(s), Ok(n)) if n < 1_000_000_000 => {
                        let asked = Duration::new(s, n);
                        if asked > max {
                            v.add(
                                "routing_timeout",
                                format!("at most {max:?} (`desk.wait_for_routing_max`)"),
                            );
                        }
                        Some(asked)
                    }
                    _ => {
                        v.add("routing_timeout", "must not be negative");
                        None
                    }
                }
            }
        }
    } else {
        None
    };

    v.into_result()?;
    Ok(ValidRecord {
        channel,
        client_request_id: crid.to_owned(),
        subject: subject.to_owned(),
        wait,
    })
}

fn validate_claims(u: &IdentityClaims, v: &mut Violations) {
    if u.name.chars().count() > 200 || u.name.chars().any(char::is_control) {
        v.add("usager.name", "at most 200 characters, one line");
    }
    if !u.email.trim().is_empty()
        && let Err(e) = normalize_email(&u.email)
    {
        v.add("usager.email", identity_reason(&e));
    }
    if !u.phone.trim().is_empty()
        && let Err(e) = normalize_phone(&u.phone)
    {
        v.add("usager.phone", identity_reason(&e));
    }
    if !u.account_id.is_empty() || !u.account_issuer.is_empty() {
        v.add(
            "usager.account_id",
            "desk cannot vouch for a verified account: leave account_id and account_issuer empty",
        );
    }
    if let Some(a) = &u.postal_address {
        if a.lines.len() > 10 || a.lines.iter().any(|l| l.chars().count() > 200) {
            v.add("usager.postal_address.lines", "at most 10 lines of 200 characters");
        }
        if a.postal_code.len() > 16 {
            v.add("usager.postal_address.postal_code", "at most 16 characters");
        }
        if a.city.chars().count() > 200 {
            v.add("usager.postal_address.city", "at most 200 characters");
        }
        if a.country.len() > 2 || !a.country.bytes().all(|b| b.is_ascii_alphabetic()) {
            v.add(
                "usager.postal_address.country",
                "an ISO 3166-1 alpha-2 code such as \"FR\", or empty",
            );
        }
    }
}

/// The normalizer's reason, without echoing the value.
pub fn identity_reason(e: &guichet_core::Error) -> String {
    printable(&e.identity_reason(), 200)
}

fn is_media_type(s: &str) -> bool {
    let Some((top, sub)) = s.split(';').next().unwrap_or_default().trim().split_once('/') else {
        return false;
    };
    let token = |t: &str| {
        !t.is_empty()
            && t.len() <= 127
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    token(top) && token(sub)
}

#[cfg(test)]
mod tests {
    use guichet_core::proto::v1::{GetUsagerHistoryRequest, RecordContactRequest, get_usager_history_request::Usager};

    /// The proto3 JSON of the grpcurl examples of docs/desk.md is valid.
    #[test]
    fn readme_json_examples_parse() {
        let r: RecordContactRequest = serde_json::from_str(
            r#"{
  "clientRequestId": "visit-0001", "channel": "CHANNEL_COUNTER", "site": "accueil-dev",
  "agentId": "agent-42", "subject": "Renouvellement de carte d identité",
  "usager": {"name": "Jeanne Martin", "phone": "06 12 34 56 78"},
  "counter": {"waitSeconds": 240, "serviceSeconds": 600}, "waitForRouting": true
}"#,
        )
        .unwrap();
        assert_eq!(r.channel, super::Channel::Counter as i32);
        assert!(r.wait_for_routing && r.details.is_some());
        let h: GetUsagerHistoryRequest = serde_json::from_str(
            r#"{"site": "accueil-dev", "phone": "0612345678", "pageSize": 20, "agentId": "agent-42"}"#,
        )
        .unwrap();
        assert_eq!(h.usager, Some(Usager::Phone("0612345678".into())));
        assert_eq!((h.page_size, h.agent_id.as_str()), (20, "agent-42"));
    }

    #[test]
    fn media_types() {
        assert!(super::is_media_type("application/pdf"));
        assert!(super::is_media_type("image/svg+xml; charset=utf-8"));
        assert!(!super::is_media_type("pdf"));
        assert!(!super::is_media_type("a/b c"));
    }
}
