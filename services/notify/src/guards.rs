//! Never fuel a loop or a flood: who must never get an automatic message.
//!
//! A contact flagged auto-reply, bounce or bulk, one whose e-mail says
//! `Auto-Submitted` (RFC 3834), an address that is a robot's
//! (`noreply`, `mailer-daemon`, ...), the town's own mailboxes (watched by
//! `mail`, the services' addresses, `notify.never_send_to`), and an address
//! that is not one. The per-usager hourly limit is in [`crate::rate`].

use std::collections::HashSet;

use guichet_core::proto::v1::{Contact, FlagKind, contact::Details};

/// Why a message was not sent: the `outcome` label and the event reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suppressed {
    AutoReply,
    Bounce,
    Bulk,
    AutoSubmitted,
    RobotAddress,
    OwnMailbox,
    BadAddress,
    RateLimit,
}

impl Suppressed {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AutoReply => "auto_reply",
            Self::Bounce => "bounce",
            Self::Bulk => "bulk",
            Self::AutoSubmitted => "auto_submitted",
            Self::RobotAddress => "robot_address",
            Self::OwnMailbox => "own_mailbox",
            Self::BadAddress => "bad_address",
            Self::RateLimit => "rate_limit",
        }
    }
}

/// Local parts of addresses no human reads.
const ROBOT_LOCAL_PARTS: &[&str] = &[
    "noreply",
    "no-reply",
    "no_reply",
    "donotreply",
    "do-not-reply",
    "do_not_reply",
    "nepasrepondre",
    "ne-pas-repondre",
    "ne_pas_repondre",
    "mailer-daemon",
    "postmaster",
    "bounce",
    "bounces",
    "listserv",
    "majordomo",
];

/// The town's own addresses, lower-cased.
#[derive(Debug, Clone, Default)]
pub struct OwnAddresses(HashSet<String>);

impl OwnAddresses {
    pub fn new<'a>(addresses: impl IntoIterator<Item = &'a str>) -> Self {
        Self(addresses.into_iter().map(|a| a.trim().to_ascii_lowercase()).collect())
    }

    pub fn extend<'a>(&mut self, addresses: impl IntoIterator<Item = &'a str>) {
        self.0
            .extend(addresses.into_iter().map(|a| a.trim().to_ascii_lowercase()));
    }

    fn contains(&self, address: &str) -> bool {
        self.0.contains(address)
    }
}

/// Whether an address's local part is a robot's.
pub fn is_robot(address: &str) -> bool {
    let local = address.split('@').next().unwrap_or("").to_ascii_lowercase();
    // "noreply+tag", "bounces-123": the part before the first separator counts too.
    let head = local.split(['+', '.']).next().unwrap_or("");
    ROBOT_LOCAL_PARTS
        .iter()
        .any(|r| local == *r || head == *r || local.starts_with(&format!("{r}-")))
}

/// Whether `contact` may be written to at `address`; the first reason
/// found otherwise.
pub fn check(contact: &Contact, address: &str, own: &OwnAddresses) -> Result<(), Suppressed> {
    for flag in &contact.flags {
        match FlagKind::try_from(flag.kind) {
            Ok(FlagKind::AutoReply) => return Err(Suppressed::AutoReply),
            Ok(FlagKind::Bounce) => return Err(Suppressed::Bounce),
            Ok(FlagKind::Bulk) => return Err(Suppressed::Bulk),
            _ => {}
        }
    }
    if let Some(Details::Email(email)) = &contact.details {
        let auto = email.auto_submitted.trim();
        if !auto.is_empty() && !auto.eq_ignore_ascii_case("no") {
            return Err(Suppressed::AutoSubmitted);
        }
    }
    let address = address.trim().to_ascii_lowercase();
    if !guichet_rules::service_contact::is_address(&address) {
        return Err(Suppressed::BadAddress);
    }
    if is_robot(&address) {
        return Err(Suppressed::RobotAddress);
    }
    if own.contains(&address) {
        return Err(Suppressed::OwnMailbox);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use guichet_core::proto::v1::{EmailDetails, Flag};

    use super::*;

    #[test]
    fn robots_flags_and_own_mailboxes_are_refused() {
        let own = OwnAddresses::new(["Accueil@Ville.example"]);
        let plain = Contact::default();
        assert_eq!(check(&plain, "camille@example.org", &own), Ok(()));
        assert_eq!(
            check(&plain, "accueil@ville.example", &own),
            Err(Suppressed::OwnMailbox)
        );
        for robot in [
            "noreply@x.example",
            "No-Reply+42@x.example",
            "MAILER-DAEMON@x.example",
            "bounces-7@x.example",
        ] {
            assert_eq!(check(&plain, robot, &own), Err(Suppressed::RobotAddress), "{robot}");
        }
        assert_eq!(check(&plain, "norbert@x.example", &own), Ok(()));
        assert_eq!(check(&plain, "not an address", &own), Err(Suppressed::BadAddress));
        let flagged = Contact {
            flags: vec![Flag {
                kind: FlagKind::Bounce as i32,
                reason: String::new(),
            }],
            ..Contact::default()
        };
        assert_eq!(check(&flagged, "camille@example.org", &own), Err(Suppressed::Bounce));
        let auto = Contact {
            details: Some(Details::Email(EmailDetails {
                auto_submitted: "auto-replied".into(),
                ..EmailDetails::default()
            })),
            ..Contact::default()
        };
        assert_eq!(
            check(&auto, "camille@example.org", &own),
            Err(Suppressed::AutoSubmitted)
        );
    }
}
