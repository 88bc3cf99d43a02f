//! A client program (an SDK's recovery test, in its own language) run against the real gateway
//! binary behind a TCP proxy, with faults injected as the program reports its progress.
//!
//! The program is given the gateway's URL in `STARCITE_URL` and writes lines to stdout:
//! `progress <n>` whenever its count of completed work reaches `n` (any count it likes), and at
//! the end one line `result <json>`. Every other line is kept for the failure message.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::{GatewayProcess, TcpProxy, TestNats, stored_events};

/// What a test does to the deployment while the program runs.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Drops every connection through the proxy, in both directions, and refuses new ones for a
    /// moment: Wi-Fi dropping.
    CutLinks,
    /// Every open connection goes silent in both directions without being closed, as after a
    /// NAT or Wi-Fi change: only keepalive pings tell. New connections work.
    FreezeLinks,
    /// SIGKILLs the gateway and starts a new one behind the same address: a crash or redeploy.
    RestartGateway,
}

/// NATS, one gateway process and a proxy in front of it: clients only ever see the proxy's
/// address, which stays the same across gateway restarts.
pub struct FaultyDeployment {
    pub nats: TestNats,
    pub gateway: GatewayProcess,
    pub proxy: TcpProxy,
}

impl FaultyDeployment {
    /// Starts the gateway `binary` (the e2e tests pass `CARGO_BIN_EXE_starcite-e2e`) with `env`.
    pub async fn start(binary: &Path, env: &[(&str, &str)]) -> FaultyDeployment {
        let nats = TestNats::start();
        let gateway = GatewayProcess::start(binary, &nats, env).await;
        let proxy = TcpProxy::start(&gateway.address).await;
        FaultyDeployment {
            nats,
            gateway,
            proxy,
        }
    }

    /// The gateway's URL as clients see it (`http://` through the proxy).
    pub fn url(&self) -> String {
        self.proxy.url.replacen("nats://", "http://", 1)
    }

    pub async fn inject(&mut self, fault: Fault) {
        match fault {
            Fault::CutLinks => {
                self.proxy.cut();
                tokio::time::sleep(Duration::from_millis(200)).await;
                self.proxy.heal();
            }
            Fault::FreezeLinks => self.proxy.freeze(),
            Fault::RestartGateway => {
                // Refused while no gateway stands behind the address, as during a redeploy.
                self.proxy.cut();
                self.gateway.restart().await;
                self.proxy.retarget(&self.gateway.address);
                self.proxy.heal();
            }
        }
    }

    /// Every event of `session`, in seq order, read from the gateway itself (not through the
    /// proxy).
    pub async fn stored_events(&self, session: &str) -> Vec<Value> {
        stored_events(&self.gateway.base_url, session).await
    }

    /// Runs `program` against this deployment, injecting each `(n, fault)` once the program
    /// reports progress of at least `n`, in the order given, and returns its `result` JSON.
    /// Panics with everything the program wrote if it fails or reports no result.
    pub async fn run(&mut self, mut program: Command, faults: &[(u64, Fault)]) -> Value {
        program
            .env("STARCITE_URL", self.url())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = program
            .spawn()
            .unwrap_or_else(|err| panic!("cannot run the client program: {err}"));
        let stderr = child.stderr.take().unwrap();
        let collecting_stderr = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            let mut collected = Vec::new();
            while let Ok(Some(line)) = lines.next_line().await {
                collected.push(line);
            }
            collected.join("\n")
        });
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut pending = faults.iter().peekable();
        let mut output = Vec::new();
        let mut result = None;
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(count) = line.strip_prefix("progress ") {
                let count: u64 = count.trim().parse().unwrap_or(0);
                while let Some(&&(at, fault)) = pending.peek() {
                    if count < at {
                        break;
                    }
                    pending.next();
                    self.inject(fault).await;
                }
                continue;
            }
            if let Some(json) = line.strip_prefix("result ") {
                result = serde_json::from_str::<Value>(json).ok();
            }
            output.push(line);
        }
        let status = child.wait().await.unwrap();
        let stderr = collecting_stderr.await.unwrap_or_default();
        let output = output.join("\n");
        assert!(
            status.success(),
            "the client program failed ({status}):\n{output}\n{stderr}"
        );
        assert!(
            pending.peek().is_none(),
            "the program ended before every fault was injected:\n{output}\n{stderr}"
        );
        result.unwrap_or_else(|| panic!("the client program gave no result:\n{output}\n{stderr}"))
    }
}
