//! The web console in a real headless Chromium (WebDriver), over a gateway
//! started by `guichet::run` with known traffic: web submissions go
//! through web → router → requests, the console projects them, and a
//! browser logs in through the form, reads the numbers on the overview and
//! a service page, and compares them with the console's JSON API and with
//! the traffic sent. Screenshots go to `target/screenshots/` (artifacts,
//! not committed) and axe-core must find no serious or critical
//! accessibility violation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::BTreeMap, time::Duration};

use fantoccini::{Locator, key::Key};
use guichet::{Config, Listeners, ServiceName};
use guichet_console::web::{Account, AuthConfig, Role, hash_password};
use guichet_core::proto::v1::Transition;
use guichet_e2e::{BackOffice, Gateway, loopback};
use guichet_harness::{Browser, Nats};
use guichet_web::WebConfig;
use serde_json::Value;

const SECRET: &str = "e2e-secret-0123456789abcdef";
const USER: &str = "direction";
const PASSWORD: &str = "indicateurs-de-la-mairie";
/// The web submissions sent, each a new request (no reference in the
/// text), for the example rules (deploy/rules.example.toml) to send to
/// several services, one to none (qualified by hand).
const MESSAGES: [&str; 5] = [
    "Danger : un arbre tombé bloque la rue des Lilas.",
    "Question sur mon permis de construire, déposé en mars.",
    "Le PLU permet-il une extension de ma maison ?",
    "Quels sont les horaires d'ouverture de la mairie samedi ?",
    "Quand passe la collecte des encombrants dans mon quartier ?",
];
const SUBMISSIONS: i64 = MESSAGES.len() as i64;
/// The back-office settles (takes, answers, closes) the first `SETTLED`
/// requests and takes the next one: the delays and the backlog on the
/// pages then have something to show.
const SETTLED: usize = 2;
const TOKEN: &str = "back-office-0123456789abcdef0123";

fn web_config() -> WebConfig {
    guichet_e2e::signed_contact_form(SECRET)
}

/// Sends submission `n`; its contact id and reference.
async fn submit(url: &str, n: usize) -> (String, String) {
    let answer = guichet_e2e::submit_contact(url, SECRET, &format!("usager{n}@example.fr"), MESSAGES[n]).await;
    let field = |name: &str| answer[name].as_str().unwrap().to_owned();
    (field("contact_id"), field("reference"))
}

/// The JSON at `url`, as the signed-in browser gets it.
async fn api(browser: &Browser, url: &str) -> Value {
    browser.goto(url).await;
    let text = browser
        .client()
        .execute("return document.body.innerText;", vec![])
        .await
        .unwrap();
    serde_json::from_str(text.as_str().unwrap()).unwrap_or_else(|e| panic!("{url}: {e}: {text}"))
}

/// The key figure `id` on the current page.
async fn figure(browser: &Browser, id: &str) -> String {
    browser.text(&format!("[data-indicator=\"{id}\"]")).await
}

/// The cells of the table `id` on the current page, row by row.
async fn table(browser: &Browser, id: &str) -> Vec<Vec<String>> {
    let rows = browser
        .client()
        .execute(
            "return [...document.querySelectorAll('#' + arguments[0] + ' tbody tr')]\
               .map(tr => [...tr.children].map(c => c.innerText.trim()));",
            vec![Value::from(id)],
        )
        .await
        .unwrap();
    serde_json::from_value(rows).unwrap()
}

/// Runs axe-core on the current page: no serious or critical violation.
async fn accessible(browser: &Browser, page: &str) {
    let violations = browser.axe().await;
    for (impact, list) in &violations {
        for v in list {
            eprintln!("axe {page}: {impact} {}: {} {:?}", v.id, v.help, v.targets);
        }
    }
    for impact in ["serious", "critical"] {
        assert!(
            violations.get(impact).is_none_or(Vec::is_empty),
            "{page}: {impact} accessibility violations: {:?}",
            violations.get(impact)
        );
    }
}

#[tokio::test]
async fn the_console_shows_in_a_browser_the_numbers_of_its_api() {
    let nats = Nats::start().await;
    let data = tempfile::tempdir().unwrap();
    let console_listener = loopback();
    let console_url = format!("http://{}", console_listener.local_addr().unwrap());
    let requests_listener = loopback();
    let requests_address = requests_listener.local_addr().unwrap();
    let mut config = Config {
        nats: nats.nats_config(),
        web: web_config(),
        privacy: guichet_harness::privacy_config(),
        ..Config::default()
    };
    config.admin.listen = "127.0.0.1:0".parse().unwrap();
    // Every service of deploy/rules.example.toml, and the fallback.
    let services = [
        "accueil",
        "dechets",
        "etat-civil",
        "police-municipale",
        "urbanisme",
        "voirie",
    ]
    .into_iter()
    .map(String::from)
    .chain([guichet_router::RouterConfig::default().fallback_service])
    .collect();
    config.requests = guichet_e2e::requests_config(requests_address, TOKEN, services);
    config.console.listen = console_listener.local_addr().unwrap();
    config.console.data_dir = data.path().to_owned();
    config.console.idle_wait = Duration::from_millis(50);
    config.console.auth = AuthConfig {
        accounts: vec![Account {
            user: USER.into(),
            password_hash: hash_password(PASSWORD).unwrap(),
            role: Role::Viewer,
        }],
        ..AuthConfig::default()
    };
    let services = vec![
        ServiceName::Web,
        ServiceName::Router,
        ServiceName::Requests,
        ServiceName::Console,
    ];
    let mut listeners = Listeners::bind(&config, &[ServiceName::Web]).unwrap();
    listeners.requests = Some(requests_listener);
    listeners.console = Some(console_listener);
    let web_url = guichet_e2e::contact_form_url(&listeners);
    let rules = std::fs::read_to_string(guichet_harness::repo_root().join("deploy/rules.example.toml")).unwrap();
    guichet_router::live::push(&nats.bus().await, "rules", &rules, "rules.example.toml", "e2e")
        .await
        .unwrap();
    let gateway = Gateway::start(config, services, listeners).await;
    let mut contacts = Vec::new();
    let mut references = Vec::new();
    for n in 0..MESSAGES.len() {
        let (contact, reference) = submit(&web_url, n).await;
        contacts.push(contact);
        references.push(reference);
    }
    let mut back_office = BackOffice::connect(requests_address, TOKEN).await;
    for reference in &references[..SETTLED] {
        back_office.settle(reference).await;
    }
    back_office.wait_version(&references[SETTLED], 1).await;
    back_office.update(&references[SETTLED], Transition::Take, 1).await;

    let browser = Browser::start().await;
    // Anonymous: sent to the login form, which brings back to the page.
    browser.goto(&format!("{console_url}/")).await;
    let url = browser.client().current_url().await.unwrap();
    assert_eq!(url.path(), "/login", "{url}");
    accessible(&browser, "login").await;
    let c = browser.client();
    c.find(Locator::Id("user"))
        .await
        .unwrap()
        .send_keys(USER)
        .await
        .unwrap();
    c.find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys(PASSWORD)
        .await
        .unwrap();
    c.find(Locator::Css("form.connexion button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    if c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("[data-indicator=\"received\"]"))
        .await
        .is_err()
    {
        panic!("the login form leads to the overview: {}", c.source().await.unwrap());
    }
    assert_eq!(c.current_url().await.unwrap().path(), "/");

    // The projection catches up (bounded): the API counts every submission.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let overview = loop {
        let o = api(&browser, &format!("{console_url}/api/overview")).await;
        if o["volumes"]["received"] == SUBMISSIONS
            && o["volumes"]["closed"] == SETTLED
            && o["delays"][1]["count"] == SETTLED + 1
        {
            break o;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the console never counted the submissions: {o}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };

    // The overview's numbers are the API's, and the traffic's.
    browser.goto(&format!("{console_url}/")).await;
    assert_eq!(browser.text("h1").await, "Vue d'ensemble");
    let number = |v: &Value| v.as_i64().unwrap().to_string();
    assert_eq!(figure(&browser, "received").await, SUBMISSIONS.to_string());
    for (id, value) in [
        ("received", &overview["volumes"]["received"]),
        ("closed", &overview["volumes"]["closed"]),
        ("answered", &overview["volumes"]["answered"]),
        ("backlog_open", &overview["backlog"]["open"]),
        ("backlog_waiting", &overview["backlog"]["waiting_usager"]),
        ("backlog_overdue", &overview["backlog"]["overdue"]),
    ] {
        assert_eq!(figure(&browser, id).await, number(value), "{id}");
    }
    let settled = SETTLED as i64;
    assert_eq!(overview["volumes"]["closed"], settled);
    assert_eq!(overview["volumes"]["answered"], settled);
    assert_eq!(
        overview["backlog"]["open"],
        SUBMISSIONS - settled,
        "open or taken, not closed"
    );
    // The delays table: requests measured and medians per milestone, as
    // the API says, and as the back-office moved them (no acknowledgment
    // is sent here; three taken, two answered and closed).
    let opt = |v: &Value| v.as_i64().map(|n| n.to_string()).unwrap_or_default();
    let api_delays: Vec<[String; 3]> = overview["delays"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            [
                number(&d["count"]),
                opt(&d["median_hours"]),
                opt(&d["median_business_days"]),
            ]
        })
        .collect();
    let page_delays: Vec<[String; 3]> = table(&browser, "delais")
        .await
        .into_iter()
        .map(|r| [r[1].clone(), r[2].clone(), r[4].clone()])
        .collect();
    assert_eq!(page_delays, api_delays);
    let counts: Vec<&str> = api_delays.iter().map(|d| d[0].as_str()).collect();
    assert_eq!(counts, ["0", "3", "2", "2"], "{overview}");
    let channels = table(&browser, "canaux").await;
    assert_eq!(
        channels,
        [["web".to_owned(), SUBMISSIONS.to_string(), "100,0".to_owned()]]
    );

    // Where the router says each contact went (its own explain, read from
    // the streams) is what the read model counts, and what the page shows.
    let mut routed: BTreeMap<String, i64> = BTreeMap::new();
    let mut by_hand = 0;
    for contact in &contacts {
        let e = api(&browser, &format!("{console_url}/api/explain?contact={contact}")).await;
        *routed.entry(e["service"].as_str().unwrap().to_owned()).or_default() += 1;
        by_hand += i64::from(e["rule_id"] == "");
    }
    assert!(
        routed.len() >= 3 && by_hand >= 1,
        "the rules spread the traffic: {routed:?}, {by_hand} by hand"
    );
    let counted: BTreeMap<String, i64> = overview["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["key"].as_str().unwrap().to_owned(), m["count"].as_i64().unwrap()))
        .collect();
    assert_eq!(counted, routed);
    assert_eq!(overview["manual"]["count"], by_hand, "{overview}");
    browser.goto(&format!("{console_url}/")).await;
    let on_page: BTreeMap<String, i64> = table(&browser, "services")
        .await
        .iter()
        .map(|r| (r[0].clone(), r[1].parse().unwrap()))
        .collect();
    assert_eq!(on_page, routed);
    assert_eq!(
        figure(&browser, "manual").await,
        format!("{:.1} %", by_hand as f64 * 100.0 / SUBMISSIONS as f64).replace('.', ",")
    );
    let service = overview["services"][0]["key"].as_str().unwrap().to_owned();
    // The volumes table sums to the count received.
    let per_day: i64 = table(&browser, "volumes")
        .await
        .iter()
        .map(|r| r[1].parse::<i64>().unwrap())
        .sum();
    assert_eq!(per_day, SUBMISSIONS);

    let shot = browser.full_page_screenshot("console-overview").await;
    eprintln!("screenshot: {}", shot.display());
    accessible(&browser, "overview").await;
    // Keyboard: the first Tab reaches the skip link.
    c.find(Locator::Css("body"))
        .await
        .unwrap()
        .send_keys(&Key::Tab.to_string())
        .await
        .unwrap();
    let focused = c.active_element().await.unwrap();
    assert_eq!(focused.attr("href").await.unwrap().as_deref(), Some("#contenu"));

    // One service's page, from the overview's link: its numbers are its API's.
    browser.goto(&format!("{console_url}/")).await;
    c.find(Locator::Css("#services tbody th a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("[data-indicator=\"received\"]"))
        .await
        .unwrap();
    assert_eq!(browser.text("h1").await, format!("Service « {service} »"));
    let shot = browser.full_page_screenshot("console-service").await;
    eprintln!("screenshot: {}", shot.display());
    accessible(&browser, "service").await;
    let mut on_page = Vec::new();
    for id in ["received", "closed", "answered", "backlog_open", "manual"] {
        on_page.push(figure(&browser, id).await);
    }
    let service_api = api(&browser, &format!("{console_url}/api/service/{service}")).await;
    assert_eq!(service_api["filter"]["service"], service.as_str());
    let share = |s: &Value| {
        let (count, of) = (s["count"].as_i64().unwrap(), s["of"].as_i64().unwrap());
        format!("{:.1} %", count as f64 * 100.0 / of as f64).replace('.', ",")
    };
    assert_eq!(
        on_page,
        [
            number(&service_api["volumes"]["received"]),
            number(&service_api["volumes"]["closed"]),
            number(&service_api["volumes"]["answered"]),
            number(&service_api["backlog"]["open"]),
            share(&service_api["manual"]),
        ]
    );

    // The other pages a viewer sees: their numbers are their API's too.
    browser.goto(&format!("{console_url}/overdue")).await;
    assert_eq!(browser.text("h1").await, "Demandes en retard");
    let overdue = api(&browser, &format!("{console_url}/api/overdue")).await;
    assert_eq!(overdue.as_array().unwrap().len(), 0, "nothing is late yet: {overdue}");
    browser.goto(&format!("{console_url}/overdue")).await;
    assert!(browser.text("main").await.contains("Aucune demande en retard."));
    accessible(&browser, "overdue").await;
    browser.goto(&format!("{console_url}/rules")).await;
    assert_eq!(browser.text("h1").await, "Révisions des règles");
    let revisions = table(&browser, "revisions").await;
    assert_eq!(revisions.len(), 1, "{revisions:?}");
    assert_eq!((revisions[0][2].as_str(), revisions[0][5].as_str()), ("e2e", "valide"));
    // A second revision, one deadline changed: the diff between the two.
    let changed = rules.replacen("deadline = \"10 business days\"", "deadline = \"8 business days\"", 1);
    guichet_router::live::push(&nats.bus().await, "rules", &changed, "rules.example.toml", "ops")
        .await
        .unwrap();
    browser.goto(&format!("{console_url}/rules")).await;
    let revisions = table(&browser, "revisions").await;
    assert_eq!(revisions.len(), 2, "{revisions:?}");
    browser
        .goto(&format!(
            "{console_url}/rules?a={}&b={}",
            revisions[0][0], revisions[1][0]
        ))
        .await;
    let changes: Vec<Vec<String>> = table(&browser, "difference")
        .await
        .into_iter()
        .filter(|r| !r[0].is_empty())
        .collect();
    assert_eq!(
        changes,
        [
            ["retirée", "deadline = \"10 business days\""],
            ["ajoutée", "deadline = \"8 business days\""]
        ]
    );
    accessible(&browser, "rules diff").await;
    accessible(&browser, "rules").await;
    browser
        .goto(&format!("{console_url}/explain?contact={}", contacts[0]))
        .await;
    let explained = api(&browser, &format!("{console_url}/api/explain?contact={}", contacts[0])).await;
    browser
        .goto(&format!("{console_url}/explain?contact={}", contacts[0]))
        .await;
    let rows = table(&browser, "explication").await;
    assert_eq!(rows[0], ["Référence", explained["reference"].as_str().unwrap()]);
    assert_eq!(rows[2], ["Service", explained["service"].as_str().unwrap()]);
    assert_eq!(rows[4], ["Règle", explained["rule_id"].as_str().unwrap()]);
    accessible(&browser, "explain").await;
    // A viewer is refused the ops pages.
    browser.goto(&format!("{console_url}/dead-letters")).await;
    assert_eq!(browser.text("h1").await, "Accès refusé");

    // The checker itself sees violations where there are some (a page
    // without a language, an image without text): its silence above means
    // something.
    browser
        .goto("data:text/html,<!DOCTYPE html><html><head><title>t</title></head><body><img src='x.png'></body></html>")
        .await;
    let violations = browser.axe().await;
    let ids: Vec<&str> = violations.values().flatten().map(|v| v.id.as_str()).collect();
    assert!(
        ids.contains(&"image-alt") && ids.contains(&"html-has-lang"),
        "{violations:?}"
    );

    browser.close().await;
    gateway.stop().await;
}
