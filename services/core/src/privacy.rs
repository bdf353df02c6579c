//! Keyed pseudonyms: what stands for a person's e-mail address or phone
//! number in the logs and in the identity bucket's keys.
//!
//! Both are HMAC-SHA-256 under a secret of the configuration
//! (`privacy.pseudonym_key`, at least 32 bytes), so that a dictionary of
//! addresses, which reverses any plain hash, finds nothing without the
//! key. Two keys are derived from it, one per use, so that a log
//! pseudonym cannot be matched against an identity key:
//!
//! - log pseudonyms: `~` and 10 hex digits of HMAC(k_logs, value trimmed
//!   and lower-cased);
//! - identity keys: `<kind>.<key id>.` and 64 hex digits of
//!   HMAC(k_identity, SHA-256("<kind>:<normalized value>")), where the key
//!   id (8 hex digits of another derived value) tells which key wrote a
//!   key, so that a migration knows what is left to migrate. The HMAC is
//!   taken over the former plain digest (the key of a bucket written before
//!   keys existed), so that `guichet identity rekey --from-key plain-hash`
//!   migrates such a bucket without knowing a single address.
//!
//! One [`Pseudonymizer`] is built at start and handed to the services in
//! [`crate::ServiceContext`]. Log pseudonyms also read a process-wide copy
//! installed at start ([`crate::telemetry::install_pseudonym_key`]): they
//! are written from log lines in every crate, where threading a value
//! would change dozens of signatures for no gain (the key is fixed for the
//! life of the process, like the log subscriber itself).

use std::fmt;

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::{Error, identity::Identifier, secret::Secret};

/// The config key, in errors.
pub const KEY_NAME: &str = "privacy.pseudonym_key";
/// The shortest key accepted, in bytes: the HMAC's own security level.
pub const MIN_KEY_BYTES: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// `[privacy]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    /// The secret of log pseudonyms and identity keys (at least 32 bytes;
    /// `head -c 32 /dev/urandom | base64`). Required in production.
    /// Changing it orphans every identity key: rotate with
    /// `guichet identity rekey`.
    pub pseudonym_key: Option<Secret>,
}

/// Computes log pseudonyms and identity keys under one secret. Cheap to
/// clone; its `Debug` never shows the keys.
#[derive(Clone, PartialEq, Eq)]
pub struct Pseudonymizer {
    logs: [u8; 32],
    identity: [u8; 32],
    /// 8 hex digits naming the key in identity keys.
    key_id: String,
}

impl fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pseudonymizer(<keyed>)")
    }
}

impl Pseudonymizer {
    /// From the secret's value: at least [`MIN_KEY_BYTES`] bytes.
    pub fn new(secret: &[u8]) -> Result<Self, Error> {
        if secret.len() < MIN_KEY_BYTES {
            return Err(Error::config(
                KEY_NAME,
                format!(
                    "the key is {} bytes long; at least {MIN_KEY_BYTES} are needed (generate one with `head -c 32 /dev/urandom | base64`)",
                    secret.len()
                ),
            ));
        }
        Ok(Self::derived(secret))
    }

    fn derived(secret: &[u8]) -> Self {
        Self {
            logs: derive(secret, b"guichet log pseudonyms v1"),
            identity: derive(secret, b"guichet identity keys v1"),
            key_id: hex::encode(&derive(secret, b"guichet key id v1")[..4]),
        }
    }

    /// The key id written in identity keys (not secret: it only says
    /// which key wrote a key).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// From `[privacy]`: the key resolved and checked. `None` when no key
    /// is configured (the caller decides whether that is allowed).
    pub fn from_config(config: &PrivacyConfig) -> Result<Option<Self>, Error> {
        match &config.pseudonym_key {
            None => Ok(None),
            Some(secret) => Self::new(secret.resolve(KEY_NAME)?.as_bytes()).map(Some),
        }
    }

    /// A key drawn at random: pseudonyms stable for this process only.
    pub fn random() -> Self {
        let secret: [u8; 32] = rand::random();
        Self::derived(&secret)
    }

    /// A log pseudonym: `~` and 10 hex digits.
    pub fn pseudonym(&self, value: &str) -> String {
        let mac = hmac(&self.logs, value.trim().to_lowercase().as_bytes());
        format!("~{}", &hex::encode(mac)[..10])
    }

    /// The identity-bucket key of an identifier: `<kind>.<key id>.<64 hex>`.
    pub fn identity_key(&self, id: &Identifier) -> String {
        self.keyed(id.kind.as_str(), &plain_digest(id))
    }

    fn keyed(&self, kind: &str, digest: &[u8]) -> String {
        format!("{kind}.{}.{}", self.key_id, hex::encode(hmac(&self.identity, digest)))
    }

    /// Whether `key` is an identity key written with this key.
    pub fn is_current(&self, key: &str) -> bool {
        let mut labels = key.split('.');
        matches!(
            (labels.next(), labels.next(), labels.next(), labels.next()),
            (Some(kind), Some(id), Some(_), None) if IDENTIFIER_KINDS.contains(&kind) && id == self.key_id
        )
    }

    /// The key that replaces a plain (unkeyed, before keys existed)
    /// identity key `<kind>.<sha256 hex>`; `None` when `plain` is not one.
    pub fn rekey_plain(&self, plain: &str) -> Option<String> {
        let (kind, digest) = plain.split_once('.')?;
        if !IDENTIFIER_KINDS.contains(&kind) || digest.len() != 64 {
            return None;
        }
        let digest = hex::decode(digest).ok()?;
        Some(self.keyed(kind, &digest))
    }
}

/// The kinds of identifier keys (the first label of their key).
pub const IDENTIFIER_KINDS: [&str; 3] = ["account", "email", "phone"];

/// The plain key of an identifier, as written before keys existed:
/// `<kind>.<sha256("<kind>:<value>") hex>`. Only `rekey` needs it.
pub fn plain_identity_key(id: &Identifier) -> String {
    format!("{}.{}", id.kind.as_str(), hex::encode(plain_digest(id)))
}

fn plain_digest(id: &Identifier) -> [u8; 32] {
    Sha256::digest(format!("{}:{}", id.kind.as_str(), id.value).as_bytes()).into()
}

fn derive(secret: &[u8], purpose: &[u8]) -> [u8; 32] {
    hmac(secret, purpose)
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length: `new_from_slice` cannot fail.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{normalize_email, normalize_phone};

    const K1: &[u8] = b"0123456789abcdef0123456789abcdef";
    const K2: &[u8] = b"fedcba9876543210fedcba9876543210";

    #[test]
    fn short_keys_are_refused_naming_the_key() {
        let err = Pseudonymizer::new(b"short").unwrap_err();
        assert!(err.to_string().contains(KEY_NAME), "{err}");
        assert!(Pseudonymizer::new(K1).is_ok());
        assert!(!format!("{:?}", Pseudonymizer::new(K1).unwrap()).contains("0123"));
    }

    #[test]
    fn log_pseudonyms_are_stable_for_one_key_and_differ_across_keys() {
        let (a, b) = (Pseudonymizer::new(K1).unwrap(), Pseudonymizer::new(K2).unwrap());
        let p = a.pseudonym("Jeanne.Martin@example.fr");
        assert_eq!(p, a.pseudonym(" jeanne.martin@example.fr "));
        assert_eq!(p.len(), 11);
        assert!(p.starts_with('~') && !p.contains("jeanne"));
        assert_ne!(p, a.pseudonym("paul@example.fr"));
        assert_ne!(p, b.pseudonym("Jeanne.Martin@example.fr"));
        // Not the plain hash any more.
        let plain = hex::encode(Sha256::digest(b"jeanne.martin@example.fr"));
        assert_ne!(p[1..], plain[..10]);
    }

    #[test]
    fn identity_keys_are_keyed_and_plain_keys_migrate_to_them() {
        let (a, b) = (Pseudonymizer::new(K1).unwrap(), Pseudonymizer::new(K2).unwrap());
        let email = normalize_email("jeanne@example.fr").unwrap();
        let phone = normalize_phone("06 12 34 56 78").unwrap();
        for id in [&email, &phone] {
            let key = a.identity_key(id);
            assert!(key.starts_with(&format!("{}.", id.kind.as_str())), "{key}");
            assert_eq!(key.len(), id.kind.as_str().len() + 1 + 8 + 1 + 64);
            assert!(a.is_current(&key) && !b.is_current(&key) && !a.is_current(&plain_identity_key(id)));
            assert_ne!(key, b.identity_key(id));
            assert_ne!(key, plain_identity_key(id));
            assert_eq!(a.rekey_plain(&plain_identity_key(id)).as_deref(), Some(key.as_str()));
        }
        // The log pseudonym and the identity key share nothing.
        assert!(!a.identity_key(&email).contains(&a.pseudonym("jeanne@example.fr")[1..]));
        for not_plain in ["usager.U1", "alias.U1", "email.xyz", "email.", "fax.0000"] {
            assert_eq!(a.rekey_plain(not_plain), None, "{not_plain}");
        }
    }
}
