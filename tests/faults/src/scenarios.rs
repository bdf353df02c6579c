//! The five scenarios: what runs, what load, which fault when.
//!
//! Every random choice (how many faults, when, for how long, which node,
//! how many hostile clients) is drawn from the run's seed before it is
//! needed, so the same seed strikes the same way; the cluster's leader is
//! the one thing the seed cannot choose (the cluster elects it).

use std::{
    path::Path,
    time::{Duration, SystemTime},
};

use async_nats::jetstream;
use guichet_harness::{
    Cluster, Dovecot, Node,
    cluster::{PASSWORD, read_repo_file, start_config},
    dovecot::{IMAP_PASSWORD, IMAP_USER},
    port_taken,
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio::time::Instant;

use crate::{
    Kind, Pace, RunReport, binary,
    check::{self, Expected},
    gateway::{Gateway, GatewayConfig, NatsAccess},
    hostile::Hostile,
    mail_load::MailLoad,
    web_load::{FORM, Submission, WebLoad},
};

/// How long submissions made during the load keep being retried after it.
const RETRY_AFTER_END: Duration = Duration::from_secs(40);
/// How long the router gets to route everything stored, after the load.
const SETTLE_WITHIN: Duration = Duration::from_secs(60);
/// How long the mail watcher gets to empty the inbox after the load (its
/// reconnection backoff reaches 15 s).
const DRAIN_WITHIN: Duration = Duration::from_secs(90);
/// How long the cluster gets to elect a leader and catch a node up.
const HEAL_WITHIN: Duration = Duration::from_secs(30);

pub async fn run(kind: Kind, seed: u64, pace: Pace) -> Result<RunReport, String> {
    let started = Instant::now();
    let binary = binary::guichet()?;
    let built = started.elapsed();
    let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut report = RunReport {
        kind,
        seed,
        acknowledged: 0,
        lost: Vec::new(),
        duplicates: Vec::new(),
        problems: Vec::new(),
        faults: Vec::new(),
        notes: Vec::new(),
        longest_unavailability: Duration::ZERO,
        took: Duration::ZERO,
    };
    match kind {
        Kind::Dovecot => mail_run(&mut report, &mut rng, pace, binary, dir.path()).await?,
        _ => web_run(&mut report, &mut rng, pace, binary, dir.path()).await?,
    }
    report.took = started.elapsed();
    report.notes.push(format!("guichet binary ready in {}", secs(built)));
    Ok(report)
}

/// The NATS side of a run.
enum Broker {
    Single(Box<Node>),
    Cluster(Cluster),
}

impl Broker {
    /// `deploy/nats/single.conf`, as shipped (fsync per write, password).
    async fn single(dir: &Path) -> Result<Self, String> {
        let text = read_repo_file("deploy/nats/single.conf");
        let mut last = String::new();
        for _ in 0..5 {
            match start_config(dir, "single", &text).await {
                Ok(node) => return Ok(Broker::Single(Box::new(node))),
                Err(e) if port_taken(&e) => last = e,
                Err(e) => return Err(format!("nats-server from deploy/nats/single.conf: {e}")),
            }
        }
        Err(format!("nats-server from deploy/nats/single.conf: {last}"))
    }

    fn nodes(&self) -> Vec<&Node> {
        match self {
            Broker::Single(node) => vec![&**node],
            Broker::Cluster(cluster) => cluster.nodes.iter().collect(),
        }
    }

    /// What guichet is given: every node, as an operator lists them
    /// (guichet starts and reconnects while any one of them is up).
    fn access(&self) -> NatsAccess {
        let nodes = self.nodes();
        NatsAccess {
            url: nodes.iter().map(|n| n.url()).collect::<Vec<_>>().join(","),
            user: "guichet".into(),
            password: PASSWORD.into(),
            replicas: nodes.len(),
        }
    }

    /// A JetStream context on every node (the checks must outlive a node).
    async fn jetstream(&self) -> Result<jetstream::Context, String> {
        let urls: Vec<String> = self.nodes().iter().map(|n| n.url()).collect();
        let client = async_nats::ConnectOptions::with_user_and_password("guichet".into(), PASSWORD.into())
            .connection_timeout(Duration::from_secs(5))
            .connect(urls.as_slice())
            .await
            .map_err(|e| format!("connect to NATS: {e}"))?;
        Ok(jetstream::new(client))
    }

    /// Waits until JetStream answers (a fresh cluster elects its meta leader first).
    async fn wait_jetstream(&self, js: &jetstream::Context) -> Result<(), String> {
        let deadline = Instant::now() + HEAL_WITHIN;
        loop {
            match js.query_account().await {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => return Err(format!("JetStream not available: {e}")),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

/// Starts guichet; on the cluster a first start can meet an election, so
/// it is tried up to three times.
async fn start_gateway(binary: &Path, dir: &Path, config: &GatewayConfig) -> Result<Gateway, String> {
    let mut last = String::new();
    for _ in 0..3 {
        match Gateway::start(binary.to_path_buf(), dir, config).await {
            Ok(gateway) => return Ok(gateway),
            Err(e) => last = e,
        }
    }
    Err(format!("guichet did not start: {last}"))
}

/// `count` moments spread over the middle of the load (one in each of
/// `count` equal slices of `[from, to]` of it), in order.
fn moments(rng: &mut StdRng, count: usize, load: Duration, from: f64, to: f64) -> Vec<Duration> {
    let slice = (to - from) / count as f64;
    (0..count)
        .map(|i| load.mul_f64(from + slice * (i as f64 + rng.random_range(0.0..1.0))))
        .collect()
}

fn millis(rng: &mut StdRng, range: std::ops::Range<u64>) -> Duration {
    Duration::from_millis(rng.random_range(range))
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Gateway, nats, cluster and hostile runs: guichet's web and router
/// under a platform's signed submissions.
async fn web_run(
    report: &mut RunReport,
    rng: &mut StdRng,
    pace: Pace,
    binary: std::path::PathBuf,
    dir: &Path,
) -> Result<(), String> {
    let entered = Instant::now();
    let mut broker = match report.kind {
        Kind::Cluster => Broker::Cluster(Cluster::start().await),
        _ => Broker::single(dir).await?,
    };
    let js = broker.jetstream().await?;
    broker.wait_jetstream(&js).await?;
    let config = GatewayConfig {
        nats: broker.access(),
        services: "web,router",
        extra: String::new(),
    };
    let mut gateway = start_gateway(&binary, dir, &config).await?;
    let load = WebLoad {
        url: gateway.form_url(),
        rate: pace.rate,
        duration: pace.load,
        retry_after_end: RETRY_AFTER_END,
        prefix: format!("faults-{}", report.seed),
        seed: report.seed,
    };
    let load_start = SystemTime::now();
    let t0 = Instant::now();
    report
        .notes
        .push(format!("servers and guichet started in {}", secs(t0 - entered)));
    let load = tokio::spawn(load.run());
    let struck = match (report.kind, &mut broker) {
        (Kind::Gateway, _) => strike_gateway(report, rng, pace, t0, &mut gateway).await,
        (Kind::Nats, Broker::Single(node)) => strike_single_nats(report, rng, pace, t0, node).await,
        (Kind::Cluster, Broker::Cluster(cluster)) => strike_cluster(report, rng, pace, t0, cluster, &js).await,
        (Kind::Hostile, _) => strike_hostile(report, rng, pace, t0, &gateway).await,
        _ => Err(format!("no {} fault on this broker", report.kind)),
    };
    if let Err(e) = struck {
        report.problems.push(e);
    }
    let submissions = load.await.map_err(|e| format!("the load task failed: {e}"))?;
    let load_took = t0.elapsed();
    if let Err(e) = gateway.check_alive() {
        report.problems.push(e);
    }
    let holdings = check::settle(&js, SETTLE_WITHIN).await?;
    report.notes.push(format!(
        "load and retries {}, routing settled {} later",
        secs(load_took),
        secs(t0.elapsed() - load_took)
    ));
    judge_web(report, &submissions, &holdings, load_start, pace);
    if let Err(e) = gateway.stop().await {
        report.notes.push(format!("clean stop: {e}"));
    }
    Ok(())
}

fn judge_web(
    report: &mut RunReport,
    submissions: &[Submission],
    holdings: &check::Holdings,
    start: SystemTime,
    pace: Pace,
) {
    let expected: Vec<Expected> = submissions
        .iter()
        .map(|s| Expected {
            source_key: format!("web:{FORM}:{}", s.key),
            acknowledged: s.contact_id.is_some(),
            contact_id: s.contact_id.clone(),
        })
        .collect();
    let verdict = check::judge(&expected, holdings);
    report.acknowledged = verdict.acknowledged;
    report.lost = verdict.lost;
    report.duplicates = verdict.duplicates;
    report.problems.extend(verdict.problems);
    for s in submissions {
        if let Some(refusal) = &s.refused {
            report.problems.push(format!("{}: refused {refusal}", s.key));
        }
    }
    let unanswered = submissions
        .iter()
        .filter(|s| s.contact_id.is_none() && s.refused.is_none())
        .count();
    if unanswered > 0 {
        report.problems.push(format!(
            "{unanswered} of {} submissions never got their 202 ({} s of retries after the load)",
            submissions.len(),
            RETRY_AFTER_END.as_secs()
        ));
    }
    report.notes.push(format!(
        "submissions: {}, attempts: {}",
        submissions.len(),
        submissions.iter().map(|s| u64::from(s.attempts)).sum::<u64>()
    ));
    report.longest_unavailability = check::longest_gap(
        start,
        start + pace.load,
        submissions.iter().filter_map(|s| s.acked_at).collect(),
    );
}

/// 1 to 3 SIGKILLs of guichet, each restarted after 0 to 1.5 s.
async fn strike_gateway(
    report: &mut RunReport,
    rng: &mut StdRng,
    pace: Pace,
    t0: Instant,
    gateway: &mut Gateway,
) -> Result<(), String> {
    let count = rng.random_range(1..=3);
    let plan: Vec<(Duration, Duration)> = moments(rng, count, pace.load, 0.1, 0.75)
        .into_iter()
        .map(|at| (at, millis(rng, 0..1500)))
        .collect();
    for (at, down) in plan {
        tokio::time::sleep_until(t0 + at).await;
        let struck = t0.elapsed();
        gateway.kill().await;
        tokio::time::sleep(down).await;
        gateway.restart()?;
        report
            .faults
            .push(format!("guichet killed at {} for {}", secs(struck), secs(down)));
    }
    Ok(())
}

/// 1 or 2 SIGKILLs of the single nats-server, restarted after 0.2 to 3 s.
async fn strike_single_nats(
    report: &mut RunReport,
    rng: &mut StdRng,
    pace: Pace,
    t0: Instant,
    node: &mut Node,
) -> Result<(), String> {
    let count = rng.random_range(1..=2);
    let plan: Vec<(Duration, Duration)> = moments(rng, count, pace.load, 0.1, 0.7)
        .into_iter()
        .map(|at| (at, millis(rng, 200..3000)))
        .collect();
    for (at, down) in plan {
        tokio::time::sleep_until(t0 + at).await;
        let struck = t0.elapsed();
        node.kill().await;
        tokio::time::sleep(down).await;
        node.restart().await;
        report
            .faults
            .push(format!("nats-server killed at {} for {}", secs(struck), secs(down)));
    }
    Ok(())
}

/// The INTAKE leader killed and restarted, then (once the stream is whole
/// again) another node, drawn from the seed.
async fn strike_cluster(
    report: &mut RunReport,
    rng: &mut StdRng,
    pace: Pace,
    t0: Instant,
    cluster: &mut Cluster,
    js: &jetstream::Context,
) -> Result<(), String> {
    let first_at = pace.load.mul_f64(rng.random_range(0.1..0.25));
    let first_down = millis(rng, 500..3000);
    let second_at = pace.load.mul_f64(rng.random_range(0.45..0.6));
    let second_down = millis(rng, 500..3000);
    let second_pick = rng.random_range(0..2_usize);

    tokio::time::sleep_until(t0 + first_at).await;
    let leader = intake_leader(js).await?;
    let first = node_index(cluster, &leader)?;
    let struck = t0.elapsed();
    cluster.nodes[first].kill().await;
    tokio::time::sleep(first_down).await;
    cluster.nodes[first].restart().await;
    let healed = whole_again(js).await?;
    report.faults.push(format!(
        "{leader} (INTAKE leader) killed at {} for {}, stream whole again {} later",
        secs(struck),
        secs(first_down),
        secs(healed)
    ));

    tokio::time::sleep_until(t0 + second_at).await;
    let others: Vec<usize> = (0..cluster.nodes.len()).filter(|i| *i != first).collect();
    let second = others[second_pick % others.len()];
    let now_leader = intake_leader(js).await.unwrap_or_default();
    let name = cluster.nodes[second].name.clone();
    let role = if name == now_leader {
        "the new leader"
    } else {
        "a follower"
    };
    let struck = t0.elapsed();
    cluster.nodes[second].kill().await;
    tokio::time::sleep(second_down).await;
    cluster.nodes[second].restart().await;
    let healed = whole_again(js).await?;
    report.faults.push(format!(
        "{name} ({role}) killed at {} for {}, stream whole again {} later",
        secs(struck),
        secs(second_down),
        secs(healed)
    ));
    Ok(())
}

fn node_index(cluster: &Cluster, name: &str) -> Result<usize, String> {
    cluster
        .nodes
        .iter()
        .position(|n| n.name == name)
        .ok_or_else(|| format!("INTAKE's leader `{name}` is none of the cluster's nodes"))
}

/// The server name of INTAKE's current leader.
async fn intake_leader(js: &jetstream::Context) -> Result<String, String> {
    let deadline = Instant::now() + HEAL_WITHIN;
    loop {
        if let Ok(Ok(mut stream)) = tokio::time::timeout(Duration::from_secs(2), js.get_stream("INTAKE")).await
            && let Ok(Ok(info)) = tokio::time::timeout(Duration::from_secs(2), stream.info()).await
            && let Some(leader) = info.cluster.as_ref().and_then(|c| c.leader.clone())
        {
            return Ok(leader);
        }
        if Instant::now() > deadline {
            return Err(format!("INTAKE had no leader for {}", secs(HEAL_WITHIN)));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until INTAKE has a leader and both other replicas are current;
/// returns how long that took.
async fn whole_again(js: &jetstream::Context) -> Result<Duration, String> {
    let start = Instant::now();
    loop {
        if let Ok(Ok(mut stream)) = tokio::time::timeout(Duration::from_secs(2), js.get_stream("INTAKE")).await
            && let Ok(Ok(info)) = tokio::time::timeout(Duration::from_secs(2), stream.info()).await
            && let Some(cluster) = info.cluster.as_ref()
            && cluster.leader.is_some()
            && cluster.replicas.len() == 2
            && cluster.replicas.iter().all(|p| p.current && !p.offline)
        {
            return Ok(start.elapsed());
        }
        if start.elapsed() > HEAL_WITHIN {
            return Err(format!("INTAKE not whole again {} after a restart", secs(HEAL_WITHIN)));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// 100 to 300 slow connections and 2 to 8 chunked over-limit bodies,
/// from a moment in the first half of the load.
async fn strike_hostile(
    report: &mut RunReport,
    rng: &mut StdRng,
    pace: Pace,
    t0: Instant,
    gateway: &Gateway,
) -> Result<(), String> {
    let at = pace.load.mul_f64(rng.random_range(0.1..0.3));
    let hostile = Hostile {
        web: gateway.web,
        slow: rng.random_range(100..=300),
        oversized: rng.random_range(2..=8),
        hold: pace.load.mul_f64(rng.random_range(0.3..0.5)),
    };
    tokio::time::sleep_until(t0 + at).await;
    report.faults.push(format!(
        "{} slow connections (up to {}) and {} chunked 21 MiB bodies from {}",
        hostile.slow,
        secs(hostile.hold),
        hostile.oversized,
        secs(t0.elapsed())
    ));
    let answers = hostile.run().await;
    report.notes.push(format!("hostile clients' answers: {answers:?}"));
    Ok(())
}

/// The mail run: guichet's mail watcher and router on one mailbox of a
/// real Dovecot that is killed (every process at once) while messages
/// are APPENDed.
async fn mail_run(
    report: &mut RunReport,
    rng: &mut StdRng,
    pace: Pace,
    binary: std::path::PathBuf,
    dir: &Path,
) -> Result<(), String> {
    let entered = Instant::now();
    let broker = Broker::single(dir).await?;
    let js = broker.jetstream().await?;
    broker.wait_jetstream(&js).await?;
    let mut dovecot = Dovecot::start().await;
    let secret = dir.join("imap-password");
    std::fs::write(&secret, format!("{IMAP_PASSWORD}\n")).map_err(|e| format!("imap password file: {e}"))?;
    let config = GatewayConfig {
        nats: broker.access(),
        services: "mail,router",
        extra: dovecot.mailbox_toml(&secret),
    };
    let mut gateway = start_gateway(&binary, dir, &config).await?;
    let load = MailLoad {
        port: dovecot.port(),
        user: IMAP_USER.into(),
        password: IMAP_PASSWORD.into(),
        rate: pace.rate / 2.0,
        duration: pace.load,
        prefix: format!("faults-{}", report.seed),
    };
    let count = rng.random_range(1..=3);
    let plan: Vec<(Duration, Duration)> = moments(rng, count, pace.load, 0.1, 0.7)
        .into_iter()
        .map(|at| (at, millis(rng, 200..3000)))
        .collect();
    let load_start = SystemTime::now();
    let t0 = Instant::now();
    report
        .notes
        .push(format!("servers and guichet started in {}", secs(t0 - entered)));
    let load = tokio::spawn(load.run());
    for (at, down) in plan {
        tokio::time::sleep_until(t0 + at).await;
        let struck = t0.elapsed();
        dovecot.kill().await;
        tokio::time::sleep(down).await;
        dovecot.start_again().await;
        report
            .faults
            .push(format!("dovecot killed at {} for {}", secs(struck), secs(down)));
    }
    let appended = load.await.map_err(|e| format!("the mail load failed: {e}"))?;

    // Acknowledged, for mail: moved out of the inbox.
    let deadline = Instant::now() + DRAIN_WITHIN;
    let mut left = dovecot.count(IMAP_USER, "INBOX").await;
    while left > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        left = dovecot.count(IMAP_USER, "INBOX").await;
    }
    if left > 0 {
        report.problems.push(format!(
            "{left} message(s) still in the inbox {} after the load",
            secs(DRAIN_WITHIN)
        ));
    }
    if let Err(e) = gateway.check_alive() {
        report.problems.push(e);
    }
    // A message the watcher gave up on is in the error folder: a fault of
    // the servers must never put one there.
    let refused = dovecot.count(IMAP_USER, "Guichet-erreurs").await;
    if refused > 0 {
        report
            .problems
            .push(format!("{refused} message(s) in the error folder Guichet-erreurs"));
    }
    let moved: Vec<String> = dovecot
        .messages(IMAP_USER, "Traites")
        .await
        .iter()
        .filter_map(|m| message_id(&m.raw))
        .collect();
    let holdings = check::settle(&js, SETTLE_WITHIN).await?;
    let expected: Vec<Expected> = appended
        .iter()
        .map(|a| Expected {
            source_key: a.message_id.clone(),
            acknowledged: moved.contains(&a.message_id),
            contact_id: None,
        })
        .collect();
    let verdict = check::judge(&expected, &holdings);
    report.acknowledged = verdict.acknowledged;
    report.lost = verdict.lost;
    report.duplicates = verdict.duplicates;
    report.problems.extend(verdict.problems);
    for a in appended
        .iter()
        .filter(|a| a.confirmed && !moved.contains(&a.message_id))
    {
        report.problems.push(format!(
            "{}: APPEND confirmed, not moved out of the inbox",
            a.message_id
        ));
    }
    let mut once: Vec<&String> = moved.iter().collect();
    once.sort();
    once.dedup();
    if once.len() != moved.len() {
        report.duplicates.push(format!(
            "{} message(s) twice in the moved-to folder",
            moved.len() - once.len()
        ));
    }
    report.notes.push(format!(
        "appended: {} ({} confirmed)",
        appended.len(),
        appended.iter().filter(|a| a.confirmed).count()
    ));
    report.longest_unavailability = check::longest_gap(
        load_start,
        load_start + pace.load,
        holdings.stored_at(appended.iter().map(|a| a.message_id.as_str())),
    );
    if !report.passed() {
        report
            .notes
            .push(format!("guichet's warnings:\n{}", gateway.warnings(30)));
    }
    if let Err(e) = gateway.stop().await {
        report.notes.push(format!("clean stop: {e}"));
    }
    Ok(())
}

/// The Message-ID of a raw message, without its angle brackets.
fn message_id(raw: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let line = text
        .lines()
        .take_while(|l| !l.is_empty())
        .find(|l| l.to_ascii_lowercase().starts_with("message-id:"))?;
    Some(line["message-id:".len()..].trim().trim_matches(['<', '>']).to_owned())
}
