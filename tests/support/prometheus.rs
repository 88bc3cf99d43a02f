//! A real Prometheus server (Debian's `prometheus` on `PATH`) on a free loopback port, with a
//! generated configuration, a temporary store, and scrapes and rule evaluations every second;
//! killed on drop.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Url;
use serde_json::Value;
use tempfile::TempDir;

pub struct TestPrometheus {
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    client: reqwest::Client,
    process: Child,
    dir: TempDir,
}

impl TestPrometheus {
    /// Scrapes `targets` (`host:port`, `/metrics`) as the job `starcite` and evaluates
    /// `rule_files`; the job `prometheus` scrapes the server itself. Returns once it is ready.
    pub async fn start(targets: &[&str], rule_files: &[&Path]) -> TestPrometheus {
        // The tests' reqwest shares the gateway library's rustls build, which needs a provider.
        gateway::auth::install_crypto_provider();
        let mut dir = tempfile::tempdir().unwrap();
        // Prometheus cannot report a port it chose: take a free one, and try again should
        // another process take it first.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port();
            let config = dir.path().join("prometheus.yml");
            std::fs::write(&config, configuration(port, targets, rule_files)).unwrap();
            let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
            let process = Command::new("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|err| {
                    panic!(
                        "cannot run prometheus ({err}); these tests need it on PATH \
                         (Debian: apt-get install --no-install-recommends prometheus, which \
                         .ci/run does)"
                    )
                });
            let mut prometheus = TestPrometheus {
                base_url: format!("http://127.0.0.1:{port}"),
                client: reqwest::Client::new(),
                process,
                dir,
            };
            match prometheus.wait_until_ready().await {
                Ok(()) => return prometheus,
                Err(log) if attempt < 5 && log.contains("address already in use") => {
                    dir = prometheus.into_dir();
                }
                Err(log) => panic!("prometheus never became ready:\n{log}"),
            }
        }
    }

    async fn wait_until_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = self
                .client
                .get(format!("{}/-/ready", self.base_url))
                .send()
                .await
                && response.status() == 200
            {
                return Ok(());
            }
            if self.process.try_wait().unwrap().is_some() || Instant::now() > deadline {
                return Err(self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the server and hands its directory back, for another attempt.
    fn into_dir(mut self) -> TempDir {
        self.kill();
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/<path>` with `params`: the reply's `data`, or its error.
    pub async fn api(&self, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let url = Url::parse_with_params(&format!("{}/api/v1/{path}", self.base_url), params)
            .map_err(|err| err.to_string())?;
        let response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|err| err.to_string())?;
        let body: Value = response.json().await.map_err(|err| err.to_string())?;
        if body["status"] == "success" {
            Ok(body["data"].clone())
        } else {
            Err(format!("{}: {}", body["errorType"], body["error"]))
        }
    }

    /// An instant query: its result's samples (`metric`, `value`), or Prometheus' error.
    pub async fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let data = self.api("query", &[("query", promql)]).await?;
        match data["result"].as_array() {
            Some(samples) => Ok(samples.clone()),
            None => Err(format!("not a vector: {data}")),
        }
    }

    /// The value of the query's only sample; `None` while it has none.
    pub async fn value(&self, promql: &str) -> Option<f64> {
        let samples = self
            .query(promql)
            .await
            .unwrap_or_else(|err| panic!("{promql}: {err}"));
        assert!(
            samples.len() <= 1,
            "{promql}: more than one sample: {samples:?}"
        );
        samples.first().map(sample_value)
    }

    /// Polls `promql` until its only sample equals `expected`, for up to `timeout`.
    pub async fn wait_for_value(&self, promql: &str, expected: f64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.value(promql).await;
            if value == Some(expected) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{promql} is {value:?}, not {expected}, after {timeout:?}; targets: {}",
                self.api("targets", &[])
                    .await
                    .unwrap_or_else(|err| err.into())
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until every target of `job` has been scraped successfully.
    pub async fn wait_until_up(&self, job: &str) {
        let query = format!("min(up{{job=\"{job}\"}})");
        self.wait_for_value(&query, 1.0, Duration::from_secs(20))
            .await;
    }

    fn kill(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Drop for TestPrometheus {
    // Fields drop after this body, so the store goes last.
    fn drop(&mut self) {
        self.kill();
    }
}

/// A sample's value (`[timestamp, "value"]`) as a number.
pub fn sample_value(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no value in {sample}"))
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The configuration, in YAML's JSON-compatible flow style (every string a JSON string).
fn configuration(port: u16, targets: &[&str], rule_files: &[&Path]) -> String {
    let json = |value: Value| value.to_string();
    let rule_files: Vec<String> = rule_files
        .iter()
        .map(|path| path.display().to_string())
        .collect();
    format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         rule_files: {}\n\
         scrape_configs:\n\
         \x20 - job_name: prometheus\n    static_configs:\n      - targets: {}\n\
         \x20 - job_name: starcite\n    static_configs:\n      - targets: {}\n",
        json(rule_files.into()),
        json(vec![format!("127.0.0.1:{port}")].into()),
        json(targets.to_vec().into()),
    )
}
