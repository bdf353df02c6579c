//! A real headless browser for one test: Debian's `chromium` driven
//! through `chromedriver` (WebDriver), both installed by
//! `scripts/bootstrap`, with axe-core (the accessibility checker, from the
//! npm registry into `.tools/npm`) to inject into pages.
//!
//! [`Browser::start`] starts chromedriver on a free loopback port in its own
//! temporary directory and opens one headless Chromium session with a fresh
//! profile, so tests run in parallel without sharing cookies or caches.
//! Dropping it kills chromedriver (and with it the browser).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use fantoccini::{Client, ClientBuilder, Locator};
use guichet_core::nats_server::free_port;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use tokio::{net::TcpStream, process::Child};

/// Chromium's flags: headless, nothing fetched behind the test's back
/// (updates, sync, QUIC probes), no sandbox (tests may run as root).
pub const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    // French date inputs and number formats, as the console's users see them.
    "--lang=fr-FR",
    "--window-size=1280,900",
];

/// The axe-core script `scripts/bootstrap` installs.
pub fn axe_script_path() -> PathBuf {
    crate::repo_root().join(".tools/npm/node_modules/axe-core/axe.min.js")
}

/// Where screenshots go: `target/screenshots` (test artifacts, not committed).
pub fn screenshot_dir() -> PathBuf {
    crate::repo_root().join("target/screenshots")
}

fn find_binary(candidates: &[&str]) -> Option<PathBuf> {
    candidates.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// One violation axe-core reports: its rule, impact and the elements hit.
#[derive(Debug, Clone)]
pub struct AxeViolation {
    pub id: String,
    pub impact: String,
    pub help: String,
    /// CSS selectors of the offending elements.
    pub targets: Vec<String>,
}

/// chromedriver plus one headless Chromium session.
pub struct Browser {
    client: Option<Client>,
    driver: Child,
    _dir: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a fresh headless session; panics with the
    /// fix (`scripts/bootstrap`) when the browser is not installed.
    pub async fn start() -> Self {
        let chromedriver = find_binary(&["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"])
            .expect("chromedriver is not installed: run scripts/bootstrap");
        let chromium = find_binary(&["/usr/bin/chromium", "/usr/lib/chromium/chromium"])
            .expect("chromium is not installed: run scripts/bootstrap");
        let dir = tempfile::tempdir().expect("temporary directory");
        let profile = dir.path().join("profile");
        for _ in 0..5 {
            let port = free_port().expect("free port");
            let Some(driver) = spawn_driver(&chromedriver, dir.path(), port).await else {
                continue;
            };
            let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| (*s).to_owned()).collect();
            args.push(format!("--user-data-dir={}", profile.display()));
            let mut caps = serde_json::Map::new();
            caps.insert("goog:chromeOptions".into(), json!({ "binary": chromium, "args": args }));
            let client = ClientBuilder::new(HttpConnector::new())
                .capabilities(caps)
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
                .expect("a headless Chromium session through chromedriver");
            return Self {
                client: Some(client),
                driver,
                _dir: dir,
            };
        }
        panic!("chromedriver did not start on a free port");
    }

    /// The WebDriver session.
    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("the session is open until drop")
    }

    /// Goes to `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.client()
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("goto {url}: {e}"));
    }

    /// The text of the first element `css` selects.
    pub async fn text(&self, css: &str) -> String {
        self.client()
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
            .text()
            .await
            .unwrap_or_else(|e| panic!("text of {css}: {e}"))
    }

    /// Saves a PNG of the viewport to `target/screenshots/<name>.png` and
    /// returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client().screenshot().await.expect("screenshot");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).expect("target/screenshots");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("writing the screenshot");
        path
    }

    /// Saves a PNG of the whole page (not just the viewport): resizes the
    /// window to the document's height first, then back.
    pub async fn full_page_screenshot(&self, name: &str) -> PathBuf {
        let height = self
            .client()
            .execute("return document.documentElement.scrollHeight;", vec![])
            .await
            .ok()
            .and_then(|v| v.as_u64())
            .unwrap_or(900)
            .clamp(600, 6000);
        let _ = self.client().set_window_size(1280, height as u32 + 120).await;
        let path = self.screenshot(name).await;
        let _ = self.client().set_window_size(1280, 900).await;
        path
    }

    /// Injects axe-core into the current page, runs it (WCAG 2 A and AA
    /// rules, the level RGAA maps to) and returns the violations grouped by
    /// impact (`minor`, `moderate`, `serious`, `critical`).
    pub async fn axe(&self) -> BTreeMap<String, Vec<AxeViolation>> {
        let script =
            std::fs::read_to_string(axe_script_path()).expect("axe-core is not installed: run scripts/bootstrap");
        self.client()
            .execute(&script, vec![])
            .await
            .expect("injecting axe-core");
        let result = self
            .client()
            .execute_async(
                "const done = arguments[arguments.length - 1];\
                 axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } })\
                    .then(r => done(r.violations), e => done({ error: String(e) }));",
                vec![],
            )
            .await
            .expect("running axe-core");
        if let Some(err) = result.get("error") {
            panic!("axe-core failed: {err}");
        }
        // Anything but a list means axe did not run: never read that as "no violation".
        assert!(result.is_array(), "axe-core returned no violation list: {result}");
        let mut by_impact: BTreeMap<String, Vec<AxeViolation>> = BTreeMap::new();
        for v in result.as_array().into_iter().flatten() {
            let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
            let targets = v
                .get("nodes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|n| n.get("target"))
                .map(|t| t.to_string())
                .collect();
            let violation = AxeViolation {
                id: text("id"),
                impact: text("impact"),
                help: text("help"),
                targets,
            };
            by_impact.entry(violation.impact.clone()).or_default().push(violation);
        }
        by_impact
    }

    /// Closes the session (the browser quits); drop does it too, harder.
    pub async fn close(mut self) {
        if let Some(client) = self.client.take() {
            let _ = client.close().await;
        }
        let _ = self.driver.kill().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver takes its browsers down with it.
        let _ = self.driver.start_kill();
    }
}

async fn spawn_driver(binary: &Path, dir: &Path, port: u16) -> Option<Child> {
    let mut child = tokio::process::Command::new(binary)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .arg(format!("--log-path={}", dir.join("chromedriver.log").display()))
        .current_dir(dir)
        .env("HOME", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .ok()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while tokio::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return None;
        }
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Some(child);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill().await;
    None
}
