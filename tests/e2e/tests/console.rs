//! The console through the whole gateway (`guichet::run` with web,
//! router, requests and console): web submissions open requests, a tonic
//! client plays the back-office, a usager writes again citing a
//! reference; the overview read from the console's database says exactly
//! what the test did — on SQLite and on PostgreSQL.
#![allow(clippy::unwrap_used)]

use std::{collections::BTreeMap, time::Duration};

use guichet::{Config, Listeners, ServiceName};
use guichet_console::{Console, ConsoleConfig, Filter, Granularity, Overview, Store};
use guichet_core::{proto::v1::Transition, secret::Secret};
use guichet_e2e::{BackOffice, Gateway};
use guichet_harness::{Nats, Postgres};

const SECRET: &str = "e2e-secret-0123456789abcdef";
const TOKEN: &str = "back-office-0123456789abcdef0123";

async fn submit(url: &str, email: &str, message: &str) -> String {
    let answer = guichet_e2e::submit_contact(url, SECRET, email, message).await;
    answer["reference"].as_str().unwrap().to_owned()
}

async fn scenario(console: ConsoleConfig) {
    let nats = Nats::start().await;
    let service = guichet_router::RouterConfig::default().fallback_service;
    let requests_listener = guichet_e2e::loopback();
    let mut config = Config {
        nats: nats.nats_config(),
        web: guichet_e2e::signed_contact_form(SECRET),
        requests: guichet_e2e::requests_config(requests_listener.local_addr().unwrap(), TOKEN, vec![service.clone()]),
        console: console.clone(),
        privacy: guichet_harness::privacy_config(),
        ..Config::default()
    };
    config.admin.listen = "127.0.0.1:0".parse().unwrap();
    let services = vec![
        ServiceName::Web,
        ServiceName::Router,
        ServiceName::Requests,
        ServiceName::Console,
    ];
    let mut listeners = Listeners::bind(&config, &[ServiceName::Web]).unwrap();
    listeners.requests = Some(requests_listener);
    let web_url = guichet_e2e::contact_form_url(&listeners);
    let grpc = listeners.requests.as_ref().unwrap().local_addr().unwrap();
    let gateway = Gateway::start(config, services, listeners).await;
    let mut back_office = BackOffice::connect(grpc, TOKEN).await;

    // Three requests: the first answered and closed, the second taken and
    // written to again by its usager, the third untouched.
    let r1 = submit(&web_url, "un@example.fr", "Un lampadaire est éteint.").await;
    let r2 = submit(&web_url, "deux@example.fr", "Une poubelle déborde.").await;
    let r3 = submit(&web_url, "trois@example.fr", "Un banc est cassé.").await;
    back_office.settle(&r1).await;
    back_office.wait_version(&r2, 1).await;
    back_office.update(&r2, Transition::Take, 1).await;
    back_office.wait_version(&r3, 1).await;
    submit(&web_url, "deux@example.fr", &format!("Toujours rien, dossier {r2}.")).await;

    // The console's read model, as the web console reads it.
    let store = Store::open(&console.database().unwrap()).await.unwrap();
    let today = chrono::Utc::now().with_timezone(&chrono_tz::Europe::Paris).date_naive();
    let filter = Filter {
        from: today - chrono::Duration::days(1),
        to: today + chrono::Duration::days(1),
        granularity: Granularity::Day,
        service: None,
        channel: None,
        typology: None,
        site: None,
    };
    let reader = Console::new(store.clone());
    let done = |o: &Overview| o.volumes.recontacts == 1 && o.volumes.closed == 1 && o.delays[1].count == 2;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let overview = loop {
        let o = reader.overview(&filter).await.unwrap();
        if done(&o) {
            break o;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the console never caught up: {o:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let v = &overview.volumes;
    assert_eq!((v.received, v.closed, v.answered, v.recontacts), (3, 1, 1, 1));
    assert_eq!((v.transfers_in, v.transfers_out, v.reopenings), (0, 0, 0));
    assert_eq!(overview.backlog.open, 2, "r2 taken, r3 open");
    assert_eq!(overview.backlog.waiting_usager, 0);
    let counts: Vec<(String, i64)> = overview.delays.iter().map(|d| (d.milestone.clone(), d.count)).collect();
    assert_eq!(
        counts,
        [
            ("acknowledgment".to_owned(), 0),
            ("take".to_owned(), 2),
            ("first_answer".to_owned(), 1),
            ("closure".to_owned(), 1)
        ]
    );
    // Everything happened within the hour: 0 hours, 0 business days.
    assert_eq!(overview.delays[3].median_hours, Some(0));
    assert_eq!(overview.delays[3].median_business_days, Some(0));
    assert_eq!(overview.channels.len(), 1);
    assert_eq!(
        (overview.channels[0].key.as_str(), overview.channels[0].count),
        ("web", 3)
    );
    assert_eq!(overview.services[0].key, service);
    assert_eq!(overview.series.len(), 3);
    assert_eq!(overview.series.iter().map(|p| p.received).sum::<i64>(), 3);
    assert_eq!(overview.series.last().unwrap().backlog, 2);
    // No rules pushed: the router's fallback qualified them, by hand.
    assert_eq!((overview.manual.count, overview.manual.of), (3, 3));
    assert_eq!(
        store.dump("requests").await.unwrap().len(),
        3,
        "one row per request, the follow-up joined r2"
    );
    let statuses = statuses(&store).await;
    assert_eq!(statuses[&r1], "closed");
    assert_eq!(statuses[&r2], "taken");
    assert_eq!(statuses[&r3], "open");
    store.close().await;
    gateway.stop().await;
}

/// reference → status, from the request rows (`reference` and `status`
/// are the first and ninth columns).
async fn statuses(store: &Store) -> BTreeMap<String, String> {
    store
        .dump("requests")
        .await
        .unwrap()
        .into_iter()
        .map(|row| {
            let cells: Vec<&str> = row.split('|').collect();
            (cells[0].to_owned(), cells[8].to_owned())
        })
        .collect()
}

#[tokio::test]
async fn the_console_counts_what_the_gateway_did_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    scenario(ConsoleConfig {
        data_dir: dir.path().to_path_buf(),
        idle_wait: Duration::from_millis(50),
        ..ConsoleConfig::default()
    })
    .await;
}

#[tokio::test]
async fn the_console_counts_what_the_gateway_did_on_postgres() {
    let db = Postgres::create("e2e_console");
    scenario(ConsoleConfig {
        database_url: Some(Secret::Inline(db.url())),
        idle_wait: Duration::from_millis(50),
        ..ConsoleConfig::default()
    })
    .await;
}
