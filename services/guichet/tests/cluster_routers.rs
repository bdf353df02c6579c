//! Routers scaled out on the real 3-node R3 cluster of `deploy/nats/cluster`,
//! three `guichet run` processes at once, each judged by its own
//! `/metrics`:
//!
//! - started together (the INTAKE consumer created by whichever comes
//!   first, its leader still being elected), every router routes within
//!   5 s of being ready under a steady load — none sits idle waiting for
//!   its first pull request to expire;
//! - 300 people × 3 contacts (e-mail only, phone only, both) sent through
//!   the three gateways at once: each routed once, none dead-lettered,
//!   none NAKed for an identity race (the routers' logs), no
//!   record of an id nobody was routed to, an `identity_conflict` event
//!   for every person with more than one id, and `usager forget` leaves no
//!   record listing the person's identifier hashes.

// Test helpers may unwrap: a failure there is the test's.
#![allow(clippy::unwrap_used)]

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use chrono::Utc;
use futures::StreamExt;
use guichet_core::{
    Bus,
    bus::subjects,
    identity::{normalize_email, normalize_phone},
    ids,
    proto::{
        self,
        v1::{Channel, Contact, IdentityClaims, RecordContactRequest, Routed, Source, desk_client::DeskClient},
    },
};
use guichet_harness::{Cluster, cluster::PASSWORD, streams::read_all};
use prost::Message;

const TOKEN: &str = "cluster-routers-desk-token-0123";

/// One `guichet run` process.
struct Process {
    child: Child,
    admin: std::net::SocketAddr,
    grpc: std::net::SocketAddr,
    log: PathBuf,
}

impl Process {
    /// Starts `guichet run --services SERVICES` on the cluster, with its
    /// own admin and gRPC ports; its log goes to a file in `dir`.
    fn start(dir: &Path, name: &str, cluster: &Cluster, services: &str) -> Self {
        let admin = guichet_harness::loopback::free_addr();
        let grpc = guichet_harness::loopback::free_addr();
        let urls: Vec<String> = cluster.urls().iter().map(|u| format!("\"{u}\"")).collect();
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "[nats]\nurl = [{}]\nuser = \"guichet\"\npassword = \"{PASSWORD}\"\nconnect_timeout = \"30s\"\n\
                 [topology]\nreplicas = 3\n[admin]\nlisten = \"{admin}\"\n[log]\nformat = \"human\"\nlevel = \"info\"\n\
                 [desk]\nlisten = \"{grpc}\"\n[desk.sites.accueil]\ntoken = \"{TOKEN}\"\n{}",
                urls.join(", "),
                guichet_harness::privacy_toml()
            ),
        )
        .unwrap();
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_guichet"))
            .arg("--config")
            .arg(&config)
            .args(["run", "--services", services])
            .env_remove("RUST_LOG")
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap();
        Self {
            child,
            admin,
            grpc,
            log,
        }
    }

    fn exited(&mut self) -> Option<String> {
        self.child.try_wait().unwrap().map(|status| {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            format!(
                "exited {status}: {}",
                log.lines().rev().take(10).collect::<Vec<_>>().join("\n")
            )
        })
    }

    /// The lines of its log that contain `needle`.
    fn log_lines(&self, needle: &str) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines()
            .filter(|l| l.contains(needle))
            .collect::<Vec<_>>()
            .join("\n")
    }

    async fn ready(&self, http: &reqwest::Client) -> bool {
        http.get(format!("http://{}/readyz", self.admin))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    }

    /// The sum of a metric's series whose labels contain `labels`.
    async fn metric(&self, http: &reqwest::Client, name: &str, labels: &str) -> f64 {
        let Ok(response) = http.get(format!("http://{}/metrics", self.admin)).send().await else {
            return 0.0;
        };
        let text = response.text().await.unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']) && l.contains(labels))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// SIGTERM, then waits for a clean exit.
    fn stop(mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap()),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "{status}");
                return;
            }
            assert!(Instant::now() < deadline, "guichet did not stop within 30 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Waits until every process answers `/readyz` 200; returns when each was
/// first seen ready.
async fn wait_all_ready(processes: &mut [Process], http: &reqwest::Client, within: Duration) -> Vec<Instant> {
    let deadline = Instant::now() + within;
    let mut ready: Vec<Option<Instant>> = vec![None; processes.len()];
    while ready.iter().any(Option::is_none) {
        for (i, process) in processes.iter_mut().enumerate() {
            if let Some(exit) = process.exited() {
                panic!("process {i} {exit}");
            }
            if ready[i].is_none() && process.ready(http).await {
                ready[i] = Some(Instant::now());
            }
        }
        assert!(Instant::now() < deadline, "not all ready within {within:?}: {ready:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ready.into_iter().map(Option::unwrap).collect()
}

fn contact(n: usize) -> Contact {
    let id = ids::contact_id();
    let now = Utc::now();
    Contact {
        id: id.clone(),
        received_at: Some(proto::timestamp(now)),
        channel: Channel::Web as i32,
        source: Some(Source {
            name: "demarches".into(),
            ..Default::default()
        }),
        claims: Some(IdentityClaims {
            email: format!("charge-{n}@example.fr"),
            ..Default::default()
        }),
        subject: format!("Demande {n}"),
        reference: ids::reference(now),
        idempotency_key: format!("cluster-load-{n}"),
        ..Default::default()
    }
}

/// Every `Routed` on ROUTED, decoded.
async fn routed(bus: &Bus) -> Vec<Routed> {
    read_all(bus.jetstream(), subjects::ROUTED_STREAM, Duration::from_secs(60))
        .await
        .unwrap()
        .into_iter()
        .map(|m| Routed::decode(m.payload.as_slice()).unwrap())
        .collect()
}

async fn stream_messages(bus: &Bus, stream: &str) -> u64 {
    let mut stream = bus.jetstream().get_stream(stream).await.unwrap();
    stream.info().await.map(|i| i.state.messages).unwrap_or(0)
}

#[tokio::test]
async fn routers_started_together_on_the_cluster_each_route_within_5_s_of_being_ready() {
    let cluster = Cluster::start().await;
    let bus = cluster.bus().await;
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();

    // A steady load: 50 contacts a second, bounded in count.
    let load_stop = tokio_util::sync::CancellationToken::new();
    let load = {
        let bus = bus.clone();
        let stop = load_stop.clone();
        tokio::spawn(async move {
            let mut sent = 0;
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            while !stop.is_cancelled() && sent < 6_000 {
                tick.tick().await;
                if bus.publish_contact(&contact(sent)).await.is_ok() {
                    sent += 1;
                }
            }
            sent
        })
    };

    // Three routers started at once: the INTAKE consumer does not exist
    // yet, whichever creates it first, its R3 leader still to be elected.
    let mut routers: Vec<Process> = (0..3)
        .map(|i| Process::start(dir.path(), &format!("router-{i}"), &cluster, "router"))
        .collect();
    let ready = wait_all_ready(&mut routers, &http, Duration::from_secs(90)).await;
    let mut first_routed: Vec<Option<Duration>> = vec![None; 3];
    let deadline = ready.iter().max().copied().unwrap() + Duration::from_secs(5);
    while first_routed.iter().any(Option::is_none) && Instant::now() < deadline + Duration::from_secs(1) {
        for (i, router) in routers.iter().enumerate() {
            if first_routed[i].is_none()
                && router
                    .metric(&http, "guichet_router_contacts_total", "outcome=\"routed\"")
                    .await
                    > 0.0
            {
                first_routed[i] = Some(ready[i].elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut repulls = Vec::new();
    for router in &routers {
        repulls.push(router.metric(&http, "guichet_router_repulls_total", "").await);
    }
    eprintln!("first routed after ready: {first_routed:?}; new pull requests after a failure: {repulls:?}");
    for (i, first) in first_routed.iter().enumerate() {
        let first = first.unwrap_or_else(|| {
            panic!(
                "router {i} routed nothing within 5 s of being ready; its log:\n{}",
                routers[i]
                    .log_lines("")
                    .lines()
                    .rev()
                    .take(15)
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        });
        // Polled every 100 ms, on a machine shared with other tests.
        assert!(
            first <= Duration::from_secs(6),
            "router {i}: first routed {first:?} after ready; its log:\n{}",
            routers[i].log_lines("")
        );
    }

    // Every contact of the load routed once, by whichever router.
    load_stop.cancel();
    let sent = load.await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while stream_messages(&bus, subjects::ROUTED_STREAM).await < sent as u64 {
        assert!(Instant::now() < deadline, "not every contact routed within 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let routed = routed(&bus).await;
    let contacts: BTreeSet<&str> = routed.iter().map(|r| r.contact.as_ref().unwrap().id.as_str()).collect();
    assert_eq!(routed.len(), sent, "each contact routed once");
    assert_eq!(contacts.len(), sent);
    for router in routers {
        router.stop();
    }
    cluster.stop().await;
}

const PEOPLE: usize = 300;

/// Person `n`'s e-mail and phone (a French mobile number).
fn person(n: usize) -> (String, String) {
    (
        format!("personne.{n}@example.fr"),
        format!("06 12 {:02} {:02} {:02}", n / 10_000, n / 100 % 100, n % 100),
    )
}

/// Contact `kind` of person `n`: 0 e-mail only, 1 phone only, 2 both.
fn desk_request(n: usize, kind: usize) -> tonic::Request<RecordContactRequest> {
    let (email, phone) = person(n);
    let mut request = tonic::Request::new(RecordContactRequest {
        client_request_id: format!("p{n}-k{kind}"),
        channel: Channel::Phone as i32,
        site: "accueil".into(),
        agent_id: "agent-1".into(),
        usager: Some(IdentityClaims {
            email: if kind == 1 { String::new() } else { email },
            phone: if kind == 0 { String::new() } else { phone },
            ..Default::default()
        }),
        subject: format!("Demande de la personne {n}"),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    request
}

#[tokio::test]
async fn three_gateways_at_once_no_identity_race_retried_no_orphan_record_no_silent_split() {
    let cluster = Cluster::start().await;
    let bus = cluster.bus().await;
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let mut gateways: Vec<Process> = (0..3)
        .map(|i| Process::start(dir.path(), &format!("gateway-{i}"), &cluster, "desk,router"))
        .collect();
    wait_all_ready(&mut gateways, &http, Duration::from_secs(90)).await;

    // The three contacts of each person reach the three gateways at about
    // the same time, in an order that differs from person to person.
    let started = Instant::now();
    let mut senders = Vec::new();
    for (g, gateway) in gateways.iter().enumerate() {
        let endpoint = format!("http://{}", gateway.grpc);
        senders.push(tokio::spawn(async move {
            let channel = tonic::transport::Endpoint::from_shared(endpoint)
                .unwrap()
                .connect()
                .await
                .unwrap();
            futures::stream::iter(0..PEOPLE)
                .map(|n| {
                    let mut desk = DeskClient::new(channel.clone());
                    async move {
                        let kind = (n + g) % 3;
                        // UNAVAILABLE is retried (same client_request_id), as a counter would.
                        for _ in 0..50 {
                            match desk.record_contact(desk_request(n, kind)).await {
                                Ok(_) => return,
                                Err(e) if e.code() == tonic::Code::Unavailable => {
                                    tokio::time::sleep(Duration::from_millis(200)).await;
                                }
                                Err(e) => panic!("person {n}, contact {kind}: {e:?}"),
                            }
                        }
                        panic!("person {n}, contact {kind}: unavailable for 10 s");
                    }
                })
                .buffer_unordered(8)
                .collect::<Vec<()>>()
                .await;
        }));
    }
    for sender in senders {
        sender.await.unwrap();
    }
    let total = (PEOPLE * 3) as u64;
    let deadline = Instant::now() + Duration::from_secs(90);
    while stream_messages(&bus, subjects::ROUTED_STREAM).await < total {
        for (i, gateway) in gateways.iter_mut().enumerate() {
            if let Some(exit) = gateway.exited() {
                panic!("gateway {i} {exit}");
            }
        }
        assert!(Instant::now() < deadline, "not every contact routed within 90 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("{total} contacts recorded and routed in {:?}", started.elapsed());

    // No contact NAKed (for an identity race or anything else), none dead-lettered.
    let mut retried = 0.0;
    let mut dead = 0.0;
    let mut races = 0.0;
    let mut conflicts_counted = 0.0;
    for gateway in &gateways {
        retried += gateway
            .metric(&http, "guichet_router_contacts_total", "outcome=\"retried\"")
            .await;
        dead += gateway
            .metric(&http, "guichet_router_contacts_total", "outcome=\"dead_letter\"")
            .await;
        races += gateway.metric(&http, "guichet_router_identity_races_total", "").await;
        conflicts_counted += gateway
            .metric(&http, "guichet_router_identity_conflicts_total", "")
            .await;
    }
    eprintln!(
        "identity races lost and resolved in the same attempt: {races}; conflicts published: {conflicts_counted}"
    );
    // A retry for an identity reason names the identity bucket in its
    // error; other retries (a publish timeout on a loaded machine) are
    // allowed here, and reported. The logs are read: each names its start.
    let mut identity_retries = Vec::new();
    for gateway in &gateways {
        assert!(
            !gateway.log_lines("router ready").is_empty(),
            "the log is not being read"
        );
        let retries = gateway.log_lines("will retry");
        identity_retries.extend(
            retries
                .lines()
                .filter(|l| l.contains(guichet_core::bus::subjects::IDENTITY_BUCKET))
                .map(str::to_owned),
        );
    }
    eprintln!("contacts retried for any reason: {retried}");
    assert!(
        identity_retries.is_empty(),
        "contacts NAKed for identity races: {identity_retries:#?}"
    );
    assert_eq!(dead, 0.0, "contacts dead-lettered");

    // Each contact routed once; the ids each person got.
    let routed = routed(&bus).await;
    assert_eq!(routed.len() as u64, total);
    let keys = guichet_harness::pseudonymizer();
    let mut person_of_key: BTreeMap<String, usize> = BTreeMap::new();
    for n in 0..PEOPLE {
        let (email, phone) = person(n);
        person_of_key.insert(keys.identity_key(&normalize_email(&email).unwrap()), n);
        person_of_key.insert(keys.identity_key(&normalize_phone(&phone).unwrap()), n);
    }
    let mut ids_of: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    let mut contacts = BTreeSet::new();
    for r in &routed {
        let contact = r.contact.as_ref().unwrap();
        contacts.insert(contact.id.clone());
        let claims = contact.claims.as_ref().unwrap();
        let key = if claims.email.is_empty() {
            keys.identity_key(&normalize_phone(&claims.phone).unwrap())
        } else {
            keys.identity_key(&normalize_email(&claims.email).unwrap())
        };
        ids_of
            .entry(person_of_key[&key])
            .or_default()
            .insert(r.usager_id.clone());
    }
    assert_eq!(contacts.len() as u64, total, "no contact routed twice");
    let every_id: BTreeSet<&String> = ids_of.values().flatten().collect();

    // No record of an id that no contact was routed to.
    let identity = &bus.stores().identity;
    let mut records = Vec::new();
    let mut listed = identity.keys().await.unwrap();
    while let Some(key) = listed.next().await {
        let key = key.unwrap();
        if let Some(id) = key.strip_prefix("usager.") {
            records.push(id.to_owned());
        }
    }
    let orphans: Vec<&String> = records.iter().filter(|id| !every_id.contains(id)).collect();
    assert!(orphans.is_empty(), "{} orphan records: {orphans:?}", orphans.len());

    // Every person with more than one id: conflict events link them all.
    let events = read_all(bus.jetstream(), subjects::EVENTS_STREAM, Duration::from_secs(30))
        .await
        .unwrap();
    let mut links: Vec<BTreeSet<String>> = Vec::new();
    for event in events
        .iter()
        .filter(|e| e.subject == subjects::event("identity_conflict"))
    {
        let event: serde_json::Value = serde_json::from_slice(&event.payload).unwrap();
        let mut named = BTreeSet::from([event["kept"]["usager_id"].as_str().unwrap().to_owned()]);
        for other in event["others"].as_array().unwrap() {
            named.insert(other["usager_id"].as_str().unwrap().to_owned());
        }
        links.push(named);
    }
    let split: Vec<usize> = ids_of
        .iter()
        .filter(|(_, ids)| ids.len() > 1)
        .map(|(n, _)| *n)
        .collect();
    eprintln!(
        "{} of {PEOPLE} people with more than one id; {} conflict events",
        split.len(),
        links.len()
    );
    for n in &split {
        let ids = &ids_of[n];
        // Grow from one id along the events until nothing is added.
        let mut reached = BTreeSet::from([ids.first().unwrap().clone()]);
        loop {
            let before = reached.len();
            for named in &links {
                if named.iter().any(|id| reached.contains(id)) {
                    reached.extend(named.iter().cloned());
                }
            }
            if reached.len() == before {
                break;
            }
        }
        assert!(
            ids.is_subset(&reached),
            "person {n} split silently: ids {ids:?}, linked by events only {reached:?}"
        );
    }

    // Forgetting every id of a person leaves no record listing their
    // hashes: the split people, and the first 20.
    let forgotten: BTreeSet<usize> = split.iter().copied().chain(0..20).collect();
    for n in &forgotten {
        for id in &ids_of[n] {
            // An id merged… never here; each id is forgotten on its own.
            guichet_router::admin::forget(&bus, keys, id).await.unwrap();
        }
    }
    let mut listing = Vec::new();
    let mut listed = identity.keys().await.unwrap();
    while let Some(key) = listed.next().await {
        let key = key.unwrap();
        if let Some(entry) = identity.entry(key.as_str()).await.unwrap() {
            listing.push((key, entry.value));
        }
    }
    for (key, value) in &listing {
        if let Some(&n) = person_of_key.get(key) {
            assert!(!forgotten.contains(&n), "key of forgotten person {n} left: {key}");
        }
        if key.starts_with("usager.") {
            let record: guichet_router::identity::UsagerRecord = serde_json::from_slice(value).unwrap();
            for listed in &record.identifiers {
                if let Some(n) = person_of_key.get(listed) {
                    assert!(
                        !forgotten.contains(n),
                        "record {key} still lists a hash of forgotten person {n}"
                    );
                }
            }
        }
    }
    for gateway in gateways {
        gateway.stop();
    }
    cluster.stop().await;
}
