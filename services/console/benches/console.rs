//! `scripts/bench console [N]`: the projection's rate beside a raw
//! consumer's rate on the same streams in the same run, and the overview's
//! latency over a year of 2 million requests on SQLite and PostgreSQL.
//!
//! 1. N requests (default 20,000; `CONSOLE_BENCH_N` or the first argument)
//!    are put on the streams as the gateway does: the `open` event, the
//!    `Routed` contact, a `take` event — 3 N messages. The baseline pulls
//!    them all with a plain pull consumer (fetch, no processing); the
//!    projection then projects them all into SQLite (and PostgreSQL when
//!    it answers on 127.0.0.1:5432).
//! 2. A year of 2,000,000 requests is seeded directly in SQL (request rows,
//!    daily counts and delay histograms as the projection keeps them, with
//!    a town's dimensions: 30 typologies each of one of 12 services, 5
//!    channels, 8 channel×site pairs); then the overview of the year
//!    (by month) and of one service are timed, 10 times each.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use async_nats::jetstream::consumer::{AckPolicy, pull};
use chrono::{NaiveDate, TimeZone, Utc};
use futures::StreamExt;
use guichet_console::{Console, Filter, Granularity, Projector, Store};
use guichet_core::{
    Bus,
    proto::{
        timestamp,
        v1::{Channel, Contact, Qualification, RequestEvent, RequestStatus, Routed, Source, Transition},
    },
};
use guichet_harness::{Nats, Postgres};
use prost::Message;
use sqlx::Any;

const YEAR: usize = 2_000_000;

fn n() -> usize {
    std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .or_else(|| std::env::var("CONSOLE_BENCH_N").ok().and_then(|v| v.parse().ok()))
        .unwrap_or(20_000)
}

async fn publish(bus: &Bus, n: usize) {
    let js = bus.jetstream();
    let now = Utc::now();
    let mut pending = Vec::new();
    for i in 0..n {
        let reference = format!("2026-B{i:07}");
        let typology = format!("typologie-{}", i % 30);
        let service = format!("service-{}", i % 12);
        let event = |t: Transition, version: u64, to: RequestStatus| RequestEvent {
            reference: reference.clone(),
            service: service.clone(),
            typology: typology.clone(),
            channel: Channel::Web.into(),
            transition: t.into(),
            to_status: to.into(),
            occurred_at: Some(timestamp(now)),
            opened_at: Some(timestamp(now)),
            version,
            ..RequestEvent::default()
        };
        let routed = Routed {
            contact: Some(Contact {
                id: format!("C{i:09}"),
                received_at: Some(timestamp(now)),
                channel: Channel::Web.into(),
                source: Some(Source {
                    name: "formulaire".into(),
                    ..Source::default()
                }),
                ..Contact::default()
            }),
            reference: reference.clone(),
            qualification: Some(Qualification {
                typology: typology.clone(),
                service: service.clone(),
                rule_id: "r1".into(),
                ..Qualification::default()
            }),
            ..Routed::default()
        };
        let messages = [
            (
                format!("guichet.events.request.open.{reference}"),
                event(Transition::Open, 1, RequestStatus::Open).encode_to_vec(),
            ),
            (format!("guichet.routed.{service}.U1"), routed.encode_to_vec()),
            (
                format!("guichet.events.request.take.{reference}"),
                event(Transition::Take, 2, RequestStatus::Taken).encode_to_vec(),
            ),
        ];
        for (subject, payload) in messages {
            pending.push(js.publish(subject, payload.into()).await.unwrap());
        }
        if pending.len() >= 3000 {
            for ack in pending.drain(..) {
                ack.await.unwrap();
            }
        }
    }
    for ack in pending {
        ack.await.unwrap();
    }
}

/// Pulls every message of ROUTED and EVENTS with a plain consumer.
async fn raw_consumer(bus: &Bus, total: usize) -> f64 {
    let started = Instant::now();
    let mut seen = 0;
    for stream in ["ROUTED", "EVENTS"] {
        let consumer = bus
            .jetstream()
            .get_stream(stream)
            .await
            .unwrap()
            .create_consumer(pull::Config {
                durable_name: Some(format!("bench-raw-{}", stream.to_lowercase())),
                ack_policy: AckPolicy::All,
                max_ack_pending: 100_000,
                ..Default::default()
            })
            .await
            .unwrap();
        loop {
            let mut batch = consumer.fetch().max_messages(500).messages().await.unwrap();
            let mut got = 0;
            let mut last = None;
            while let Some(m) = batch.next().await {
                got += 1;
                last = Some(m.unwrap());
            }
            if let Some(m) = last {
                m.ack().await.unwrap();
            }
            seen += got;
            if got == 0 {
                break;
            }
        }
    }
    assert_eq!(seen, total, "the raw consumer saw every message");
    seen as f64 / started.elapsed().as_secs_f64()
}

async fn projection(bus: &Bus, url: &str, prefix: &str, total: usize) -> f64 {
    let store = Store::open(url).await.unwrap();
    let started = Instant::now();
    let mut projector = Projector::start(bus, store.clone(), prefix, 500).await.unwrap();
    let progress = projector.catch_up().await.unwrap();
    let rate = progress.total() as f64 / started.elapsed().as_secs_f64();
    assert_eq!(progress.total() as usize, total, "the projection saw every message");
    store.close().await;
    rate
}

/// Multi-row INSERTs of `rows` (each `width` values) in one transaction.
async fn bulk(store: &Store, table: &str, columns: &str, width: usize, rows: &[Vec<Value>]) {
    let mut tx = store.pool().begin().await.unwrap();
    for chunk in rows.chunks(1000) {
        let mut sql = format!("INSERT INTO {table} ({columns}) VALUES ");
        for r in 0..chunk.len() {
            if r > 0 {
                sql.push(',');
            }
            sql.push('(');
            for c in 0..width {
                if c > 0 {
                    sql.push(',');
                }
                sql.push_str(&format!("${}", r * width + c + 1));
            }
            sql.push(')');
        }
        let mut q = sqlx::query::<Any>(&sql);
        for row in chunk {
            for v in row {
                q = match v {
                    Value::I(i) => q.bind(*i),
                    Value::S(s) => q.bind(s.clone()),
                };
            }
        }
        q.execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();
}

#[derive(Clone)]
enum Value {
    I(i64),
    S(String),
}

/// A year of requests, aggregated as the projection keeps them.
async fn seed_year(store: &Store) -> Duration {
    let started = Instant::now();
    let first = NaiveDate::from_ymd_opt(2025, 1, 1).unwrap();
    let day0 = guichet_console::indicators::period::day_number(first);
    let channels = ["web", "email", "counter", "phone", "postal"];
    let sites = [
        ["formulaire", "formulaire"],
        ["mairie@", "urbanisme@"],
        ["centre", "annexe-nord"],
        ["standard", "standard"],
        ["courrier", "courrier"],
    ];
    let mut requests = Vec::with_capacity(YEAR);
    let mut daily: HashMap<(i64, String, String, String, String), [i64; 3]> = HashMap::new();
    let mut delays: HashMap<(i64, String, String, String, String, String, i64), i64> = HashMap::new();
    let mut all: HashMap<(i64, String, i64), i64> = HashMap::new();
    let mut by_service: HashMap<(i64, String, String, i64), i64> = HashMap::new();
    let opened0 = Utc.with_ymd_and_hms(2025, 1, 1, 8, 0, 0).unwrap().timestamp();
    for i in 0..YEAR {
        let day = day0 + (i * 365 / YEAR) as i64;
        let t = i % 30;
        let (typology, service) = (format!("typologie-{t}"), format!("service-{}", t % 12));
        let c = (i / 30) % 5;
        let (channel, site) = (channels[c].to_owned(), sites[c][(i / 150) % 2].to_owned());
        let closed = i % 20 != 0;
        let opened_at = opened0 + (day - day0) * 86_400;
        requests.push(vec![
            Value::S(format!("2025-Y{i:07}")),
            Value::I(i as i64),
            Value::S(service.clone()),
            Value::S(channel.clone()),
            Value::S(typology.clone()),
            Value::S(site.clone()),
            Value::I(i64::from(i % 7 == 0)),
            Value::I(opened_at),
            Value::S(
                if closed {
                    "closed"
                } else {
                    ["open", "taken", "waiting_usager"][i % 3]
                }
                .to_owned(),
            ),
            Value::I(3),
            Value::I(opened_at + 5 * 86_400),
            Value::I(0),
            Value::I(0),
            Value::I(0),
        ]);
        let d = daily
            .entry((day, service.clone(), channel.clone(), typology.clone(), site.clone()))
            .or_default();
        d[0] += 1;
        d[1] += i64::from(closed);
        d[2] += i64::from(i % 7 == 0);
        for (m, h) in [
            ("take", (i % 50) as i64),
            ("first_answer", (i % 300) as i64),
            ("closure", (i % 700) as i64),
        ] {
            for (unit, v) in [("h", h), ("bd", h / 24)] {
                let metric = format!("{m}_{unit}");
                *delays
                    .entry((
                        day,
                        service.clone(),
                        channel.clone(),
                        typology.clone(),
                        site.clone(),
                        metric.clone(),
                        v,
                    ))
                    .or_default() += 1;
                *all.entry((day, metric.clone(), v)).or_default() += 1;
                *by_service.entry((day, service.clone(), metric, v)).or_default() += 1;
            }
        }
    }
    bulk(
        store,
        "requests",
        "reference, seq, service, channel, typology, site, manual, opened_at, status, version, engagement_due_at, \
         recontacts, transfers, reopenings",
        14,
        &requests,
    )
    .await;
    drop(requests);
    let rows: Vec<Vec<Value>> = daily
        .into_iter()
        .map(|((day, s, c, t, site), [r, cl, man])| {
            let mut row = vec![Value::I(day), Value::S(s), Value::S(c), Value::S(t), Value::S(site)];
            row.extend([r, man, cl, cl, 0, 0, 0, 0, cl / 2, cl, 0, 0].map(Value::I));
            row
        })
        .collect();
    let daily_rows = rows.len();
    bulk(
        store,
        "daily",
        "day, service, channel, typology, site, received, manual, closed, answered, recontacts, transfers_in, \
         transfers_out, reopenings, within_engagement, with_engagement, within_legal, with_legal",
        17,
        &rows,
    )
    .await;
    let rows: Vec<Vec<Value>> = delays
        .into_iter()
        .map(|((day, s, c, t, site, m, v), n)| {
            vec![
                Value::I(day),
                Value::S(s),
                Value::S(c),
                Value::S(t),
                Value::S(site),
                Value::S(m),
                Value::I(v),
                Value::I(n),
            ]
        })
        .collect();
    let delay_rows = rows.len();
    bulk(
        store,
        "daily_delays",
        "day, service, channel, typology, site, metric, value, n",
        8,
        &rows,
    )
    .await;
    let rows: Vec<Vec<Value>> = all
        .into_iter()
        .map(|((day, m, v), n)| vec![Value::I(day), Value::S(m), Value::I(v), Value::I(n)])
        .collect();
    bulk(store, "delays_all", "day, metric, value, n", 4, &rows).await;
    let rows: Vec<Vec<Value>> = by_service
        .into_iter()
        .map(|((day, s, m, v), n)| vec![Value::I(day), Value::S(s), Value::S(m), Value::I(v), Value::I(n)])
        .collect();
    bulk(store, "delays_service", "day, service, metric, value, n", 5, &rows).await;
    if !store.is_sqlite() {
        sqlx::query("ANALYZE").execute(store.pool()).await.unwrap();
    }
    println!(
        "  seeded {YEAR} requests, {daily_rows} daily rows, {delay_rows} delay histogram rows in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    started.elapsed()
}

async fn time_overview(store: &Store, name: &str) {
    let console = Console::new(store.clone());
    let year = Filter {
        from: NaiveDate::from_ymd_opt(2025, 1, 1).unwrap(),
        to: NaiveDate::from_ymd_opt(2025, 12, 31).unwrap(),
        granularity: Granularity::Month,
        service: None,
        channel: None,
        typology: None,
        site: None,
    };
    for (label, filter) in [
        ("year, all services", year.clone()),
        (
            "year, one service",
            Filter {
                service: Some("service-3".into()),
                ..year.clone()
            },
        ),
        (
            "year, one channel",
            Filter {
                channel: Some("counter".into()),
                ..year.clone()
            },
        ),
    ] {
        let mut times = Vec::new();
        for _ in 0..10 {
            let t = Instant::now();
            let o = console.overview(&filter).await.unwrap();
            times.push(t.elapsed());
            assert!(o.volumes.received > 0);
        }
        times.sort();
        println!(
            "  {name:<10} overview {label:<20} p50 {:>7.1} ms   max {:>7.1} ms   (target < 300 ms)",
            times[5].as_secs_f64() * 1e3,
            times[9].as_secs_f64() * 1e3
        );
    }
}

#[tokio::main]
async fn main() {
    let n = n();
    let nats = Nats::start().await;
    let bus = nats.bus().await;
    publish(&bus, n).await;
    let total = 3 * n;
    let raw = raw_consumer(&bus, total).await;
    let dir = tempfile::tempdir().unwrap();
    let sqlite_url = format!("sqlite://{}?mode=rwc", dir.path().join("bench.sqlite").display());
    let sqlite = projection(&bus, &sqlite_url, "bench-sqlite", total).await;
    println!("projection of {n} requests ({total} messages: open, Routed, take)");
    println!("  raw pull consumer          {raw:>9.0} msg/s");
    println!(
        "  projection into SQLite     {sqlite:>9.0} msg/s   ratio {:.2}",
        sqlite / raw
    );
    let postgres = std::process::Command::new("pg_isready")
        .args(["-h", "127.0.0.1", "-p", "5432"])
        .status()
        .is_ok_and(|s| s.success());
    let pg = postgres.then(|| Postgres::create("bench"));
    if let Some(db) = &pg {
        let rate = projection(&bus, &db.url(), "bench-postgres", total).await;
        println!(
            "  projection into PostgreSQL {rate:>9.0} msg/s   ratio {:.2}",
            rate / raw
        );
    }

    println!("overview over a year of {YEAR} requests");
    let year = format!("sqlite://{}?mode=rwc", dir.path().join("year.sqlite").display());
    let store = Store::open(&year).await.unwrap();
    seed_year(&store).await;
    time_overview(&store, "SQLite").await;
    store.close().await;
    if postgres {
        let db = Postgres::create("bench_year");
        let store = Store::open(&db.url()).await.unwrap();
        seed_year(&store).await;
        time_overview(&store, "PostgreSQL").await;
        store.close().await;
    } else {
        println!("  PostgreSQL not answering on 127.0.0.1:5432: skipped");
    }
}
