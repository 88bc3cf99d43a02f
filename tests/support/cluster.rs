//! Three (or more) clustered JetStream servers on loopback, each with a temporary store, that a
//! test can crash, restart, freeze and ask to hand over a stream's leadership.
//!
//! Nodes do not advertise each other to clients, so a gateway given one node's URL stays on
//! that node (pinned) and one given every URL fails over among them.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::TcpProxy;
use crate::nats::{freeze, respawn, signal, try_spawn};

pub struct TestCluster {
    nodes: Vec<Node>,
    /// The links each node is reached through.
    _links: Vec<TcpProxy>,
}

struct Node {
    name: String,
    port: u16,
    process: Option<Child>,
    store: TempDir,
    config: PathBuf,
}

impl TestCluster {
    /// A three-node cluster whose JetStream is ready to create replicated streams, its nodes
    /// routed to each other directly.
    pub async fn start() -> TestCluster {
        TestCluster::launch(3, None).await
    }

    /// `size` nodes whose links to each other delay every byte by `latency` each way, as
    /// between distant sites: a client of one node hears that node itself long before any
    /// other.
    pub async fn start_with(size: usize, latency: Duration) -> TestCluster {
        TestCluster::launch(size, Some(latency)).await
    }

    /// Nodes linked through a proxy delaying every byte by `latency`, or directly for `None`.
    /// The ports are picked free before the nodes start, one after another; a port another
    /// test took meanwhile stops a node from starting, and the cluster is launched again on
    /// other ports.
    async fn launch(size: usize, latency: Option<Duration>) -> TestCluster {
        let mut failures = Vec::new();
        for _ in 0..3 {
            match TestCluster::try_launch(size, latency).await {
                Ok(cluster) => return cluster,
                Err(why) => failures.push(why),
            }
        }
        panic!("the cluster did not start: {failures:?}");
    }

    async fn try_launch(size: usize, latency: Option<Duration>) -> Result<TestCluster, String> {
        let client_ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let route_ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        // Each node is reached, by the routes it is given and by those it advertises to the
        // others, through a link of its own (if any).
        let mut links = Vec::new();
        if let Some(latency) = latency {
            for port in &route_ports {
                let target = format!("127.0.0.1:{port}");
                links.push(TcpProxy::start_with_latency(&target, latency).await);
            }
        }
        let link_addresses: Vec<String> = match latency {
            Some(_) => links
                .iter()
                .map(|link| link.url.trim_start_matches("nats://").to_owned())
                .collect(),
            None => route_ports
                .iter()
                .map(|port| format!("127.0.0.1:{port}"))
                .collect(),
        };
        let routes = link_addresses
            .iter()
            .map(|address| format!("nats-route://{address}"))
            .collect::<Vec<_>>()
            .join(", ");
        // Its drop stops the nodes started so far if one of the others does not start.
        let mut cluster = TestCluster {
            nodes: Vec::with_capacity(size),
            _links: links,
        };
        for index in 0..size {
            let store = tempfile::tempdir().unwrap();
            let name = format!("n{}", index + 1);
            let config = store.path().join("node.conf");
            let text = format!(
                "server_name: {name}\n\
                     cluster {{\n  name: starcite-test\n  listen: 127.0.0.1:{}\n  \
                     advertise: \"{}\"\n  no_advertise: true\n  routes: [{routes}]\n}}\n",
                route_ports[index], link_addresses[index]
            );
            std::fs::write(&config, text).unwrap();
            let port = Some(client_ports[index]);
            let process = try_spawn(store.path(), port, Some(&config), false)?.0;
            cluster.nodes.push(Node {
                name,
                port: client_ports[index],
                process: Some(process),
                store,
                config,
            });
        }
        cluster.wait_for_jetstream().await;
        Ok(cluster)
    }

    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    /// One node's client URL.
    pub fn url(&self, node: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[node].port)
    }

    /// Every node's client URL.
    pub fn urls(&self) -> Vec<String> {
        (0..self.nodes.len()).map(|node| self.url(node)).collect()
    }

    /// The running nodes' process ids (the bench counts their CPU time).
    pub fn pids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter_map(|node| node.process.as_ref().map(Child::id))
            .collect()
    }

    /// The index of the node named `name` (`n1`, `n2`, …).
    pub fn node_named(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|node| node.name == name)
            .unwrap_or_else(|| panic!("no node named {name}"))
    }

    /// Crashes a node (SIGKILL); its store stays for `restart`.
    pub fn kill(&mut self, node: usize) {
        if let Some(mut process) = self.nodes[node].process.take() {
            signal(process.id(), "-CONT");
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    /// Starts a node again on its port with its store.
    pub fn restart(&mut self, node: usize) {
        self.kill(node);
        let node = &mut self.nodes[node];
        let (process, _) = respawn(node.store.path(), node.port, Some(&node.config), false);
        node.process = Some(process);
    }

    /// Freezes a node (SIGSTOP): its connections stay open, nothing is answered.
    pub fn pause(&self, node: usize) {
        if let Some(process) = &self.nodes[node].process {
            freeze(process.id());
        }
    }

    pub fn resume(&self, node: usize) {
        if let Some(process) = &self.nodes[node].process {
            signal(process.id(), "-CONT");
        }
    }

    /// A client on the first running node that answers, failing over like a gateway would.
    pub async fn client(&self) -> async_nats::Client {
        let addresses: Vec<async_nats::ServerAddr> =
            self.urls().iter().map(|url| url.parse().unwrap()).collect();
        async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(2))
            .connect(addresses)
            .await
            .unwrap()
    }

    /// The index of `stream`'s leader, waiting up to 20 s for one to be elected.
    pub async fn stream_leader(&self, stream: &str) -> usize {
        let client = self.client().await;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(leader) = stream_info(&client, stream).await.and_then(|info| {
                let name = info["cluster"]["leader"].as_str()?;
                Some(self.node_named(name))
            }) {
                return leader;
            }
            assert!(
                Instant::now() < deadline,
                "stream {stream} has no leader after 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The nodes holding a replica of `stream`, its leader first.
    pub async fn stream_nodes(&self, stream: &str) -> Vec<usize> {
        let leader = self.stream_leader(stream).await;
        let info = stream_info(&self.client().await, stream)
            .await
            .unwrap_or_else(|| panic!("stream {stream} did not answer"));
        let mut nodes = vec![leader];
        for replica in info["cluster"]["replicas"].as_array().into_iter().flatten() {
            nodes.push(self.node_named(replica["name"].as_str().unwrap()));
        }
        nodes
    }

    /// A node that holds no replica of any of `streams`.
    pub async fn node_without(&self, streams: &[&str]) -> usize {
        let mut holding = Vec::new();
        for stream in streams {
            holding.extend(self.stream_nodes(stream).await);
        }
        (0..self.nodes.len())
            .find(|node| !holding.contains(node))
            .unwrap_or_else(|| panic!("every node holds one of {streams:?}"))
    }

    /// The nodes replicating `stream` other than its leader.
    pub async fn stream_followers(&self, stream: &str) -> Vec<usize> {
        let leader = self.stream_leader(stream).await;
        (0..self.nodes.len())
            .filter(|&node| node != leader && self.nodes[node].process.is_some())
            .collect()
    }

    /// Asks `stream`'s leader to step down and waits until another node leads; returns it.
    pub async fn step_down(&self, stream: &str) -> usize {
        let before = self.stream_leader(stream).await;
        let client = self.client().await;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let _ = client
                .request(
                    format!("$JS.API.STREAM.LEADER.STEPDOWN.{stream}"),
                    "".into(),
                )
                .await;
            let after = self.stream_leader(stream).await;
            if after != before {
                return after;
            }
            assert!(
                Instant::now() < deadline,
                "stream {stream}'s leader would not step down"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every running replica of `stream` has applied everything its leader has.
    pub async fn wait_until_replicated(&self, stream: &str) {
        let client = self.client().await;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(info) = stream_info(&client, stream).await
                && info["cluster"]["leader"].is_string()
                && info["cluster"]["replicas"]
                    .as_array()
                    .is_some_and(|replicas| {
                        replicas.iter().all(|replica| {
                            replica["current"] == true && replica["lag"].as_u64().unwrap_or(0) == 0
                        })
                    })
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "stream {stream} not replicated after 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the cluster has a JetStream meta leader, so streams can be created.
    async fn wait_for_jetstream(&self) {
        jetstream_answers(&self.url(0)).await;
    }
}

/// Waits until JetStream answers a client of the server at `url`.
async fn jetstream_answers(url: &str) {
    let client = async_nats::connect(url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Ok(reply)) = tokio::time::timeout(
            Duration::from_secs(2),
            client.request("$JS.API.INFO", "".into()),
        )
        .await
            && serde_json::from_slice::<Value>(&reply.payload)
                .is_ok_and(|info| info.get("error").is_none())
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "JetStream did not answer at {url} within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for node in 0..self.nodes.len() {
            self.kill(node);
        }
    }
}

/// `$JS.API.STREAM.INFO`, or `None` while the stream cannot answer (no leader, no quorum).
async fn stream_info(client: &async_nats::Client, stream: &str) -> Option<Value> {
    let reply = tokio::time::timeout(
        Duration::from_secs(2),
        client.request(format!("$JS.API.STREAM.INFO.{stream}"), "".into()),
    )
    .await
    .ok()?
    .ok()?;
    let info: Value = serde_json::from_slice(&reply.payload).ok()?;
    info.get("error").is_none().then_some(info)
}

/// A loopback port nothing listens on now; nats-server binds it a moment later.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
