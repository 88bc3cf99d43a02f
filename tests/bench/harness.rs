//! What every scenario shares: the gateway as its own process, the run's scale, an HDR
//! histogram, the report, and the ~1 KiB event every append sends.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{Value, json};
use starcite_tests::{TestNats, path_segment};

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

#[derive(Debug, Serialize)]
struct Row {
    scenario: &'static str,
    metric: &'static str,
    value: f64,
    unit: &'static str,
}

/// Every figure of the run, printed as it comes and written as JSON at the end.
#[derive(Default)]
pub struct Report {
    rows: Vec<Row>,
}

impl Report {
    pub fn add(
        &mut self,
        scenario: &'static str,
        metric: &'static str,
        value: f64,
        unit: &'static str,
    ) {
        println!("  {scenario:<18} {metric:<28} {value:>14.1} {unit}");
        self.rows.push(Row {
            scenario,
            metric,
            value,
            unit,
        });
    }

    /// Latency quantiles of `latencies` under the names the report uses.
    pub fn latencies(
        &mut self,
        scenario: &'static str,
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

/// A gateway in its own process (so its memory is its own), on a random loopback port.
pub struct GatewayProcess {
    process: Child,
    pub base_url: String,
    pub client: reqwest::Client,
}

impl GatewayProcess {
    pub async fn start(nats: &TestNats) -> GatewayProcess {
        let binary = gateway_binary();
        let mut process = Command::new(&binary)
            .env("STARCITE_LISTEN", "127.0.0.1:0")
            .env("STARCITE_NATS_URL", &nats.url)
            .env("STARCITE_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot run {}: {err}", binary.display()));
        let stderr = BufReader::new(process.stderr.take().expect("piped stderr"));
        let (found, address) = std::sync::mpsc::channel();
        // Keeps draining the log so the gateway never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let address = rest.split_whitespace().next().unwrap_or_default();
                    let _ = found.send(address.to_owned());
                }
            }
        });
        let address =
            tokio::task::spawn_blocking(move || address.recv_timeout(Duration::from_secs(30)))
                .await
                .expect("join the log reader")
                .expect("the gateway never said where it listens");
        let gateway = GatewayProcess {
            process,
            base_url: format!("http://{address}"),
            client: reqwest::Client::new(),
        };
        gateway.wait_until_ready().await;
        gateway
    }

    /// Kills the process, as a redeploy or crash would, and starts a fresh one.
    pub async fn restart(&mut self, nats: &TestNats) {
        self.kill();
        *self = GatewayProcess::start(nats).await;
    }

    fn kill(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }

    async fn wait_until_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = self
                .client
                .get(format!("{}/health/ready", self.base_url))
                .send()
                .await;
            if ready.is_ok_and(|response| response.status() == 200) {
                return;
            }
            assert!(Instant::now() < deadline, "the gateway never became ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The gateway's resident memory, from the kernel.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.process.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or(0)
    }

    pub async fn create_session(&self) -> String {
        let response = self
            .client
            .post(format!("{}/v1/sessions", self.base_url))
            .json(&json!({}))
            .send()
            .await
            .expect("create a session");
        assert_eq!(response.status(), 201, "create failed");
        let created: Value = response.json().await.expect("a JSON reply");
        created["id"].as_str().expect("an id").to_owned()
    }

    pub fn append_url(&self, id: &str) -> String {
        format!("{}/v1/sessions/{}/append", self.base_url, path_segment(id))
    }

    pub fn append_batch_url(&self, id: &str) -> String {
        format!(
            "{}/v1/sessions/{}/append_batch",
            self.base_url,
            path_segment(id)
        )
    }

    pub fn tail_url(&self, id: &str, cursor: u64, batch_size: usize) -> String {
        format!(
            "{}/v1/sessions/{}/tail?cursor={cursor}&batch_size={batch_size}",
            self.base_url.replacen("http", "ws", 1),
            path_segment(id)
        )
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Posts one append body and returns the seq it got, insisting on a 201.
pub async fn append(client: &reqwest::Client, url: &str, body: Bytes) -> u64 {
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("the append request");
    let status = response.status();
    let reply: Value = response.json().await.expect("a JSON reply");
    assert_eq!(status, 201, "append failed: {reply}");
    reply["seq"].as_u64().expect("a seq")
}
