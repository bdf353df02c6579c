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
//!    their ≈ 10 million journal rows (transitions and contacts), and the
//!    counts and delay histograms through the projection's own
//!    aggregates, with
//!    a town's dimensions: 30 typologies each of one of 12 services, 5
//!    channels, 8 channel×site pairs); then the overview of the year
//!    (by month), unfiltered and filtered by one service, channel,
//!    typology or site, by two dimensions, and of half a year by week are
//!    timed, 10 times each; `sqlite` or `postgres` as an argument times
//!    that backend only. `RUST_LOG=sqlx::query=debug` prints every
//!    statement with its time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{AckPolicy, pull};
use chrono::{NaiveDate, TimeZone, Utc};
use futures::StreamExt;
use guichet_console::{
    Console, Filter, Granularity, Projector, Store,
    apply::{Delta, Dims},
    rollup::{self, Aggregates, month_of},
};
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
        let sql = format!(
            "INSERT INTO {table} ({columns}) {}",
            rollup::values(store.is_sqlite(), chunk.len(), width)
        );
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

/// The journal's rows of the year (the `transitions` and `contacts`
/// tables, ≈ 10 million), written 100,000 at a time: the overview does not
/// read them, but they make the database a year's size.
#[derive(Default)]
struct Journal {
    transitions: Vec<Vec<Value>>,
    contacts: Vec<Vec<Value>>,
    seq: i64,
}

impl Journal {
    /// Request `i`'s events (open, then take, answer and close as far as
    /// it went) and contacts (a follow-up for one in ten).
    fn request(&mut self, i: usize, reference: &str, dims: &Dims, status: &str, opened_at: i64) {
        let steps: &[(&str, &str, &str)] = &[
            ("open", "", "open"),
            ("take", "open", "taken"),
            ("answer", "taken", "answered"),
            ("close", "answered", "closed"),
        ];
        let reached = match status {
            "closed" => 4,
            "open" => 1,
            _ => 2,
        };
        for (version, (kind, from, to)) in steps[..reached].iter().enumerate() {
            self.seq += 1;
            self.transitions.push(vec![
                Value::I(self.seq),
                Value::S(reference.to_owned()),
                Value::S((*kind).to_owned()),
                Value::S(dims.service.clone()),
                Value::S(String::new()),
                Value::S((*from).to_owned()),
                Value::S((*to).to_owned()),
                Value::I(opened_at + version as i64 * 3_600),
                Value::I(version as i64 + 1),
            ]);
        }
        for follow_up in 0..=usize::from(i.is_multiple_of(10)) {
            self.contacts.push(vec![
                Value::S(format!("C{i:09}-{follow_up}")),
                Value::I((2 * i + follow_up) as i64),
                Value::S(reference.to_owned()),
                Value::S(dims.channel.clone()),
                Value::S(dims.site.clone()),
                Value::I(opened_at + follow_up as i64 * 86_400),
                Value::I(follow_up as i64),
            ]);
        }
    }

    async fn write(&mut self, store: &Store) {
        bulk(
            store,
            "transitions",
            "seq, reference, kind, service, from_service, from_status, to_status, occurred_at, version",
            9,
            &std::mem::take(&mut self.transitions),
        )
        .await;
        bulk(
            store,
            "contacts",
            "contact_id, seq, reference, channel, site, received_at, follow_up",
            7,
            &std::mem::take(&mut self.contacts),
        )
        .await;
    }
}

/// A year of requests, aggregated by the projection's own [`Aggregates`]
/// (written a month at a time, as multi-row upserts).
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
    let mut aggregates = Aggregates::default();
    let mut journal = Journal::default();
    let mut month = month_of(day0);
    let opened0 = Utc.with_ymd_and_hms(2025, 1, 1, 8, 0, 0).unwrap().timestamp();
    let mut conn = store.pool().acquire().await.unwrap();
    for i in 0..YEAR {
        let day = day0 + (i * 365 / YEAR) as i64;
        if month_of(day) != month {
            month = month_of(day);
            let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
            aggregates.flush(&mut tx).await.unwrap();
            tx.commit().await.unwrap();
        }
        let t = i % 30;
        let (typology, service) = (format!("typologie-{t}"), format!("service-{}", t % 12));
        let c = (i / 30) % 5;
        let (channel, site) = (channels[c].to_owned(), sites[c][(i / 150) % 2].to_owned());
        let closed = i % 20 != 0;
        let status = if closed {
            "closed"
        } else {
            ["open", "taken", "waiting_usager"][i % 3]
        };
        let opened_at = opened0 + (day - day0) * 86_400;
        let reference = format!("2025-Y{i:07}");
        requests.push(vec![
            Value::S(reference.clone()),
            Value::I(i as i64),
            Value::S(service.clone()),
            Value::S(channel.clone()),
            Value::S(typology.clone()),
            Value::S(site.clone()),
            Value::I(i64::from(i % 7 == 0)),
            Value::I(opened_at),
            Value::S(status.to_owned()),
            Value::I(3),
            Value::I(opened_at + 5 * 86_400),
            Value::I(opened_at + 5 * 86_400),
            Value::I(0),
            Value::I(0),
            Value::I(0),
        ]);
        let dims = Dims {
            service,
            channel,
            typology,
            site,
        };
        journal.request(i, &reference, &dims, status, opened_at);
        if journal.transitions.len() >= 100_000 {
            journal.write(store).await;
        }
        let closed = i64::from(closed);
        aggregates.add_daily(
            day,
            &dims,
            Delta {
                received: 1,
                manual: i64::from(i % 7 == 0),
                closed,
                answered: closed,
                within_engagement: closed * i64::from(i % 2 == 0),
                with_engagement: closed,
                ..Delta::default()
            },
        );
        for (m, h) in [
            ("take", (i % 50) as i64),
            ("first_answer", (i % 300) as i64),
            ("closure", (i % 700) as i64),
        ] {
            aggregates.add_delay(day, &dims, format!("{m}_h"), h);
            aggregates.add_delay(day, &dims, format!("{m}_bd"), h / 24);
        }
    }
    let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
    aggregates.flush(&mut tx).await.unwrap();
    tx.commit().await.unwrap();
    drop(conn);
    journal.write(store).await;
    bulk(
        store,
        "requests",
        "reference, seq, service, channel, typology, site, manual, opened_at, status, version, engagement_due_at, \
         overdue_at, recontacts, transfers, reopenings",
        15,
        &requests,
    )
    .await;
    drop(requests);
    if !store.is_sqlite() {
        // As autovacuum leaves a table in service: statistics and the
        // visibility map (index-only scans).
        sqlx::query("VACUUM ANALYZE").execute(store.pool()).await.unwrap();
    }
    let mut counts = Vec::new();
    for table in [
        "transitions",
        "contacts",
        "daily",
        "daily_delays",
        "totals_by",
        "delays_by_day",
        "delays_by_month",
    ] {
        let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(store.pool())
            .await
            .unwrap();
        counts.push(format!("{table} {n}"));
    }
    println!(
        "  seeded {YEAR} requests ({}) in {:.1} s",
        counts.join(", "),
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
        (
            "year, one typology",
            Filter {
                typology: Some("typologie-7".into()),
                ..year.clone()
            },
        ),
        (
            "year, one site",
            Filter {
                site: Some("annexe-nord".into()),
                ..year.clone()
            },
        ),
        (
            "year, service+channel",
            Filter {
                service: Some("service-3".into()),
                channel: Some("counter".into()),
                ..year.clone()
            },
        ),
        (
            "15 Mar-14 Sep",
            Filter {
                from: NaiveDate::from_ymd_opt(2025, 3, 15).unwrap(),
                to: NaiveDate::from_ymd_opt(2025, 9, 14).unwrap(),
                granularity: Granularity::Week,
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
            "  {name:<10} overview {label:<22} p50 {:>7.1} ms   max {:>7.1} ms   (target < 300 ms)",
            times[5].as_secs_f64() * 1e3,
            times[9].as_secs_f64() * 1e3
        );
    }
}

#[tokio::main]
async fn main() {
    // `RUST_LOG=sqlx::query=debug` prints each statement with its time.
    guichet_core::telemetry::init_tracing(&guichet_core::config::LogConfig {
        level: "warn".into(),
        ..Default::default()
    });
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
    // `scripts/bench console postgres` (or `sqlite`): that backend only.
    let only = |backend: &str| {
        let named: Vec<String> = std::env::args().filter(|a| a == "sqlite" || a == "postgres").collect();
        named.is_empty() || named.iter().any(|a| a == backend)
    };
    if only("sqlite") {
        let year = format!("sqlite://{}?mode=rwc", dir.path().join("year.sqlite").display());
        let store = Store::open(&year).await.unwrap();
        seed_year(&store).await;
        time_overview(&store, "SQLite").await;
        store.close().await;
    }
    if postgres && only("postgres") {
        let db = Postgres::create("bench_year");
        let store = Store::open(&db.url()).await.unwrap();
        seed_year(&store).await;
        time_overview(&store, "PostgreSQL").await;
        store.close().await;
    } else if !postgres {
        println!("  PostgreSQL not answering on 127.0.0.1:5432: skipped");
    }
}
