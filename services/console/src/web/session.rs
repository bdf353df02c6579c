//! Signed session cookies and CSRF tokens.
//!
//! A session is a cookie `guichet_console=<payload>.<mac>`: the payload
//! (user, role, expiry, a random session id) in hex and an
//! HMAC-SHA256 of it under the session key. Nothing is kept server-side,
//! so a forged or altered cookie is refused by its MAC, an old one by its
//! expiry. CSRF tokens are MACs too: of the session id for signed-in forms
//! (logout), of a random pre-login cookie for the login form, so a token
//! lifted from one browser is worth nothing in another.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, header};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::config::{Role, valid_user_name};

/// The session cookie.
pub const SESSION_COOKIE: &str = "guichet_console";
/// The pre-login cookie the login form's CSRF token is tied to.
pub const LOGIN_COOKIE: &str = "guichet_console_login";

/// A signed-in user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: String,
    pub role: Role,
    /// Unix seconds.
    pub expires: u64,
    /// Random, per login: what the CSRF token of this session is tied to.
    pub id: String,
}

/// The key signing cookies and tokens.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(…)")
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A random token, hex (128 bits).
pub fn random_token() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

impl Signer {
    pub fn new(key: Vec<u8>) -> Self {
        Self { key }
    }

    /// A key for this process only.
    pub fn random() -> Self {
        Self::new(rand::random::<[u8; 32]>().to_vec())
    }

    fn mac(&self, purpose: &str, data: &[u8]) -> Hmac<Sha256> {
        // Any key length is accepted by HMAC.
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.key) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        mac.update(purpose.as_bytes());
        mac.update(b"\0");
        mac.update(data);
        mac
    }

    fn sign(&self, purpose: &str, data: &[u8]) -> String {
        hex::encode(self.mac(purpose, data).finalize().into_bytes())
    }

    fn verify(&self, purpose: &str, data: &[u8], tag: &str) -> bool {
        let Ok(tag) = hex::decode(tag) else {
            return false;
        };
        // Constant-time comparison.
        self.mac(purpose, data).verify_slice(&tag).is_ok()
    }

    /// A new session for `user`, valid for `ttl`.
    pub fn new_session(&self, user: &str, role: Role, ttl: Duration) -> Session {
        Session {
            user: user.to_owned(),
            role,
            expires: now() + ttl.as_secs(),
            id: random_token(),
        }
    }

    /// The cookie value of `session`.
    pub fn encode(&self, session: &Session) -> String {
        let payload = format!(
            "{}|{}|{}|{}",
            session.user,
            session.role.as_str(),
            session.expires,
            session.id
        );
        let payload = hex::encode(payload);
        let tag = self.sign("session", payload.as_bytes());
        format!("{payload}.{tag}")
    }

    /// The session a cookie value carries, if its MAC is right and it has
    /// not expired.
    pub fn decode(&self, value: &str) -> Option<Session> {
        let (payload, tag) = value.split_once('.')?;
        if !self.verify("session", payload.as_bytes(), tag) {
            return None;
        }
        let payload = String::from_utf8(hex::decode(payload).ok()?).ok()?;
        let mut parts = payload.split('|');
        let user = parts.next()?.to_owned();
        let role = Role::parse(parts.next()?)?;
        let expires: u64 = parts.next()?.parse().ok()?;
        let id = parts.next()?.to_owned();
        if parts.next().is_some() || !valid_user_name(&user) || expires <= now() {
            return None;
        }
        Some(Session {
            user,
            role,
            expires,
            id,
        })
    }

    /// The CSRF token of forms posted within `session`.
    pub fn csrf_for_session(&self, session: &Session) -> String {
        self.sign("csrf-session", session.id.as_bytes())
    }

    /// The CSRF token of the login form, tied to the pre-login cookie.
    pub fn csrf_for_login(&self, login_nonce: &str) -> String {
        self.sign("csrf-login", login_nonce.as_bytes())
    }

    pub fn check_session_csrf(&self, session: &Session, token: &str) -> bool {
        self.verify("csrf-session", session.id.as_bytes(), token)
    }

    pub fn check_login_csrf(&self, login_nonce: &str, token: &str) -> bool {
        !login_nonce.is_empty() && self.verify("csrf-login", login_nonce.as_bytes(), token)
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, path `/`, `Secure`
/// when asked; `max_age` 0 deletes it.
pub fn set_cookie(name: &str, value: &str, max_age: Duration, secure: bool) -> String {
    format!(
        "{name}={value}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{}",
        max_age.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_round_trip_and_refuse_tampering() {
        let signer = Signer::random();
        let s = signer.new_session("marie", Role::Ops, Duration::from_secs(60));
        let cookie = signer.encode(&s);
        assert_eq!(signer.decode(&cookie), Some(s.clone()));
        // Another key, or a payload changed to another role, is refused.
        assert_eq!(Signer::random().decode(&cookie), None);
        let (_, tag) = cookie.split_once('.').unwrap();
        let forged = hex::encode(format!("marie|ops|{}|{}", s.expires + 1, s.id));
        assert_eq!(signer.decode(&format!("{forged}.{tag}")), None);
        // Expired.
        let mut old = s.clone();
        old.expires = now() - 1;
        assert_eq!(signer.decode(&signer.encode(&old)), None);
    }

    #[test]
    fn csrf_tokens_are_tied_to_their_session_or_login_cookie() {
        let signer = Signer::random();
        let a = signer.new_session("a", Role::Viewer, Duration::from_secs(60));
        let b = signer.new_session("a", Role::Viewer, Duration::from_secs(60));
        let token = signer.csrf_for_session(&a);
        assert!(signer.check_session_csrf(&a, &token));
        assert!(!signer.check_session_csrf(&b, &token));
        let login = signer.csrf_for_login("n1");
        assert!(signer.check_login_csrf("n1", &login));
        assert!(!signer.check_login_csrf("n2", &login));
        assert!(!signer.check_login_csrf("", &signer.csrf_for_login("")));
        // A session token is no login token.
        assert!(!signer.check_login_csrf(&a.id, &token));
    }

    #[test]
    fn cookies_are_read_from_any_cookie_header() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, "a=1; guichet_console=xyz".parse().unwrap());
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("xyz"));
        assert_eq!(cookie(&h, LOGIN_COOKIE), None);
    }
}
