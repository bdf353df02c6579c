//! The gateway on the 3-node R3 cluster of `deploy/nats/cluster`, nodes
//! killed under it: it starts while the first listed node is down, it
//! reconnects to another node when its own is killed, and readiness
//! (`/readyz`, the desk's gRPC health) says "not ready" while INTAKE has
//! no leader, naming the cause, and "ready" again once it has one; and
//! writers of one record through different nodes all land (`revise`).
#![allow(clippy::unwrap_used)]

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use guichet::{Config, Listeners, ServiceName};
use guichet_core::{
    proto::v1::{Channel, RecordContactRequest, desk_client::DeskClient},
    secret::Secret,
};
use guichet_desk::{DeskConfig, SiteConfig};
use guichet_e2e::{Gateway, loopback};
use guichet_harness::Cluster;
use tonic::{Code, transport::Channel as GrpcChannel};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

const TOKEN: &str = "e2e-cluster-token-0123456789";

fn record(id: &str) -> tonic::Request<RecordContactRequest> {
    let mut request = tonic::Request::new(RecordContactRequest {
        client_request_id: id.into(),
        channel: Channel::Phone as i32,
        site: "accueil".into(),
        agent_id: "agent-7".into(),
        subject: "Signalement d'un lampadaire en panne".into(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    request
}

/// `/readyz`: the status and the JSON body.
async fn readyz(client: &reqwest::Client, gateway: &Gateway) -> (u16, serde_json::Value) {
    let response = client.get(gateway.readyz_url()).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

/// Polls `/readyz` until its answer satisfies `want` (at most `within`).
async fn wait_readyz(
    client: &reqwest::Client,
    gateway: &Gateway,
    within: Duration,
    want: impl Fn(u16, &str) -> bool,
) -> (u16, serde_json::Value) {
    let deadline = Instant::now() + within;
    loop {
        let answer = readyz(client, gateway).await;
        let cause = answer.1["waiting_for"][0].as_str().unwrap_or_default();
        if want(answer.0, cause) || Instant::now() > deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls the desk's gRPC health until it reports `want` (at most `within`).
async fn wait_health(channel: &GrpcChannel, want: ServingStatus, within: Duration) -> Option<i32> {
    let deadline = Instant::now() + within;
    loop {
        let status = HealthClient::new(channel.clone())
            .check(HealthCheckRequest {
                service: "guichet.v1.Desk".into(),
            })
            .await
            .map(|r| r.into_inner().status)
            .ok();
        if status == Some(want as i32) || Instant::now() > deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn guichet_starts_with_the_first_listed_node_down_and_readiness_follows_intake_leadership() {
    let mut cluster = Cluster::start().await;
    // The topology exists (guichet ran before); the operator restarts
    // guichet while nats-1, the first server of `nats.url`, is down.
    drop(cluster.bus().await);
    cluster.nodes[0].kill().await;

    let config = Config {
        nats: cluster.nats_config(),
        topology: Cluster::topology(),
        desk: DeskConfig {
            sites: BTreeMap::from([("accueil".to_owned(), SiteConfig::new(Secret::Inline(TOKEN.into())))]),
            ..DeskConfig::default()
        },
        privacy: guichet_harness::privacy_config(),
        ..Config::default()
    };
    assert!(config.nats.url.as_ref().unwrap()[0].ends_with(&cluster.nodes[0].port().to_string()));
    let grpc = loopback();
    let grpc_addr = grpc.local_addr().unwrap();
    let listeners = Listeners {
        grpc: Some(grpc),
        ..Listeners::default()
    };
    let gateway = Gateway::start(config, vec![ServiceName::Desk], listeners).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc_addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut desk = DeskClient::new(channel.clone());
    desk.record_contact(record("first-down")).await.unwrap();
    // A bus of its own (same list, first node still down), for the
    // errors that the desk turns into its own words.
    let bus = cluster.bus().await;
    assert_eq!(
        wait_health(&channel, ServingStatus::Serving, Duration::from_secs(10)).await,
        Some(ServingStatus::Serving as i32)
    );

    // A second node down: one of three left, no quorum, INTAKE has no
    // leader. (If the gateway was on that node, it says "disconnected"
    // until it is on the third.)
    cluster.nodes[1].kill().await;
    let client = reqwest::Client::new();
    let no_leader = |cause: &str| cause.contains("INTAKE has no leader: cluster election in progress");
    let (status, body) = wait_readyz(&client, &gateway, Duration::from_secs(30), |status, cause| {
        status == 503 && no_leader(cause)
    })
    .await;
    assert_eq!(status, 503, "still ready without a leader for INTAKE: {body}");
    assert!(no_leader(body["waiting_for"][0].as_str().unwrap_or_default()), "{body}");
    assert_eq!(
        wait_health(&channel, ServingStatus::NotServing, Duration::from_secs(10)).await,
        Some(ServingStatus::NotServing as i32)
    );
    let refused = desk.record_contact(record("no-quorum")).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    // The cause, as the bus reports it: an election, not a missing stream.
    let error = bus
        .publish("guichet.intake.web".into(), "no-quorum", "x".into())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("JetStream has no leader for INTAKE (election in progress?)"),
        "{error}"
    );

    // Back to three: a leader again, ready again, the retry stored.
    cluster.nodes[1].restart().await;
    cluster.nodes[0].restart().await;
    let (status, body) = wait_readyz(&client, &gateway, Duration::from_secs(60), |status, _| status == 200).await;
    assert_eq!(status, 200, "not ready again with a leader: {body}");
    assert_eq!(
        wait_health(&channel, ServingStatus::Serving, Duration::from_secs(10)).await,
        Some(ServingStatus::Serving as i32)
    );
    let stored = desk.record_contact(record("no-quorum")).await.unwrap().into_inner();
    assert!(!stored.duplicate, "nothing was stored while refused");

    gateway.stop().await;
    cluster.stop().await;
}

#[tokio::test]
async fn a_bus_reconnects_to_another_listed_node_when_its_node_is_killed() {
    let mut cluster = Cluster::start().await;
    let bus = cluster.bus().await;
    bus.publish("guichet.intake.web".into(), "reconnect-1", "x".into())
        .await
        .unwrap();
    let port = bus.client().server_info().port;
    let node = cluster
        .nodes
        .iter_mut()
        .find(|n| n.port() == port)
        .expect("connected to a listed node");
    node.kill().await;

    // Publishes fail (fast) until the client is on another node and
    // INTAKE has a leader among the two left; then they are stored.
    let deadline = Instant::now() + Duration::from_secs(60);
    let published = loop {
        let error = match bus
            .publish("guichet.intake.web".into(), "reconnect-2", "x".into())
            .await
        {
            Ok(published) => break published,
            Err(e) => e,
        };
        assert!(Instant::now() < deadline, "never published after the kill: {error}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // A try cut off by the kill may have been stored without its PubAck
    // reaching us: then this one is its duplicate. Either way, once.
    let mut intake = bus.jetstream().get_stream("INTAKE").await.unwrap();
    let held = intake.info().await.unwrap().state.messages;
    assert_eq!(
        held, 2,
        "reconnect-1 and reconnect-2 once each (this one duplicate: {})",
        published.duplicate
    );
    let now = bus.client().server_info();
    let nodes: Vec<(u16, bool)> = cluster.nodes.iter().map(|n| (n.port(), n.is_running())).collect();
    assert!(
        now.port != port && nodes.contains(&(now.port, true)),
        "killed {port}, now on {} ({}), nodes (port, running): {nodes:?}",
        now.port,
        now.server_name
    );
    cluster.stop().await;
}

/// Nine writers, three through each node, add themselves to one key of
/// the R3 requests bucket at once, each from what its own node read: the
/// refused compare-and-sets (10071, or 10164 while another write is in
/// flight, and reads answered by a replica behind the leader) are decided
/// again on the leader's value, so every change lands and none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_revisions_through_every_node_all_land() {
    use guichet_core::bus::claim::{Change, Claim, claim, leader_value, revise};
    use tokio_util::bytes::Bytes;

    let cluster = Cluster::start().await;
    let first = cluster.bus().await;
    let Claim::Won(_) = claim(&first.stores().requests, "ref.RACE", Bytes::new()).await.unwrap() else {
        panic!("a free key is won");
    };
    let mut buses = Vec::new();
    for url in cluster.urls() {
        let bus = guichet_core::Bus::start(
            &[url],
            &cluster.nats_config(),
            &Cluster::topology(),
            &tokio_util::sync::CancellationToken::new(),
        )
        .await
        .unwrap();
        buses.push(bus);
    }
    let writers: Vec<_> = (0..9)
        .map(|i| {
            let kv = buses[i % 3].stores().requests.clone();
            tokio::spawn(async move {
                revise::<_, guichet_core::Error>(&kv, "ref.RACE", None, |value| {
                    let mut list = String::from_utf8_lossy(value).into_owned();
                    let me = format!("w{i};");
                    if list.contains(&me) {
                        return Ok(Change::Keep(()));
                    }
                    list.push_str(&me);
                    Ok(Change::Write(Bytes::from(list), ()))
                })
                .await
            })
        })
        .collect();
    for writer in writers {
        assert_eq!(writer.await.unwrap().unwrap(), Some(()));
    }
    let (list, _) = leader_value(&first.stores().requests, "ref.RACE")
        .await
        .unwrap()
        .unwrap();
    let mut names: Vec<&str> = std::str::from_utf8(&list).unwrap().split_terminator(';').collect();
    names.sort_unstable();
    assert_eq!(names, ["w0", "w1", "w2", "w3", "w4", "w5", "w6", "w7", "w8"]);
    cluster.stop().await;
}
