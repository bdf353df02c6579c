//! Who is asking: the trusted proxy's header, or a signed session cookie
//! from the login form; roles; login and logout.
//!
//! The proxy header is believed only when the TCP peer (not any
//! `X-Forwarded-For`, which anyone can write) is a trusted proxy; from
//! anyone else it is ignored, and the request is treated as anonymous.
//! Anonymous pages get a redirect to the login form, anonymous API and
//! CSV requests a 401. Login and logout are POSTs with a CSRF token tied
//! to the browser (see [`super::session`]), throttled per client address
//! (see [`super::throttle`]).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier, password_hash::SaltString};
use axum::{
    Form,
    extract::{ConnectInfo, FromRequestParts, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Redirect, Response},
};
use serde::Deserialize;

use super::{
    WebState,
    config::{Role, valid_user_name},
    render::{self, Viewer},
    session::{LOGIN_COOKIE, SESSION_COOKIE, Session, cookie, random_token, set_cookie},
    throttle::Refusal,
};
use crate::ConsoleError;

/// A signed-in user, from the proxy header or a session.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub role: Role,
    /// The session, when signed in through the form (not the proxy).
    pub session: Option<Session>,
    csrf: Option<String>,
}

impl User {
    /// The header's view of this user.
    pub fn viewer(&self) -> Viewer<'_> {
        Viewer {
            user: &self.name,
            role: self.role,
            csrf: self.csrf.clone(),
        }
    }

    /// The 403 page when the user lacks `role`; `None` when allowed.
    pub fn forbidden_unless(&self, role: Role) -> Option<Response> {
        if self.role >= role {
            return None;
        }
        let mut r = render::message(
            Some(&self.viewer()),
            "Accès refusé",
            "Cette page est réservée au rôle « exploitation » (ops). Demandez ce rôle à l'administrateur de la console.",
        );
        *r.status_mut() = StatusCode::FORBIDDEN;
        Some(r)
    }
}

/// The peer's address (the server is started with connect info).
fn peer(parts: &Parts) -> Option<SocketAddr> {
    parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0)
}

/// Whether a request is for programs (API, a CSV export): they get 401,
/// not a redirect to a form.
fn is_machine_request(uri: &axum::http::Uri) -> bool {
    uri.path().starts_with("/api/")
        || uri
            .query()
            .is_some_and(|q| q.split('&').any(|pair| pair.starts_with("csv=")))
}

impl WebState {
    /// The user a request is from, if any.
    pub fn identify(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<User> {
        if let (Some(name), Some(peer)) = (&self.proxy_header, peer)
            && self.trusted.iter().any(|n| n.contains(peer.ip()))
            && let Some(user) = headers.get(name).and_then(|v| v.to_str().ok())
        {
            let user = user.trim();
            if valid_user_name(user) {
                let role = self
                    .auth
                    .proxy_roles
                    .get(user)
                    .copied()
                    .unwrap_or(self.auth.proxy_default_role);
                return Some(User {
                    name: user.to_owned(),
                    role,
                    session: None,
                    csrf: None,
                });
            }
        }
        let session = self.signer.decode(cookie(headers, SESSION_COOKIE)?)?;
        // An account removed or demoted since login loses its session.
        let account = self.auth.accounts.iter().find(|a| a.user == session.user)?;
        if account.role != session.role {
            return None;
        }
        Some(User {
            name: session.user.clone(),
            role: session.role,
            csrf: Some(self.signer.csrf_for_session(&session)),
            session: Some(session),
        })
    }
}

impl FromRequestParts<Arc<WebState>> for User {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<WebState>) -> Result<Self, Response> {
        if let Some(user) = state.identify(peer(parts), &parts.headers) {
            return Ok(user);
        }
        if is_machine_request(&parts.uri) {
            return Err((
                StatusCode::UNAUTHORIZED,
                "authentication required: sign in at /login, or come through the trusted proxy",
            )
                .into_response());
        }
        let next = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let query = serde_urlencoded_pair("next", next);
        Err(Redirect::to(&format!("/login?{query}")).into_response())
    }
}

fn serde_urlencoded_pair(key: &str, value: &str) -> String {
    let mut out = format!("{key}=");
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Where to go after login: a path of this site only (no open redirect).
fn safe_next(next: &str) -> &str {
    if next.starts_with('/') && !next.starts_with("//") && !next.contains('\\') {
        next
    } else {
        "/"
    }
}

#[derive(Debug, Deserialize, Default)]
pub struct NextQuery {
    #[serde(default)]
    next: String,
}

/// `GET /login`: the form, with a fresh pre-login cookie its token is tied to.
pub async fn login_form(
    State(state): State<Arc<WebState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<NextQuery>,
) -> Response {
    let next = safe_next(&q.next);
    if state.identify(Some(peer), &headers).is_some() {
        return Redirect::to(next).into_response();
    }
    login_page(&state, &headers, next, "", None, StatusCode::OK)
}

/// The login form. The pre-login cookie the browser already has is kept
/// (a second tab, or a stray request redirected here, must not invalidate
/// the form on screen); a new one is made otherwise.
fn login_page(
    state: &WebState,
    headers: &HeaderMap,
    next: &str,
    user: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let nonce = cookie(headers, LOGIN_COOKIE)
        .filter(|n| n.len() == 32 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_owned)
        .unwrap_or_else(random_token);
    let mut r = render::login(&state.signer.csrf_for_login(&nonce), next, user, error);
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(&set_cookie(
        LOGIN_COOKIE,
        &nonce,
        Duration::from_secs(3600),
        state.auth.secure_cookies,
    )) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: String,
}

/// `POST /login`.
pub async fn login(
    State(state): State<Arc<WebState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = safe_next(&form.next).to_owned();
    let nonce = cookie(&headers, LOGIN_COOKIE).unwrap_or("");
    if !state.signer.check_login_csrf(nonce, &form.csrf) {
        return login_page(
            &state,
            &headers,
            &next,
            "",
            Some("Le formulaire a expiré ou ne vient pas de cette page : reprenez la connexion."),
            StatusCode::FORBIDDEN,
        );
    }
    let permit = match state.throttle.admit(peer.ip()) {
        Ok(p) => p,
        Err(refusal) => {
            let (message, status, wait) = match refusal {
                Refusal::TooMany(wait) => (
                    "Trop de tentatives de connexion depuis cette adresse : réessayez plus tard.",
                    StatusCode::TOO_MANY_REQUESTS,
                    wait.as_secs().max(1),
                ),
                Refusal::Busy => (
                    "La console est occupée : réessayez dans un instant.",
                    StatusCode::SERVICE_UNAVAILABLE,
                    1,
                ),
            };
            let mut r = login_page(&state, &headers, &next, "", Some(message), status);
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(wait));
            return r;
        }
    };
    let account = state.auth.accounts.iter().find(|a| a.user == form.user).cloned();
    // An unknown user costs the same hash as a known one: timing does not
    // tell which names exist.
    let hash = account
        .as_ref()
        .map(|a| a.password_hash.clone())
        .unwrap_or_else(|| state.dummy_hash.clone());
    let password = form.password;
    let verified = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
        .await
        .unwrap_or(false);
    drop(permit);
    match account {
        Some(account) if verified => {
            state.throttle.succeeded(peer.ip());
            let session = state
                .signer
                .new_session(&account.user, account.role, state.auth.session_ttl);
            tracing::info!(role = account.role.as_str(), "console login");
            let mut r = Redirect::to(&next).into_response();
            let cookies = [
                set_cookie(
                    SESSION_COOKIE,
                    &state.signer.encode(&session),
                    state.auth.session_ttl,
                    state.auth.secure_cookies,
                ),
                set_cookie(LOGIN_COOKIE, "", Duration::ZERO, state.auth.secure_cookies),
            ];
            for c in cookies {
                if let Ok(v) = HeaderValue::from_str(&c) {
                    r.headers_mut().append(header::SET_COOKIE, v);
                }
            }
            r
        }
        _ => {
            state.throttle.failed(peer.ip());
            tracing::info!("console login refused");
            login_page(
                &state,
                &headers,
                &next,
                &form.user,
                Some("Identifiant ou mot de passe incorrect."),
                StatusCode::UNAUTHORIZED,
            )
        }
    }
}

#[derive(Deserialize)]
pub struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /logout`: ends a form session (the cookie is deleted).
pub async fn logout(State(state): State<Arc<WebState>>, user: User, Form(form): Form<LogoutForm>) -> Response {
    let Some(session) = &user.session else {
        return render::message(
            Some(&user.viewer()),
            "Déconnexion",
            "Vous êtes connecté par le portail d'authentification de la collectivité : déconnectez-vous depuis celui-ci.",
        );
    };
    if !state.signer.check_session_csrf(session, &form.csrf) {
        let mut r = render::message(
            Some(&user.viewer()),
            "Requête refusée",
            "Le formulaire ne vient pas de cette page (jeton CSRF absent ou faux) : rien n'a été fait.",
        );
        *r.status_mut() = StatusCode::FORBIDDEN;
        return r;
    }
    let mut r = Redirect::to("/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&set_cookie(
        SESSION_COOKIE,
        "",
        Duration::ZERO,
        state.auth.secure_cookies,
    )) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// An argon2id PHC hash of `password` (default parameters, random salt),
/// for `[[console.auth.accounts]] password_hash`.
pub fn hash_password(password: &str) -> Result<String, ConsoleError> {
    if password.chars().count() < 12 {
        return Err(ConsoleError::Invalid(
            "the password is too short: 12 characters at least".into(),
        ));
    }
    let salt =
        SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|e| ConsoleError::Invalid(format!("salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ConsoleError::Invalid(format!("hashing the password: {e}")))
}

/// Whether `password` matches the PHC `hash` (its own parameters).
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse batterY", &h));
        assert!(!verify_password("x", "not a hash"));
        assert!(hash_password("short").is_err());
    }

    #[test]
    fn only_local_paths_are_followed_after_login() {
        assert_eq!(
            safe_next("/service/voirie?period=2026-11"),
            "/service/voirie?period=2026-11"
        );
        assert_eq!(safe_next("//evil.example/"), "/");
        assert_eq!(safe_next("https://evil.example/"), "/");
        assert_eq!(safe_next("/\\evil.example"), "/");
    }
}
