//! What every scenario shares: the gateway as its own process, the run's scale, an HDR
//! histogram, the report, and the ~1 KiB event every append sends.

use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::{Value, json};
use starcite_tests::{GatewayProcess, path_segment};
use tokio::net::TcpStream;

/// Full figures, or a sub-minute smoke run (`BENCH_QUICK=1`) of the same code.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    pub quick: bool,
}

impl Scale {
    pub fn from_env() -> Scale {
        let quick =
            std::env::var("BENCH_QUICK").is_ok_and(|value| !value.is_empty() && value != "0");
        Scale { quick }
    }

    pub fn pick(self, full: u64, quick: u64) -> u64 {
        if self.quick { quick } else { full }
    }

    pub fn duration(self, full_secs: u64) -> Duration {
        if self.quick {
            Duration::from_millis(700)
        } else {
            Duration::from_secs(full_secs)
        }
    }
}

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

pub fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// A realistic event: a chat message of about 1 KiB.
pub fn event(producer_id: &str, producer_seq: u64) -> Value {
    json!({
        "type": "message",
        "payload": {"role": "assistant", "text": "x".repeat(900)},
        "actor": "agent:bench",
        "producer_id": producer_id,
        "producer_seq": producer_seq,
    })
}

pub fn event_body(producer_id: &str, producer_seq: u64) -> Bytes {
    Bytes::from(serde_json::to_vec(&event(producer_id, producer_seq)).unwrap_or_default())
}

/// Which NATS a scenario runs against: the single server, or the three-node cluster with
/// replicated streams, whose figures carry `_r3` after the scenario's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    Single,
    R3,
}

impl Topology {
    /// The name `scenario`'s figures go under on this topology.
    pub fn name(self, scenario: &str) -> String {
        match self {
            Topology::Single => scenario.to_owned(),
            Topology::R3 => format!("{scenario}_r3"),
        }
    }

    /// The name of `scenario`'s CPU rows on this topology.
    pub fn cpu_name(self, scenario: &str) -> String {
        format!("{}_cpu", self.name(scenario))
    }
}

#[derive(Debug, Serialize)]
struct Row {
    scenario: String,
    metric: String,
    value: f64,
    unit: &'static str,
}

/// Every figure of the run, printed as it comes and written as JSON at the end.
pub struct Report {
    rows: Vec<Row>,
    /// What its CPU meters count; none before the first part of the run starts its servers.
    cores: Option<SharedCores>,
}

/// The processes that share the machine's cores in a part of the run, whose CPU time the
/// report counts: the gateway it started with (the cold-append scenario, which restarts it, is
/// not metered), every nats-server (one, or a cluster's three, counted together and each
/// alone) and this one.
#[derive(Debug, Clone)]
pub struct SharedCores {
    pub gateway: u32,
    pub nats: Vec<u32>,
    pub client: u32,
}

/// The CPU time of the processes over one or more measured stretches.
pub struct CpuMeter {
    cores: Option<SharedCores>,
    spent: CpuTimes,
    elapsed: Duration,
    /// When the current stretch began, and each process's CPU time then.
    stretch: Option<(Instant, CpuTimes)>,
    /// A process's `/proc` entry could not be read.
    unreadable: bool,
}

impl CpuMeter {
    /// Begins a stretch (a meter starts in one).
    pub fn start(&mut self) {
        match self.cores.as_ref().and_then(SharedCores::cpu_ns) {
            Some(now) => self.stretch = Some((Instant::now(), now)),
            None => self.unreadable = true,
        }
    }

    /// Ends the current stretch and adds it up.
    pub fn stop(&mut self) {
        let Some((started, before)) = self.stretch.take() else {
            return;
        };
        let Some(now) = self.cores.as_ref().and_then(SharedCores::cpu_ns) else {
            self.unreadable = true;
            return;
        };
        self.elapsed += started.elapsed();
        self.spent.gateway += now.gateway.saturating_sub(before.gateway);
        self.spent.client += now.client.saturating_sub(before.client);
        self.spent.nats.resize(now.nats.len(), 0);
        for (spent, (now, before)) in self
            .spent
            .nats
            .iter_mut()
            .zip(now.nats.iter().zip(before.nats))
        {
            *spent += now.saturating_sub(before);
        }
    }
}

/// Nanoseconds of CPU time of each metered process.
#[derive(Debug, Clone, Default)]
struct CpuTimes {
    gateway: u64,
    /// Each nats-server, in the order `SharedCores::nats` names them.
    nats: Vec<u64>,
    client: u64,
}

impl SharedCores {
    fn cpu_ns(&self) -> Option<CpuTimes> {
        let mut nats = Vec::with_capacity(self.nats.len());
        for &server in &self.nats {
            nats.push(process_cpu_ns(server)?);
        }
        Some(CpuTimes {
            gateway: process_cpu_ns(self.gateway)?,
            nats,
            client: process_cpu_ns(self.client)?,
        })
    }
}

/// Nanoseconds the process's live threads have spent on a CPU (the first field of each
/// thread's `schedstat`; finer than the 10 ms ticks of `/proc/<pid>/stat`, but a thread that
/// exits takes its time with it, which the three processes' long-lived threads do not).
fn process_cpu_ns(pid: u32) -> Option<u64> {
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let spent = threads
        .filter_map(Result::ok)
        .filter_map(|thread| std::fs::read_to_string(thread.path().join("schedstat")).ok())
        .filter_map(|stats| stats.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Some(spent)
}

impl Report {
    pub fn new() -> Report {
        Report {
            rows: Vec::new(),
            cores: None,
        }
    }

    /// From now on, CPU meters count these processes (each part of the run has its own).
    pub fn meter(&mut self, cores: SharedCores) {
        self.cores = Some(cores);
    }

    /// Starts counting the CPU time of the gateway, nats-server and the load generator.
    pub fn cpu_meter(&self) -> CpuMeter {
        let mut meter = CpuMeter {
            cores: self.cores.clone(),
            spent: CpuTimes::default(),
            elapsed: Duration::ZERO,
            stretch: None,
            unreadable: false,
        };
        meter.start();
        meter
    }

    /// Diagnostic rows under `scenario`: each process's CPU time per unit of work (`done` of
    /// them in the meter's stretches), and how many of the machine's cores were busy on average.
    /// On a cluster, each node's share too (`nats_node<i>_cpu_us`, `i` as in the node's name
    /// `n<i>`): the total hides which node leads.
    pub fn cpu(&mut self, scenario: &str, mut meter: CpuMeter, done: u64, unit: &'static str) {
        meter.stop();
        if meter.unreadable {
            println!("  {scenario:<22} (no CPU figures: a process's /proc entry was unreadable)");
            return;
        }
        let per_unit = |ns: u64| ns as f64 / 1000.0 / done.max(1) as f64;
        let spent = &meter.spent;
        let nats: u64 = spent.nats.iter().sum();
        self.add(scenario, "gateway_cpu_us", per_unit(spent.gateway), unit);
        self.add(scenario, "nats_cpu_us", per_unit(nats), unit);
        if spent.nats.len() > 1 {
            for (node, &ns) in spent.nats.iter().enumerate() {
                let metric = format!("nats_node{}_cpu_us", node + 1);
                self.add(scenario, &metric, per_unit(ns), unit);
            }
        }
        self.add(scenario, "client_cpu_us", per_unit(spent.client), unit);
        let all = spent.gateway + nats + spent.client;
        let busy = all as f64 / 1e9 / meter.elapsed.as_secs_f64();
        self.add(scenario, "cores_busy", busy, "cores");
    }

    pub fn add(&mut self, scenario: &str, metric: &str, value: f64, unit: &'static str) {
        println!("  {scenario:<22} {metric:<28} {value:>14.1} {unit}");
        self.rows.push(Row {
            scenario: scenario.to_owned(),
            metric: metric.to_owned(),
            value,
            unit,
        });
    }

    /// Latency quantiles of `latencies` under the names the report uses.
    pub fn latencies(
        &mut self,
        scenario: &str,
        latencies: &Histogram<u64>,
        quantiles: &[&'static str],
    ) {
        for &metric in quantiles {
            let quantile = match metric {
                "p50_us" => 0.5,
                "p99_us" => 0.99,
                "p999_us" => 0.999,
                other => panic!("no quantile named {other}"),
            };
            self.add(
                scenario,
                metric,
                latencies.value_at_quantile(quantile) as f64,
                "us",
            );
        }
    }

    pub fn value(&self, scenario: &str, metric: &str) -> Option<f64> {
        self.rows
            .iter()
            .find(|row| row.scenario == scenario && row.metric == metric)
            .map(|row| row.value)
    }

    pub fn write(&self, path: &std::path::Path) {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create the report's directory");
        }
        let json = serde_json::to_vec_pretty(&self.rows).expect("serialise the report");
        std::fs::write(path, json).expect("write the report");
        println!("\nreport written to {}", path.display());
    }
}

/// The `starcite` binary: `STARCITE_BIN`, or the one built next to this benchmark.
fn gateway_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("STARCITE_BIN") {
        return PathBuf::from(path);
    }
    let me = std::env::current_exe().expect("the benchmark's own path");
    me.with_file_name("starcite")
}

/// The gateway in its own process (so its memory is its own), on a random loopback port, on
/// the NATS servers `nats_urls` (comma-separated) with `env` added.
pub async fn start_gateway(nats_urls: &str, env: &[(&str, &str)]) -> GatewayProcess {
    GatewayProcess::start_on(&gateway_binary(), nats_urls, env).await
}

/// Where the scenarios send their requests: paths on the gateway's connection, URLs for tails.
pub trait Api {
    fn url(&self, path: &str) -> String;

    /// Parsed once, not per request.
    fn append_path(&self, id: &str) -> Uri {
        let path = format!("/v1/sessions/{}/append", path_segment(id));
        Uri::try_from(path).expect("a valid append path")
    }

    fn append_batch_path(&self, id: &str) -> Uri {
        let path = format!("/v1/sessions/{}/append_batch", path_segment(id));
        Uri::try_from(path).expect("a valid batch path")
    }

    fn tail_url(&self, id: &str, cursor: u64, batch_size: usize) -> String {
        let path = format!(
            "/v1/sessions/{}/tail?cursor={cursor}&batch_size={batch_size}",
            path_segment(id)
        );
        self.url(&path).replacen("http", "ws", 1)
    }
}

impl Api for GatewayProcess {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }
}

/// Creates a session with a generated id.
pub async fn create_session(gateway: &GatewayProcess) -> String {
    let mut connection = Connection::open(gateway).await;
    let (status, body) = connection
        .post_json(&Uri::from_static("/v1/sessions"), Bytes::from_static(b"{}"))
        .await;
    assert_eq!(status, 201, "create failed");
    let created: Value = serde_json::from_slice(&body).expect("a JSON reply");
    created["id"].as_str().expect("an id").to_owned()
}

/// The session's newest seq.
pub async fn last_seq(gateway: &GatewayProcess, id: &str) -> u64 {
    let path = format!("/v1/sessions/{}", path_segment(id));
    let mut connection = Connection::open(gateway).await;
    let (status, body) = connection
        .get(&Uri::try_from(path).expect("a valid path"))
        .await;
    assert_eq!(status, 200, "get the session");
    let session: Value = serde_json::from_slice(&body).expect("a JSON reply");
    session["last_seq"].as_u64().unwrap_or(0)
}

/// One keep-alive HTTP/1.1 connection to the gateway, for every request the bench sends.
///
/// hyper's connection, driven by the task that sends on it: a pooled client (reqwest) spent
/// ~90 µs of CPU per append on the cores the gateway shares, and handed every request to a
/// connection task and back.
pub struct Connection {
    requests: SendRequest<Full<Bytes>>,
    driver: Pin<Box<http1::Connection<TokioIo<TcpStream>, Full<Bytes>>>>,
    host: HeaderValue,
}

impl Connection {
    pub async fn open(gateway: &GatewayProcess) -> Connection {
        let address = gateway
            .base_url
            .strip_prefix("http://")
            .expect("a plain HTTP gateway");
        let stream = TcpStream::connect(address)
            .await
            .expect("connect to the gateway");
        stream.set_nodelay(true).expect("set TCP_NODELAY");
        let (requests, driver) = http1::handshake(TokioIo::new(stream))
            .await
            .expect("an HTTP/1.1 connection");
        Connection {
            requests,
            driver: Box::pin(driver),
            host: HeaderValue::from_str(address).expect("a valid host"),
        }
    }

    pub async fn get(&mut self, path: &Uri) -> (StatusCode, Bytes) {
        self.send(Method::GET, path, Bytes::new()).await
    }

    pub async fn post_json(&mut self, path: &Uri, body: Bytes) -> (StatusCode, Bytes) {
        self.send(Method::POST, path, body).await
    }

    pub async fn put_json(&mut self, path: &Uri, body: Bytes) -> (StatusCode, Bytes) {
        self.send(Method::PUT, path, body).await
    }

    /// One request and its whole response; the connection is driven meanwhile.
    async fn send(&mut self, method: Method, path: &Uri, body: Bytes) -> (StatusCode, Bytes) {
        let has_body = !body.is_empty();
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = method;
        *request.uri_mut() = path.clone();
        let headers = request.headers_mut();
        headers.insert(header::HOST, self.host.clone());
        if has_body {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        let requests = &mut self.requests;
        let exchange = async move {
            requests.ready().await.expect("the connection is usable");
            let response = requests.send_request(request).await.expect("a response");
            let status = response.status();
            let body = response.into_body().collect().await.expect("its body");
            (status, body.to_bytes())
        };
        tokio::select! {
            biased;
            answer = exchange => answer,
            ended = &mut self.driver => panic!("the gateway closed the connection: {ended:?}"),
        }
    }
}

/// Posts one append body and returns the seq it got, insisting on a 201.
pub async fn append(connection: &mut Connection, path: &Uri, body: Bytes) -> u64 {
    let (status, body) = connection.post_json(path, body).await;
    let reply: Value = serde_json::from_slice(&body).expect("a JSON reply");
    assert_eq!(status, 201, "append failed: {reply}");
    reply["seq"].as_u64().expect("a seq")
}
