//! The short fault-injection suite, part of `scripts/test`: one run of
//! each fault kind with a fixed seed and 10 s of load (about 20-40 s a
//! run). Each asserts, from the streams, that no acknowledged contact was
//! lost and none stored or routed twice, that the faults really struck
//! and that the load got acknowledgments; the longest unavailability is
//! printed (`--nocapture`), not judged: it is the campaign's figure.

use guichet_faults::{Kind, Pace, run};

/// Fixed, so that `scripts/test` strikes the same way every time.
const SEED: u64 = 20_261_130;

async fn one_run(kind: Kind) {
    let report = run(kind, SEED, Pace::SHORT).await.expect("the run takes place");
    eprintln!("{report}");
    assert!(report.passed(), "{kind} (seed {SEED}):\n{}", report.failures(20));
    assert!(!report.faults.is_empty(), "{kind}: no fault struck");
    assert!(
        report.acknowledged > 50,
        "{kind}: only {} contacts acknowledged",
        report.acknowledged
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_killed_under_web_load_loses_and_duplicates_nothing() {
    one_run(Kind::Gateway).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_single_nats_server_killed_under_web_load_loses_and_duplicates_nothing() {
    one_run(Kind::Nats).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dovecot_killed_under_mail_load_loses_and_duplicates_nothing() {
    one_run(Kind::Dovecot).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_intake_leader_then_another_cluster_node_killed_lose_and_duplicate_nothing() {
    one_run(Kind::Cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_oversized_clients_beside_signed_load_lose_and_duplicate_nothing() {
    one_run(Kind::Hostile).await;
}
