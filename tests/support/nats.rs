//! A private JetStream server on a random loopback port; killed and wiped on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::eventually;

pub struct TestNats {
    pub url: String,
    port: u16,
    /// The server's HTTP monitoring endpoint, `http://127.0.0.1:<port>`.
    monitoring_url: String,
    process: Child,
    store: TempDir,
    /// A configuration file, for servers that need more than the defaults.
    config: Option<PathBuf>,
}

impl TestNats {
    pub fn start() -> TestNats {
        TestNats::launch(None)
    }

    /// A server that also reads `config` (nats-server's configuration syntax); the flags that
    /// make it private (loopback, random port, temporary store) still apply.
    pub fn start_with_config(config: &str) -> TestNats {
        TestNats::launch(Some(config))
    }

    fn launch(config: Option<&str>) -> TestNats {
        let store = tempfile::tempdir().unwrap();
        let config = config.map(|text| {
            let path = store.path().join("nats.conf");
            std::fs::write(&path, text).unwrap();
            path
        });
        let (process, ports) = spawn(store.path(), None, config.as_deref());
        TestNats {
            url: format!("nats://127.0.0.1:{}", ports.client),
            port: ports.client,
            monitoring_url: ports.monitoring,
            process,
            store,
            config,
        }
    }

    /// A directory for the catalog views of this server's gateways, removed with it.
    pub fn catalog_dir(&self) -> PathBuf {
        self.store.path().join("catalog")
    }

    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// A JetStream client, to look at what the gateway stored.
    pub async fn jetstream(&self) -> async_nats::jetstream::Context {
        async_nats::jetstream::new(async_nats::connect(&self.url).await.unwrap())
    }

    /// The bucket the gateways keep write-state snapshots in, and the key of `session_id`'s
    /// snapshot on shard 0 (a later shard prefixes it with `<shard>.`).
    pub async fn snapshots(&self, session_id: &str) -> (async_nats::jetstream::kv::Store, String) {
        let bucket = self
            .jetstream()
            .await
            .get_key_value("starcite_sessions_snapshots")
            .await
            .unwrap();
        let id = gateway::sessions::model::SessionId::parse(session_id).unwrap();
        (bucket, gateway::nats::subjects::token(&id))
    }

    /// Kills the server, as a crash would; its store stays for `restart`.
    pub fn kill(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }

    /// Starts the server again on the same port with the same store.
    pub fn restart(&mut self) {
        self.kill();
        let (process, ports) = respawn(self.store.path(), self.port, self.config.as_deref());
        self.process = process;
        self.monitoring_url = ports.monitoring;
    }

    /// Waits until a client of this server subscribes to `subject` (exactly that subject):
    /// how a test knows a gateway listens before it makes something happen.
    pub async fn wait_for_subscription(&self, subject: &str) {
        let client = reqwest::Client::new();
        let url = format!("{}/connz?subs=1", self.monitoring_url);
        eventually(Duration::from_secs(15), || async {
            let connections: serde_json::Value =
                client.get(&url).send().await.unwrap().json().await.unwrap();
            let subscribed = connections["connections"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|connection| connection["subscriptions_list"].as_array())
                .flatten()
                .any(|listed| listed == subject);
            subscribed
                .then_some(())
                .ok_or_else(|| format!("nobody subscribes to {subject}"))
        })
        .await;
    }

    /// Freezes the server (SIGSTOP): connections stay open but nothing is answered.
    pub fn pause(&self) {
        freeze(self.process.id());
    }

    pub fn resume(&self) {
        signal(self.process.id(), "-CONT");
    }
}

impl Drop for TestNats {
    // Fields drop after this body, so the store goes last.
    fn drop(&mut self) {
        self.resume();
        self.kill();
    }
}

/// Stops process `pid` (SIGSTOP) and returns once every thread of it has stopped. The signal
/// reaches one thread, which then stops the others: on a busy machine they ran on for
/// milliseconds, long enough to answer a request sent after the pause.
pub(crate) fn freeze(pid: u32) {
    signal(pid, "-STOP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !every_thread_stopped(pid) {
        assert!(Instant::now() < deadline, "process {pid} did not stop");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn every_thread_stopped(pid: u32) -> bool {
    let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    threads.filter_map(Result::ok).all(|thread| {
        std::fs::read_to_string(thread.path().join("stat")).is_ok_and(|stat| {
            // The state follows the command's name, which is in parentheses.
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
        })
    })
}

pub(crate) fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(signal)
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} {pid} failed");
}

/// The server named by `NATS_SERVER_BIN`, else the project's tools folder, else `PATH`.
fn server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NATS_SERVER_BIN") {
        return path.into();
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/venv/bin/nats-server");
    if local.exists() {
        local
    } else {
        PathBuf::from("nats-server")
    }
}

/// Where a server listens: for clients, and for HTTP monitoring.
pub(crate) struct Ports {
    pub client: u16,
    pub monitoring: String,
}

pub(crate) fn spawn(dir: &Path, port: Option<u16>, config: Option<&Path>) -> (Child, Ports) {
    try_spawn(dir, port, config).unwrap_or_else(|why| panic!("{why}"))
}

/// Starts a server again on the ports it had. While it was down, one of them (picked from the
/// kernel's ephemeral range) may have become the source port of another process's outgoing
/// connection; such connections end, so it is tried again for a while.
pub(crate) fn respawn(dir: &Path, port: u16, config: Option<&Path>) -> (Child, Ports) {
    let mut attempts = 0;
    loop {
        match try_spawn(dir, Some(port), config) {
            Ok(started) => return started,
            Err(why) if attempts == 30 => panic!("{why}, 30 times"),
            Err(_) => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
        }
    }
}

/// Starts a server, or says why it did not start: it exited (a port it was given was taken
/// meanwhile), or it did not listen within 30 s.
pub(crate) fn try_spawn(
    dir: &Path,
    port: Option<u16>,
    config: Option<&Path>,
) -> Result<(Child, Ports), String> {
    let port_arg = port.map_or("-1".to_owned(), |port| port.to_string());
    let ports_dir = dir.join(format!("ports-{port_arg}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&ports_dir);
    std::fs::create_dir_all(&ports_dir).unwrap();
    let mut command = Command::new(server_binary());
    if let Some(config) = config {
        command.arg("-c").arg(config);
    }
    let mut process = command
        // Monitoring on a port of its own choosing, reported in the ports file.
        .args(["-a", "127.0.0.1", "-p", &port_arg, "-m", "-1", "-js", "-sd"])
        .arg(dir.join("store"))
        .arg("--ports_file_dir")
        .arg(&ports_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server not found: run `make tools` or set NATS_SERVER_BIN");
    // The server writes nats-server_<pid>.ports once it listens: no log scraping, no race.
    let ports_file = ports_dir.join(format!("nats-server_{}.ports", process.id()));
    match wait_for_ports(&ports_file, &mut process) {
        Some(ports) => Ok((process, ports)),
        None => {
            let _ = process.kill();
            let status = process.wait();
            Err(format!(
                "nats-server did not start within 30 s ({status:?})"
            ))
        }
    }
}

/// The ports the server reports, or `None` once it has exited or 30 s have passed.
fn wait_for_ports(ports_file: &Path, process: &mut Child) -> Option<Ports> {
    // Generous: a clustered node restarted on a busy two-core machine takes seconds to listen,
    // and starting is never what a test measures.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if !matches!(process.try_wait(), Ok(None)) {
            return None;
        }
        if let Ok(text) = std::fs::read_to_string(ports_file)
            && let Ok(ports) = serde_json::from_str::<serde_json::Value>(&text)
            && let Some(url) = ports["nats"][0].as_str()
            && let Some(monitoring) = ports["monitoring"][0].as_str()
        {
            return Some(Ports {
                client: url.rsplit(':').next()?.parse().ok()?,
                monitoring: monitoring.to_owned(),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}
