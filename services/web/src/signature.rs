//! `X-Guichet-Signature`: proof that a submission comes from the platform
//! that shares the form's secret, and that it is recent.
//!
//! `X-Guichet-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
//! The MAC covers the exact bytes of the body and the timestamp as sent;
//! it is compared in constant time. Several `v1=` entries may be sent
//! (a platform rotating its key signs with both); one match is enough.
//! Only the first 4 entries of each scheme are kept (the rest are ignored,
//! so a long header costs no more than four MACs).
//!
//! `v2=<hex HMAC-SHA256(secret, "<t>.<Idempotency-Key>.<body>")>` also
//! covers the `Idempotency-Key` header (empty when absent). With `v1`
//! alone, someone who captured a signed request could resend it within the
//! window under another key and create a second contact; a form with
//! `signature_scheme = "v2"` accepts `v2` only. Unknown entries (`v3=` …)
//! are ignored, for a later scheme.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

/// The header's name.
pub const HEADER: &str = "x-guichet-signature";

type HmacSha256 = Hmac<Sha256>;

/// Which signatures a form accepts (`signature_scheme`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// `v1` or `v2`: what platforms sent before `v2` existed still works.
    #[default]
    V1,
    /// `v2` only: the `Idempotency-Key` is signed too.
    V2,
}

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureError {
    Missing,
    Malformed(&'static str),
    /// The form asks for `v2` and the request carries only `v1`.
    V2Required,
    /// No `v1` matches the body and timestamp.
    Mismatch,
    /// The MAC is right but `t` is too far from now: a replay, or a clock off.
    OutsideWindow,
}

/// The hex HMAC-SHA256 of `"<t>.<body>"` under `key`.
pub fn sign(key: &[u8], t: &str, body: &[u8]) -> String {
    hex::encode(mac(key, t, None, body).finalize().into_bytes())
}

/// A complete header value for `body` signed at `t` (unix seconds).
pub fn header_value(key: &[u8], t: i64, body: &[u8]) -> String {
    let t = t.to_string();
    format!("t={t},v1={}", sign(key, &t, body))
}

/// A `v2` header value: the `Idempotency-Key` (empty if none) is signed too.
pub fn header_value_v2(key: &[u8], t: i64, idempotency_key: &str, body: &[u8]) -> String {
    let t = t.to_string();
    let mac = mac(key, &t, Some(idempotency_key), body);
    format!("t={t},v2={}", hex::encode(mac.finalize().into_bytes()))
}

/// The MAC of `"<t>.<body>"` (v1), or `"<t>.<idempotency key>.<body>"` (v2).
fn mac(key: &[u8], t: &str, idempotency_key: Option<&str>, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length: this cannot fail.
    let mut mac =
        <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(t.as_bytes());
    mac.update(b".");
    if let Some(idempotency_key) = idempotency_key {
        mac.update(idempotency_key.as_bytes());
        mac.update(b".");
    }
    mac.update(body);
    mac
}

/// What a request brings to be checked.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    /// The `X-Guichet-Signature` header, if any.
    pub header: Option<&'a [u8]>,
    /// The `Idempotency-Key` header, if any.
    pub idempotency_key: Option<&'a str>,
    pub body: &'a [u8],
}

/// Checks a request's signature under `key` at time `now` (unix seconds).
pub fn verify(
    key: &[u8],
    scheme: Scheme,
    signed: Signed<'_>,
    now: i64,
    window: Duration,
) -> Result<(), SignatureError> {
    let mut verifier = Verifier::new(key, scheme, signed.header, signed.idempotency_key)?;
    verifier.update(signed.body);
    verifier.finish(now, window)
}

/// A signature checked as the body arrives: the header is parsed before
/// the body is read (a request without a usable header is refused before
/// it can send anything), the MAC is fed chunk by chunk (a large body is
/// never needed whole), and [`Verifier::finish`] compares at the end.
pub struct Verifier {
    /// `t` as sent (it is signed as text).
    at: i64,
    /// The signatures sent for the scheme checked (at most 4).
    candidates: Vec<Vec<u8>>,
    /// The MAC of `"<t>."` (and the `Idempotency-Key` for v2), then the body so far.
    mac: HmacSha256,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither the key's MAC state nor the signatures belong in a log.
        f.debug_struct("Verifier").field("at", &self.at).finish_non_exhaustive()
    }
}

impl Verifier {
    /// Parses the `X-Guichet-Signature` header (`header`) for a form of
    /// `scheme` keyed with `key`.
    pub fn new(
        key: &[u8],
        scheme: Scheme,
        header: Option<&[u8]>,
        idempotency_key: Option<&str>,
    ) -> Result<Self, SignatureError> {
        let header = header.ok_or(SignatureError::Missing)?;
        let header = std::str::from_utf8(header).map_err(|_| SignatureError::Malformed("not ASCII"))?;
        let mut t: Option<&str> = None;
        let mut v1: Vec<Vec<u8>> = Vec::new();
        let mut v2: Vec<Vec<u8>> = Vec::new();
        for part in header.split(',') {
            let Some((name, value)) = part.trim().split_once('=') else {
                return Err(SignatureError::Malformed("expected `t=<unix seconds>,v1=<hex>`"));
            };
            let candidates = match name.trim() {
                "t" => {
                    t = Some(value.trim());
                    continue;
                }
                "v1" => &mut v1,
                "v2" => &mut v2,
                _ => continue,
            };
            let bytes = hex::decode(value.trim()).map_err(|_| SignatureError::Malformed("a signature is not hex"))?;
            // Bounded: a header is small, but do not HMAC a thousand times.
            if candidates.len() < 4 {
                candidates.push(bytes);
            }
        }
        let t = t.ok_or(SignatureError::Malformed("no `t=` timestamp"))?;
        let at: i64 = t
            .parse()
            .map_err(|_| SignatureError::Malformed("`t` is not a number of seconds"))?;
        // A `v2` is checked when sent (it says more); `v1` only where allowed.
        let (candidates, mac) = if !v2.is_empty() {
            (v2, mac(key, t, Some(idempotency_key.unwrap_or_default()), b""))
        } else if scheme == Scheme::V2 {
            return Err(if v1.is_empty() {
                SignatureError::Malformed("no `v2=` signature")
            } else {
                SignatureError::V2Required
            });
        } else if !v1.is_empty() {
            (v1, mac(key, t, None, b""))
        } else {
            return Err(SignatureError::Malformed("no `v1=` or `v2=` signature"));
        };
        Ok(Self { at, candidates, mac })
    }

    /// Feeds the next bytes of the body.
    pub fn update(&mut self, chunk: &[u8]) {
        self.mac.update(chunk);
    }

    /// Whether one of the signatures is the MAC of the whole body, then
    /// whether `t` is within `window` of `now`.
    pub fn finish(self, now: i64, window: Duration) -> Result<(), SignatureError> {
        // `verify_slice` compares in constant time.
        let matched = self
            .candidates
            .iter()
            .fold(false, |found, c| self.mac.clone().verify_slice(c).is_ok() | found);
        if !matched {
            return Err(SignatureError::Mismatch);
        }
        let window = i64::try_from(window.as_secs()).unwrap_or(i64::MAX);
        if now.abs_diff(self.at) > window.unsigned_abs() {
            return Err(SignatureError::OutsideWindow);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"dev-secret-0123456789";
    const WINDOW: Duration = Duration::from_secs(300);

    #[test]
    fn known_vector_matches_openssl() {
        // echo -n '1700000000.{"a":1}' | openssl dgst -sha256 -hmac dev-secret-0123456789
        assert_eq!(
            sign(KEY, "1700000000", br#"{"a":1}"#),
            "6c8383f465c5dc9e535b19f1e6b42707b035a529b2f28a09e8a49863b592600d"
        );
    }

    fn check(
        key: &[u8],
        scheme: Scheme,
        header: Option<&str>,
        idempotency_key: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<(), SignatureError> {
        let signed = Signed {
            header: header.map(str::as_bytes),
            idempotency_key,
            body,
        };
        verify(key, scheme, signed, now, WINDOW)
    }

    #[test]
    fn accepts_a_fresh_signature_and_refuses_the_rest() {
        let body = br#"{"email":"a@example.fr"}"#;
        let now = 1_700_000_000;
        let good = header_value(KEY, now, body);
        let v1 = |key: &[u8], header: Option<&str>, body: &[u8], now| check(key, Scheme::V1, header, None, body, now);
        assert_eq!(v1(KEY, Some(&good), body, now + 10), Ok(()));
        assert_eq!(v1(KEY, None, body, now), Err(SignatureError::Missing));
        assert_eq!(v1(KEY, Some(&good), b"{}", now), Err(SignatureError::Mismatch));
        assert_eq!(
            v1(b"another-key-0123456", Some(&good), body, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            v1(KEY, Some(&good), body, now + 301),
            Err(SignatureError::OutsideWindow)
        );
        assert_eq!(
            v1(KEY, Some(&good), body, now - 301),
            Err(SignatureError::OutsideWindow)
        );
        for bad in ["", "v1=00", "t=1", "t=x,v1=00", "t=1,v1=zz", "t=1,v2=zz", "garbage"] {
            assert!(
                matches!(v1(KEY, Some(bad), body, now), Err(SignatureError::Malformed(_))),
                "{bad}"
            );
        }
        // Rotation: a second v1 that matches is enough; unknown schemes are ignored.
        let rotated = format!(
            "t={now},v1={},v1={},v3=abc",
            "00".repeat(32),
            sign(KEY, &now.to_string(), body)
        );
        assert_eq!(v1(KEY, Some(&rotated), body, now), Ok(()));
    }

    #[test]
    fn a_body_fed_in_chunks_verifies_like_the_whole() {
        let body = b"0123456789abcdefghij".repeat(100);
        let now = 1_700_000_000;
        let header = header_value(KEY, now, &body);
        let mut verifier = Verifier::new(KEY, Scheme::V1, Some(header.as_bytes()), None).unwrap();
        for chunk in body.chunks(7) {
            verifier.update(chunk);
        }
        assert_eq!(verifier.finish(now, WINDOW), Ok(()));
        let mut short = Verifier::new(KEY, Scheme::V1, Some(header.as_bytes()), None).unwrap();
        short.update(&body[..body.len() - 1]);
        assert_eq!(short.finish(now, WINDOW), Err(SignatureError::Mismatch));
    }

    #[test]
    fn v2_signs_the_idempotency_key_and_a_v2_form_wants_it() {
        let body = br#"{"email":"a@example.fr"}"#;
        let now = 1_700_000_000;
        let signed = header_value_v2(KEY, now, "sub-42", body);
        for scheme in [Scheme::V1, Scheme::V2] {
            assert_eq!(check(KEY, scheme, Some(&signed), Some("sub-42"), body, now), Ok(()));
            // The same signature under another key is a replay, not a retry.
            assert_eq!(
                check(KEY, scheme, Some(&signed), Some("sub-43"), body, now),
                Err(SignatureError::Mismatch)
            );
            assert_eq!(
                check(KEY, scheme, Some(&signed), None, body, now),
                Err(SignatureError::Mismatch)
            );
        }
        // No key sent: the empty string is signed.
        let keyless = header_value_v2(KEY, now, "", body);
        assert_eq!(check(KEY, Scheme::V2, Some(&keyless), None, body, now), Ok(()));
        // A v2 form refuses v1, naming what it wants.
        let v1 = header_value(KEY, now, body);
        assert_eq!(
            check(KEY, Scheme::V2, Some(&v1), Some("sub-42"), body, now),
            Err(SignatureError::V2Required)
        );
        // A v2 that does not match is not rescued by a v1 beside it.
        let both = format!("{v1},v2={}", "00".repeat(32));
        assert_eq!(
            check(KEY, Scheme::V1, Some(&both), Some("sub-42"), body, now),
            Err(SignatureError::Mismatch)
        );
    }
}
