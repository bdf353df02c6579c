//! `X-Guichet-Signature`: proof that a submission comes from the platform
//! that shares the form's secret, and that it is recent.
//!
//! `X-Guichet-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
//! The MAC covers the exact bytes of the body and the timestamp as sent;
//! it is compared in constant time. Several `v1=` entries may be sent
//! (a platform rotating its key signs with both); one match is enough.
//! Unknown entries (`v2=` …) are ignored, for a later scheme.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header's name.
pub const HEADER: &str = "x-guichet-signature";

type HmacSha256 = Hmac<Sha256>;

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureError {
    Missing,
    Malformed(&'static str),
    /// No `v1` matches the body and timestamp.
    Mismatch,
    /// The MAC is right but `t` is too far from now: a replay, or a clock off.
    OutsideWindow,
}

/// The hex HMAC-SHA256 of `"<t>.<body>"` under `key`.
pub fn sign(key: &[u8], t: &str, body: &[u8]) -> String {
    hex::encode(mac(key, t, body).finalize().into_bytes())
}

/// A complete header value for `body` signed at `t` (unix seconds).
pub fn header_value(key: &[u8], t: i64, body: &[u8]) -> String {
    let t = t.to_string();
    format!("t={t},v1={}", sign(key, &t, body))
}

fn mac(key: &[u8], t: &str, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length: this cannot fail.
    let mut mac =
        <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Checks `header` against `body` at time `now` (unix seconds).
pub fn verify(
    key: &[u8],
    header: Option<&[u8]>,
    body: &[u8],
    now: i64,
    window: Duration,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let header = std::str::from_utf8(header).map_err(|_| SignatureError::Malformed("not ASCII"))?;
    let mut t: Option<&str> = None;
    let mut candidates: Vec<Vec<u8>> = Vec::new();
    for part in header.split(',') {
        let Some((name, value)) = part.trim().split_once('=') else {
            return Err(SignatureError::Malformed("expected `t=<unix seconds>,v1=<hex>`"));
        };
        match name.trim() {
            "t" => t = Some(value.trim()),
            "v1" => {
                let bytes = hex::decode(value.trim()).map_err(|_| SignatureError::Malformed("`v1` is not hex"))?;
                // Bounded: a header is small, but do not HMAC a thousand times.
                if candidates.len() < 4 {
                    candidates.push(bytes);
                }
            }
            _ => {}
        }
    }
    let t = t.ok_or(SignatureError::Malformed("no `t=` timestamp"))?;
    let at: i64 = t
        .parse()
        .map_err(|_| SignatureError::Malformed("`t` is not a number of seconds"))?;
    if candidates.is_empty() {
        return Err(SignatureError::Malformed("no `v1=` signature"));
    }
    let base = mac(key, t, body);
    // `verify_slice` compares in constant time.
    let matched = candidates
        .iter()
        .fold(false, |found, c| base.clone().verify_slice(c).is_ok() | found);
    if !matched {
        return Err(SignatureError::Mismatch);
    }
    let window = i64::try_from(window.as_secs()).unwrap_or(i64::MAX);
    if now.abs_diff(at) > window.unsigned_abs() {
        return Err(SignatureError::OutsideWindow);
    }
    Ok(())
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

    #[test]
    fn accepts_a_fresh_signature_and_refuses_the_rest() {
        let body = br#"{"email":"a@example.fr"}"#;
        let now = 1_700_000_000;
        let good = header_value(KEY, now, body);
        assert_eq!(verify(KEY, Some(good.as_bytes()), body, now + 10, WINDOW), Ok(()));
        assert_eq!(verify(KEY, None, body, now, WINDOW), Err(SignatureError::Missing));
        assert_eq!(
            verify(KEY, Some(good.as_bytes()), b"{}", now, WINDOW),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"another-key-0123456", Some(good.as_bytes()), body, now, WINDOW),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(KEY, Some(good.as_bytes()), body, now + 301, WINDOW),
            Err(SignatureError::OutsideWindow)
        );
        assert_eq!(
            verify(KEY, Some(good.as_bytes()), body, now - 301, WINDOW),
            Err(SignatureError::OutsideWindow)
        );
        for bad in ["", "v1=00", "t=1", "t=x,v1=00", "t=1,v1=zz", "garbage"] {
            assert!(
                matches!(
                    verify(KEY, Some(bad.as_bytes()), body, now, WINDOW),
                    Err(SignatureError::Malformed(_))
                ),
                "{bad}"
            );
        }
        // Rotation: a second v1 that matches is enough; unknown schemes are ignored.
        let rotated = format!(
            "t={now},v1={},v1={},v2=abc",
            "00".repeat(32),
            sign(KEY, &now.to_string(), body)
        );
        assert_eq!(verify(KEY, Some(rotated.as_bytes()), body, now, WINDOW), Ok(()));
    }
}
