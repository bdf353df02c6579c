//! The web console's access rules over real HTTP, against a real (SQLite)
//! read model: the proxy header believed from a trusted peer only, roles,
//! local accounts and their password, CSRF refusals, login throttling,
//! and the CSV format as served; the identity page with a real
//! nats-server holding the router's open and resolved conflicts.
//!
//! The server listens on 127.0.0.1; the trusted proxy is 127.0.0.2 (the
//! whole 127/8 is loopback on Linux), so the same test is both the proxy
//! and an untrusted client, by the address it connects from.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{net::SocketAddr, sync::Arc, time::Duration};

use guichet_console::{
    Console, Store,
    web::{self, Account, AuthConfig, Role, WebState, hash_password},
};
use guichet_core::Bus;
use guichet_harness::Nats;
use guichet_router::{
    admin::{Decision, resolve},
    identity_conflicts::{Side, conflict_id, record},
    levels::Level,
};
use reqwest::{StatusCode, header, redirect::Policy};
use tokio_util::sync::CancellationToken;

const PROXY: [u8; 4] = [127, 0, 0, 2];
const PASSWORD: &str = "correct horse battery staple";

struct Console_ {
    addr: SocketAddr,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Console_ {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn auth() -> AuthConfig {
    AuthConfig {
        proxy_header: Some("X-Remote-User".into()),
        trusted_proxies: vec!["127.0.0.2".into()],
        proxy_roles: [("chef.exploitation".to_owned(), Role::Ops)].into(),
        accounts: vec![
            Account {
                user: "accueil".into(),
                password_hash: hash_password(PASSWORD).unwrap(),
                role: Role::Viewer,
            },
            Account {
                user: "ops".into(),
                password_hash: hash_password(PASSWORD).unwrap(),
                role: Role::Ops,
            },
        ],
        login_failures: 3,
        ..AuthConfig::default()
    }
}

async fn start(auth: AuthConfig) -> Console_ {
    start_on(auth, None).await
}

/// A console reading live from `bus` when given (as under `guichet run`).
async fn start_on(auth: AuthConfig, bus: Option<Bus>) -> Console_ {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!("sqlite://{}/console.sqlite?mode=rwc", dir.path().display()))
        .await
        .unwrap();
    let console = match bus {
        Some(bus) => Console::with_bus(store, bus, "rules"),
        None => Console::new(store),
    };
    let state = Arc::new(WebState::new(auth, console).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(web::serve(listener, state, shutdown.clone()));
    Console_ {
        addr,
        shutdown,
        _dir: dir,
    }
}

fn client_from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(Some(std::net::IpAddr::from(ip)))
        .redirect(Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn client() -> reqwest::Client {
    client_from([127, 0, 0, 1])
}

impl Console_ {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// GET `path` with the session cookie `session` (`name=value`).
async fn get(c: &Console_, path: &str, session: &str) -> reqwest::Response {
    client()
        .get(c.url(path))
        .header(header::COOKIE, session)
        .send()
        .await
        .unwrap()
}

/// `name=value` of every `Set-Cookie` named `name`.
fn set_cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

/// The value of the hidden input `name` in `html`.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!(r#"name="{name}" value=""#);
    let start = html.find(&marker).unwrap_or_else(|| panic!("no {name} in {html}")) + marker.len();
    html[start..start + html[start..].find('"').unwrap()].to_owned()
}

/// Opens the login form: (the pre-login cookie, the form's CSRF token).
async fn login_form(c: &Console_) -> (String, String) {
    let r = client().get(c.url("/login")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let cookie = cookie_pair(&set_cookie(&r, "guichet_console_login").expect("a pre-login cookie"));
    let html = r.text().await.unwrap();
    (cookie, hidden(&html, "csrf"))
}

async fn post_login(c: &Console_, cookie: &str, csrf: &str, user: &str, password: &str) -> reqwest::Response {
    client()
        .post(c.url("/login"))
        .header(header::COOKIE, cookie)
        .form(&[
            ("csrf", csrf),
            ("user", user),
            ("password", password),
            ("next", "/overdue"),
        ])
        .send()
        .await
        .unwrap()
}

/// Logs in through the form; the session cookie (`name=value`).
async fn log_in(c: &Console_, user: &str) -> String {
    let (cookie, csrf) = login_form(c).await;
    let r = post_login(c, &cookie, &csrf, user, PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[header::LOCATION], "/overdue");
    let session = set_cookie(&r, "guichet_console").expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(session.contains(attribute), "{session}");
    }
    assert!(
        !session.contains("Secure"),
        "no Secure without secure_cookies: {session}"
    );
    cookie_pair(&session)
}

#[tokio::test]
async fn the_proxy_header_is_believed_from_the_trusted_proxy_only() {
    let c = start(auth()).await;
    // From the proxy: signed in, with the role configured for the user.
    let r = client_from(PROXY)
        .get(c.url("/"))
        .header("X-Remote-User", "m.dupont")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.unwrap();
    assert!(html.contains("m.dupont (lecture)"), "{html}");
    assert!(!html.contains("/dead-letters"), "a viewer's menu has no ops pages");
    let r = client_from(PROXY)
        .get(c.url("/dead-letters"))
        .header("X-Remote-User", "chef.exploitation")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // The same header from anyone else is ignored: anonymous.
    let r = client()
        .get(c.url("/"))
        .header("X-Remote-User", "chef.exploitation")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[header::LOCATION], "/login?next=/");
    for path in ["/api/overview", "/api/dead-letters", "/?csv=volumes"] {
        let r = client()
            .get(c.url(path))
            .header("X-Remote-User", "chef.exploitation")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    // From the proxy without the header: anonymous too; a name that is
    // not one is refused.
    let r = client_from(PROXY).get(c.url("/api/overview")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = client_from(PROXY)
        .get(c.url("/api/overview"))
        .header("X-Remote-User", "a b|ops")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn only_ops_see_dead_letters_and_identity_pages() {
    let c = start(auth()).await;
    let viewer = log_in(&c, "accueil").await;
    let ops = log_in(&c, "ops").await;
    for path in [
        "/dead-letters",
        "/identity-conflicts",
        "/api/dead-letters",
        "/api/identity-conflicts",
    ] {
        let r = get(&c, path, &viewer).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "viewer {path}");
        let r = get(&c, path, &ops).await;
        // The open identity conflicts are read live from NATS, which this
        // console has not: past the role check, unavailable (retry).
        let want = if path.contains("identity") {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        };
        assert_eq!(r.status(), want, "ops {path}");
    }
    for path in [
        "/",
        "/overdue",
        "/api/overview",
        "/api/overdue",
        "/service/voirie",
        "/explain",
    ] {
        let r = get(&c, path, &viewer).await;
        assert_eq!(r.status(), StatusCode::OK, "viewer {path}");
    }
    // A forged role in the cookie breaks its signature.
    let (name, value) = viewer.split_once('=').unwrap();
    let (payload, tag) = value.split_once('.').unwrap();
    let text = String::from_utf8(hex::decode(payload).unwrap())
        .unwrap()
        .replace("|viewer|", "|ops|");
    let forged = format!("{name}={}.{tag}", hex::encode(text));
    let r = get(&c, "/api/dead-letters", &forged).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_bad_password_gets_no_session_and_repeated_failures_are_throttled() {
    let c = start(auth()).await;
    let (cookie, csrf) = login_form(&c).await;
    let r = post_login(&c, &cookie, &csrf, "accueil", "wrong password!").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie(&r, "guichet_console").is_none());
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("Identifiant ou mot de passe incorrect")
    );
    // An unknown user: the same answer.
    let r = post_login(&c, &cookie, &csrf, "nobody", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = post_login(&c, &cookie, &csrf, "accueil", "still wrong").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Three failures (login_failures): even the right password is refused now.
    let r = post_login(&c, &cookie, &csrf, "accueil", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = r.headers()[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!((1..=900).contains(&wait), "{wait}");
    assert!(set_cookie(&r, "guichet_console").is_none());
    // Another address is not affected.
    let r = client_from(PROXY)
        .post(c.url("/login"))
        .header(header::COOKIE, &cookie)
        .form(&[("csrf", csrf.as_str()), ("user", "accueil"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[header::LOCATION], "/");
}

#[tokio::test]
async fn login_and_logout_without_the_right_csrf_token_change_nothing() {
    let c = start(auth()).await;
    let (cookie, csrf) = login_form(&c).await;
    let (other_cookie, other_csrf) = login_form(&c).await;
    // No token, a token of another browser's form, no pre-login cookie.
    for (cookie, token) in [
        (cookie.as_str(), ""),
        (cookie.as_str(), other_csrf.as_str()),
        (other_cookie.as_str(), csrf.as_str()),
        ("", csrf.as_str()),
    ] {
        let r = post_login(&c, cookie, token, "accueil", PASSWORD).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert!(set_cookie(&r, "guichet_console").is_none());
    }

    let session = log_in(&c, "accueil").await;
    let page = get(&c, "/", &session).await;
    let token = hidden(&page.text().await.unwrap(), "csrf");
    // Logout with another session's token or none: refused, still signed in.
    let other = log_in(&c, "accueil").await;
    let other_page = get(&c, "/", &other).await;
    let other_token = hidden(&other_page.text().await.unwrap(), "csrf");
    for bad in ["", other_token.as_str()] {
        let r = client()
            .post(c.url("/logout"))
            .header(header::COOKIE, &session)
            .form(&[("csrf", bad)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert!(set_cookie(&r, "guichet_console").is_none());
    }
    let r = get(&c, "/api/overview", &session).await;
    assert_eq!(r.status(), StatusCode::OK);
    // The right token signs out: the cookie is deleted.
    let r = client()
        .post(c.url("/logout"))
        .header(header::COOKIE, &session)
        .form(&[("csrf", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let cleared = set_cookie(&r, "guichet_console").unwrap();
    assert!(
        cleared.starts_with("guichet_console=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
}

#[tokio::test]
async fn tables_download_as_french_csv() {
    let c = start(auth()).await;
    let session = log_in(&c, "accueil").await;
    let r = get(
        &c,
        "/?from=2026-11-01&to=2026-11-07&granularity=day&csv=volumes",
        &session,
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[header::CONTENT_TYPE], "text/csv; charset=utf-8");
    assert_eq!(
        r.headers()[header::CONTENT_DISPOSITION],
        "attachment; filename=\"vue-ensemble-volumes.csv\""
    );
    let body = r.bytes().await.unwrap();
    assert_eq!(&body[..3], b"\xEF\xBB\xBF", "UTF-8 byte order mark");
    let text = std::str::from_utf8(&body[3..]).unwrap();
    let lines: Vec<&str> = text.split_terminator("\r\n").collect();
    assert_eq!(lines[0], "Période (début);Reçues;Closes;Stock en fin de période");
    assert_eq!(lines.len(), 1 + 7, "one line per day: {text}");
    assert_eq!(lines[1], "01/11/2026;0;0;0");

    // The page links every table's CSV, keeping the filter.
    let html = get(&c, "/?from=2026-11-01&to=2026-11-07", &session)
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("from=2026-11-01&amp;to=2026-11-07"), "{html}");
    assert!(html.contains("csv=volumes"));
    // A bad filter is a 400 naming the field; an unknown table a 404.
    let r = get(&c, "/?from=01/11/2026", &session).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("(from)"));
    let r = get(&c, "/?csv=nope", &session).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[test]
fn a_configuration_nobody_can_sign_in_with_is_refused() {
    let e = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(&format!("sqlite://{}/c.sqlite?mode=rwc", dir.path().display()))
                .await
                .unwrap();
            WebState::new(AuthConfig::default(), Console::new(store)).err().unwrap()
        })
        .to_string();
    assert!(e.contains("console.auth") && e.contains("hash-password"), "{e}");
}

#[tokio::test]
async fn cookies_are_secure_when_the_console_is_behind_https() {
    let c = start(AuthConfig {
        secure_cookies: true,
        ..auth()
    })
    .await;
    let (cookie, csrf) = login_form(&c).await;
    let r = post_login(&c, &cookie, &csrf, "accueil", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let session = set_cookie(&r, "guichet_console").unwrap();
    assert!(
        session.contains("; Secure") && session.contains("HttpOnly"),
        "{session}"
    );
}

/// The identity page lists the router's open conflicts (usager ids,
/// identifier kinds, levels, times, contact counts) and not a resolved
/// one, as HTML, JSON and CSV.
#[tokio::test]
async fn identity_page_lists_open_conflicts_not_resolved_ones() {
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    let kv = &bus.stores().identity;
    let side = |id: &str, kind: &str, level| Side {
        usager_id: id.into(),
        kinds: vec![kind.into()],
        level,
    };
    let (kept, other) = (
        side("U01OPENKEPT", "email", Level::Verified),
        side("U01OPENOTHER", "phone", Level::Declared),
    );
    record(kv, "C-OPEN-1", kept.clone(), other.clone()).await.unwrap();
    record(kv, "C-OPEN-2", kept, other).await.unwrap();
    let (a, b) = (
        side("U01GONEA", "email", Level::Declared),
        side("U01GONEB", "email", Level::Declared),
    );
    record(kv, "C-SETTLED", a, b).await.unwrap();
    resolve(&bus, &conflict_id("U01GONEA", "U01GONEB"), Decision::Distinct)
        .await
        .unwrap();
    let open_id = conflict_id("U01OPENKEPT", "U01OPENOTHER");

    let c = start_on(auth(), Some(bus.clone())).await;
    let ops = log_in(&c, "ops").await;
    let r = get(&c, "/identity-conflicts", &ops).await;
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.unwrap();
    for shown in [
        open_id.as_str(),
        "U01OPENOTHER",
        "email (verified)",
        "phone (declared)",
        "C-OPEN-2",
    ] {
        assert!(html.contains(shown), "{shown} on the page");
    }
    assert!(!html.contains("U01GONEA"), "a resolved conflict is not listed");

    let r = get(&c, "/api/identity-conflicts", &ops).await;
    assert_eq!(r.status(), StatusCode::OK);
    let json: serde_json::Value = r.json().await.unwrap();
    let open = json["open"].as_array().unwrap();
    assert_eq!(open.len(), 1, "{json}");
    assert_eq!(open[0]["id"], open_id.as_str());
    assert_eq!(open[0]["kept"], "U01OPENKEPT");
    assert_eq!(open[0]["kept_kinds"], serde_json::json!(["email"]));
    assert_eq!(open[0]["kept_level"], "verified");
    assert_eq!(open[0]["other_level"], "declared");
    assert_eq!(open[0]["contacts"], 2);
    assert_eq!(open[0]["latest_contact"], "C-OPEN-2");
    assert!(!json.to_string().contains("U01GONEA"));

    let r = get(&c, "/identity-conflicts?csv=ouverts", &ops).await;
    assert_eq!(r.status(), StatusCode::OK);
    let csv = r.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "a header and the open conflict: {csv}");
    assert!(lines[1].starts_with(&format!("{open_id};U01OPENKEPT;")), "{csv}");
}
