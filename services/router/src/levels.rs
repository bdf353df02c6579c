//! Identity levels: how far a claimed identifier is vouched for
//! (`declared` < `verified` < `certified`), and the level at which a
//! usager holds each of its identifiers.
//!
//! The adapters set a level per claim from their configuration (the
//! contract's `IdentityLevel`, unset = declared). A usager's record keeps
//! the highest level each of its identifiers was ever claimed at
//! (`levels`, declared ones omitted), so that a weaker claim met later
//! can be weighed against it: a lower level never re-points an identifier
//! held at a higher level, and a conflict between a certified and a
//! declared claim is settled for the certified one ([`crate::identity`]).

use guichet_core::{
    identity::IdentifierKind,
    proto::v1::{IdentityClaims, IdentityLevel},
};
use serde::{Deserialize, Serialize};

/// A claim's or a holding's level, weakest first (so `Ord` ranks them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Typed by the usager or an agent, checked by nobody.
    #[default]
    Declared,
    /// Verified by the platform (a confirmed address, an SMS code, an
    /// identity document seen at a desk).
    Verified,
    /// Vouched for by an identity provider (FranceConnect).
    Certified,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Declared => "declared",
            Level::Verified => "verified",
            Level::Certified => "certified",
        }
    }

    /// The contract's value; an unknown number (a newer adapter) counts
    /// as declared, never as more than the router understands.
    pub fn from_proto(value: i32) -> Self {
        match IdentityLevel::try_from(value) {
            Ok(IdentityLevel::Verified) => Level::Verified,
            Ok(IdentityLevel::Certified) => Level::Certified,
            Ok(IdentityLevel::Declared) | Err(_) => Level::Declared,
        }
    }

    /// The level `claims` give the identifier of `kind`.
    pub fn claimed(claims: &IdentityClaims, kind: IdentifierKind) -> Self {
        Self::from_proto(match kind {
            IdentifierKind::Account => claims.account_level,
            IdentifierKind::Email => claims.email_level,
            IdentifierKind::Phone => claims.phone_level,
        })
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_rank_declared_below_verified_below_certified_and_unknown_counts_as_declared() {
        assert!(Level::Declared < Level::Verified && Level::Verified < Level::Certified);
        assert_eq!(Level::from_proto(IdentityLevel::Certified as i32), Level::Certified);
        assert_eq!(Level::from_proto(0), Level::Declared);
        assert_eq!(Level::from_proto(99), Level::Declared);
        let claims = IdentityClaims {
            phone_level: IdentityLevel::Verified as i32,
            ..Default::default()
        };
        assert_eq!(Level::claimed(&claims, IdentifierKind::Phone), Level::Verified);
        assert_eq!(Level::claimed(&claims, IdentifierKind::Email), Level::Declared);
        assert_eq!(serde_json::to_string(&Level::Certified).unwrap(), "\"certified\"");
    }
}
