//! The append scenarios again on three clustered nats-servers, the gateway's stream and the
//! baselines' stream each with three replicas: every figure pays JetStream's quorum round trip.
//! The nodes route to each other directly: `TestCluster::start`'s links are proxies in this
//! process, whose copying (8 KiB at a time, without `TCP_NODELAY`) would be measured too.
//!
//! Where the clients sit is fixed, so runs compare: the gateway (given every node's URL, it
//! picks one at random) and the raw baselines' client on the same node, and both streams led
//! by another node, as two gateways out of three in a cluster are. `BENCH_R3_ON_LEADER=1` has
//! both streams led by that node instead, which takes the hops between nodes out of the
//! figures but the replication.
//!
//! Last, 64 clients on 64 sessions against a gateway with one event stream (`_k1`) and then
//! against one with three shards (`_k3`, `STARCITE_STREAM_SHARDS=3`) on the same cluster: the
//! same deployment growing its shards, as an operator would. The K=3 gateway keeps shard 0 (the
//! K=1 run's stream) and adds two; its new sessions spread over all three by their ids' hash.
//! Each node's CPU is reported alone, with where each shard's leader is: on two shared cores the
//! rate cannot grow with K, but the work moving between nodes shows.

use std::collections::{BTreeMap, HashSet};

use async_nats::jetstream;
use futures::TryStreamExt;
use starcite_tests::{GatewayProcess, TestCluster};

use crate::Selection;
use crate::appends;
use crate::harness::{self, Report, Scale, SharedCores, Topology};

/// Every scenario of this part, as the report names them.
pub const SCENARIOS: &[&str] = &[
    "append_c1_r3",
    "raw_cas_c1_r3",
    "http_floor_c1_r3",
    "append_hot_c64_r3",
    "raw_batch_64_r3",
    "append_c64_k1_r3",
    "append_c64_k3_r3",
];

/// The baselines' stream (`appends::raw_stream`).
const RAW_STREAM: &str = "BENCH_RAW";

/// Starts the cluster and a gateway on it, runs the scenarios `selection` wants, and stops both.
pub async fn run(scale: Scale, selection: &Selection, report: &mut Report) {
    let cluster = TestCluster::start().await;
    let urls = cluster.urls().join(",");
    let mut gateway = harness::start_gateway(&urls, &[("STARCITE_STREAM_REPLICAS", "3")]).await;
    let events = gateway::config::Config::default().nats.stream;
    assert_eq!(
        cluster.stream_nodes(&events).await.len(),
        3,
        "the gateway's stream has three replicas"
    );

    let node = connected_node(gateway.pid(), &cluster);
    let on_leader = std::env::var("BENCH_R3_ON_LEADER").is_ok_and(|value| value == "1");
    let mut leader = cluster.stream_leader(&events).await;
    if on_leader {
        leader = lead_from(&cluster, &events, node).await;
    } else if leader == node {
        leader = cluster.step_down(&events).await;
    }
    let client = async_nats::connect(cluster.url(node))
        .await
        .expect("connect to the gateway's node");
    let jetstream = jetstream::new(client);
    appends::raw_stream(&jetstream, 3).await;
    let raw_leader = lead_from(&cluster, RAW_STREAM, leader).await;
    cluster.wait_until_replicated(&events).await;
    cluster.wait_until_replicated(RAW_STREAM).await;
    println!(
        "\nR3: three clustered nats-servers (file store), streams of three replicas; the \
         gateway and the raw client on node {}, the gateway's stream led by node {}, the raw \
         stream by node {}\n",
        node + 1,
        leader + 1,
        raw_leader + 1,
    );

    report.meter(SharedCores {
        gateway: gateway.pid(),
        nats: cluster.pids(),
        client: std::process::id(),
    });
    let r3 = Topology::R3;
    if selection.wants_any(&["append_c1_r3", "raw_cas_c1_r3", "http_floor_c1_r3"]) {
        appends::one_at_a_time(&gateway, &jetstream, r3, scale, report).await;
    }
    if selection.wants("append_hot_c64_r3") {
        appends::append_hot_c64(&gateway, r3, scale, report).await;
    }
    if selection.wants("raw_batch_64_r3") {
        appends::raw_batch_64(&jetstream, r3, scale, report).await;
    }
    if selection.wants("append_c64_k1_r3") {
        sharded_appends(&cluster, &jetstream, &gateway, 1, scale, report).await;
    }
    if selection.wants("append_c64_k3_r3") {
        // One gateway at a time, so the CPU figures are the measured one's alone.
        gateway.kill();
        let env = [
            ("STARCITE_STREAM_REPLICAS", "3"),
            ("STARCITE_STREAM_SHARDS", "3"),
        ];
        let gateway = harness::start_gateway(&urls, &env).await;
        report.meter(SharedCores {
            gateway: gateway.pid(),
            nats: cluster.pids(),
            client: std::process::id(),
        });
        sharded_appends(&cluster, &jetstream, &gateway, 3, scale, report).await;
    }
}

/// `append_c64` against `gateway`, configured with `shards` event streams, as
/// `append_c64_k<shards>_r3`; beside its rate and each node's CPU, the node the gateway is
/// connected to, and for each shard's stream (`<stream>_…`) the node leading it and the events
/// it took in the scenario (warm-up included).
async fn sharded_appends(
    cluster: &TestCluster,
    jetstream: &jetstream::Context,
    gateway: &GatewayProcess,
    shards: u32,
    scale: Scale,
    report: &mut Report,
) {
    let scenario = Topology::R3.name(&format!("append_c64_k{shards}"));
    let before = shard_messages(jetstream).await;
    appends::append_c64(gateway, &scenario, scale, report).await;
    let after = shard_messages(jetstream).await;
    let node = connected_node(gateway.pid(), cluster);
    report.add(&scenario, "gateway_node", (node + 1) as f64, "node");
    let mut placement = Vec::new();
    for (stream, messages) in &after {
        let leader = cluster.stream_leader(stream).await + 1;
        placement.push(format!("{stream} on node {leader}"));
        report.add(
            &scenario,
            &format!("{stream}_leader_node"),
            leader as f64,
            "node",
        );
        let taken = messages.saturating_sub(before.get(stream).copied().unwrap_or(0));
        report.add(
            &scenario,
            &format!("{stream}_events"),
            taken as f64,
            "events",
        );
    }
    println!(
        "  {scenario}: gateway on node {}, leaders: {}",
        node + 1,
        placement.join(", ")
    );
}

/// The messages in each of the gateway's event streams (shard 0's and every `<stream>_<n>`),
/// by name.
async fn shard_messages(jetstream: &jetstream::Context) -> BTreeMap<String, u64> {
    let events = gateway::config::Config::default().nats.stream;
    let shard_prefix = format!("{events}_");
    let names: Vec<String> = jetstream
        .stream_names()
        .try_collect()
        .await
        .expect("the stream names");
    let mut messages = BTreeMap::new();
    for name in names {
        if name != events && !name.starts_with(&shard_prefix) {
            continue;
        }
        let mut stream = jetstream.get_stream(&name).await.expect("a shard's stream");
        let info = stream.info().await.expect("a shard's stream info");
        messages.insert(name, info.state.messages);
    }
    messages
}

/// Moves `stream`'s leadership to node `wanted` (a step-down elects one of the other nodes at
/// random); returns the node leading it in the end, which is `wanted` but for bad luck.
async fn lead_from(cluster: &TestCluster, stream: &str, wanted: usize) -> usize {
    let mut leader = cluster.stream_leader(stream).await;
    for _ in 0..12 {
        if leader == wanted {
            break;
        }
        leader = cluster.step_down(stream).await;
    }
    leader
}

/// The cluster node the process `pid` is connected to: the one whose client port is the
/// remote end of one of its established TCP sockets (from `/proc`).
fn connected_node(pid: u32, cluster: &TestCluster) -> usize {
    let sockets: HashSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the gateway's file descriptors")
        .filter_map(Result::ok)
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let target = target.to_str()?;
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect();
    let ports: Vec<u16> = cluster
        .urls()
        .iter()
        .map(|url| url.rsplit(':').next().and_then(|port| port.parse().ok()))
        .map(|port| port.expect("a node URL ends with its port"))
        .collect();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
    // `sl local rem st tx:rx tr:when retrnsmt uid timeout inode`; addresses are `HEX_IP:HEX_PORT`.
    let nodes: HashSet<usize> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (remote, state, inode) = (fields.get(2)?, fields.get(3)?, fields.get(9)?);
            let established = *state == "01";
            let port = u16::from_str_radix(remote.rsplit(':').next()?, 16).ok()?;
            let ours = sockets.contains(&inode.parse().ok()?);
            (established && ours)
                .then(|| ports.iter().position(|&node| node == port))
                .flatten()
        })
        .collect();
    assert_eq!(
        nodes.len(),
        1,
        "the gateway should hold connections to exactly one node, found {nodes:?}"
    );
    nodes.into_iter().next().unwrap_or_default()
}
