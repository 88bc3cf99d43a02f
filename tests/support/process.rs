//! The gateway binary as a process of its own on a random loopback port, for what only a real
//! process shows: signals, exit codes, its own memory. Killed on drop.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::{TestNats, eventually};

pub struct GatewayProcess {
    process: Child,
    /// Collects the log until the process exits, so a failure can show it.
    log: Option<JoinHandle<String>>,
    /// `host:port` it listens on.
    pub address: String,
    pub base_url: String,
    binary: PathBuf,
    nats_urls: String,
    env: Vec<(String, String)>,
}

impl GatewayProcess {
    /// Runs `binary` against `nats` with `env` added, and waits until it is ready.
    pub async fn start(binary: &Path, nats: &TestNats, env: &[(&str, &str)]) -> GatewayProcess {
        GatewayProcess::start_on(binary, &nats.url, env).await
    }

    /// Runs `binary` against the NATS servers `nats_urls` (comma-separated) with `env` added,
    /// and waits until it is ready.
    pub async fn start_on(binary: &Path, nats_urls: &str, env: &[(&str, &str)]) -> GatewayProcess {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        let mut process = Command::new(binary)
            .env("STARCITE_LISTEN", "127.0.0.1:0")
            .env("STARCITE_NATS_URL", nats_urls)
            .env("STARCITE_LOG", "info")
            .envs(env.iter().map(|(name, value)| (name, value)))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot run {}: {err}", binary.display()));
        // The gateway logs the address it bound; port 0 means no race for a free port.
        let stderr = BufReader::new(process.stderr.take().unwrap());
        let (found, address) = std::sync::mpsc::channel();
        let log = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in stderr.lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    // Text or JSON lines: the address is what follows, up to its last digit.
                    let address = rest
                        .split(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))
                        .next()
                        .unwrap_or_default();
                    let _ = found.send(address.to_owned());
                }
                lines.push(line);
            }
            lines.join("\n")
        });
        let address =
            tokio::task::spawn_blocking(move || address.recv_timeout(Duration::from_secs(30)))
                .await
                .unwrap()
                .expect("the gateway never said where it listens");
        let gateway = GatewayProcess {
            process,
            log: Some(log),
            base_url: format!("http://{address}"),
            address,
            binary: binary.to_owned(),
            nats_urls: nats_urls.to_owned(),
            env,
        };
        gateway.wait_until_ready().await;
        gateway
    }

    /// Kills the process, as a redeploy or crash would, and starts a fresh one alike.
    pub async fn restart(&mut self) {
        self.kill();
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        *self = GatewayProcess::start_on(&self.binary, &self.nats_urls, &env).await;
    }

    async fn wait_until_ready(&self) {
        // The tests' reqwest shares the gateway library's rustls build, which needs a provider.
        gateway::auth::install_crypto_provider();
        let client = reqwest::Client::new();
        eventually(Duration::from_secs(60), || async {
            let ready = client
                .get(format!("{}/health/ready", self.base_url))
                .send()
                .await;
            match ready {
                Ok(response) if response.status() == 200 => Ok(()),
                _ => Err("the gateway never became ready".to_owned()),
            }
        })
        .await;
    }

    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.process.try_wait().unwrap()
    }

    /// Everything the process logged; waits for it to close its log, so call it after exit.
    pub fn log(&mut self) -> String {
        self.log
            .take()
            .map(|log| log.join().unwrap_or_default())
            .unwrap_or_default()
    }

    /// Resident memory, from the kernel.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or(0)
    }

    pub fn kill(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
