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
    /// Whether the server traces its garbage collector into `gctrace.log` in its store.
    gc_trace: bool,
    /// When the running process was started: the trace times its cycles from then.
    started: Instant,
}

/// One cycle of the server's Go garbage collector, as its trace (`GODEBUG=gctrace=1`) tells it.
#[derive(Debug, Clone, PartialEq)]
pub struct GcCycle {
    pub began: Instant,
    /// From the cycle's start to the end of its marking (wall time).
    pub lasted: Duration,
    /// CPU time the cycle took: its pauses, and its marking by the allocating goroutines, the
    /// collector's own workers and otherwise idle processors.
    pub cpu: Duration,
}

impl TestNats {
    pub fn start() -> TestNats {
        TestNats::launch(None, false)
    }

    /// A server that traces its garbage collector (`gc_cycles`), for a benchmark that must
    /// tell how much of the server's CPU went to collecting.
    pub fn start_with_gc_trace() -> TestNats {
        TestNats::launch(None, true)
    }

    /// A server that also reads `config` (nats-server's configuration syntax); the flags that
    /// make it private (loopback, random port, temporary store) still apply.
    pub fn start_with_config(config: &str) -> TestNats {
        TestNats::launch(Some(config), false)
    }

    fn launch(config: Option<&str>, gc_trace: bool) -> TestNats {
        let store = tempfile::tempdir().unwrap();
        let config = config.map(|text| {
            let path = store.path().join("nats.conf");
            std::fs::write(&path, text).unwrap();
            path
        });
        let started = Instant::now();
        let (process, ports) = spawn(store.path(), None, config.as_deref(), gc_trace);
        TestNats {
            url: format!("nats://127.0.0.1:{}", ports.client),
            port: ports.client,
            monitoring_url: ports.monitoring,
            process,
            store,
            config,
            gc_trace,
            started,
        }
    }

    /// The garbage collector's cycles so far in the running process (none unless started
    /// with `start_with_gc_trace`).
    pub fn gc_cycles(&self) -> Vec<GcCycle> {
        let trace = std::fs::read_to_string(gc_trace_path(self.store.path())).unwrap_or_default();
        trace
            .lines()
            .filter_map(|line| parse_gc_line(line, self.started))
            .collect()
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
        self.started = Instant::now();
        let (process, ports) = respawn(
            self.store.path(),
            self.port,
            self.config.as_deref(),
            self.gc_trace,
        );
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

fn spawn(dir: &Path, port: Option<u16>, config: Option<&Path>, gc_trace: bool) -> (Child, Ports) {
    try_spawn(dir, port, config, gc_trace).unwrap_or_else(|why| panic!("{why}"))
}

/// Starts a server again on the ports it had. While it was down, one of them (picked from the
/// kernel's ephemeral range) may have become the source port of another process's outgoing
/// connection; such connections end, so it is tried again for a while.
pub(crate) fn respawn(
    dir: &Path,
    port: u16,
    config: Option<&Path>,
    gc_trace: bool,
) -> (Child, Ports) {
    let mut attempts = 0;
    loop {
        match try_spawn(dir, Some(port), config, gc_trace) {
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
    gc_trace: bool,
) -> Result<(Child, Ports), String> {
    let port_arg = port.map_or("-1".to_owned(), |port| port.to_string());
    let ports_dir = dir.join(format!("ports-{port_arg}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&ports_dir);
    std::fs::create_dir_all(&ports_dir).unwrap();
    let mut command = Command::new(server_binary());
    if let Some(config) = config {
        command.arg("-c").arg(config);
    }
    // The runtime writes its trace to standard error, a line per cycle.
    let stderr = if gc_trace {
        command.env("GODEBUG", "gctrace=1");
        std::fs::File::create(gc_trace_path(dir)).map_or_else(|_| Stdio::null(), Stdio::from)
    } else {
        Stdio::null()
    };
    let mut process = command
        // Monitoring on a port of its own choosing, reported in the ports file.
        .args(["-a", "127.0.0.1", "-p", &port_arg, "-m", "-1", "-js", "-sd"])
        .arg(dir.join("store"))
        .arg("--ports_file_dir")
        .arg(&ports_dir)
        .stdout(Stdio::null())
        .stderr(stderr)
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

fn gc_trace_path(dir: &Path) -> PathBuf {
    dir.join("gctrace.log")
}

/// A cycle from a line of the Go runtime's trace, e.g.
/// `gc 48 @160.541s 13%: 4.3+10844+0.061 ms clock, 8.7+1923/5436/3263+0.12 ms cpu, ...`: when it
/// began after the process started, its phases' wall times and CPU times in milliseconds. Other
/// lines (the server's own log) are not cycles.
fn parse_gc_line(line: &str, process_started: Instant) -> Option<GcCycle> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let ["gc", _, at, _, clock, "ms", "clock,", cpu, "ms", "cpu,", ..] = fields.as_slice() else {
        return None;
    };
    // To the microsecond: the trace prints no finer.
    let microseconds = |value: f64| Duration::from_micros((value * 1e6).round() as u64);
    let seconds: f64 = at.strip_prefix('@')?.strip_suffix('s')?.parse().ok()?;
    let milliseconds = |phases: &str| -> Option<Duration> {
        let mut sum = 0.0;
        for phase in phases.split(['+', '/']) {
            sum += phase.parse::<f64>().ok()?;
        }
        Some(microseconds(sum / 1000.0))
    };
    Some(GcCycle {
        began: process_started + microseconds(seconds),
        lasted: milliseconds(clock)?,
        cpu: milliseconds(cpu)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_line_is_a_cycle_and_other_lines_are_not() {
        let started = Instant::now();
        let line = "gc 48 @160.541s 13%: 4.3+10844+0.061 ms clock, 8.7+1923/5436/3263+0.12 ms \
                    cpu, 4518->5333->2745 MB, 5306 MB goal, 0 MB stacks, 0 MB globals, 2 P";
        let cycle = parse_gc_line(line, started).unwrap();
        assert_eq!(cycle.began, started + Duration::from_millis(160_541));
        assert_eq!(cycle.lasted.as_micros(), 10_848_361);
        assert_eq!(cycle.cpu.as_micros(), 10_630_820);
        for other in [
            "[4242] 2026/12/07 20:00:00.000000 [INF] Starting nats-server",
            "gc 1 @0.010s 2%: forced",
            "",
        ] {
            assert_eq!(parse_gc_line(other, started), None, "{other}");
        }
    }
}
