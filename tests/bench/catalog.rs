//! Catalog figures at 1M and 10M sessions (`BENCH_CATALOG_SESSIONS=1000000,…` to choose): the
//! rate a gateway builds a fresh catalog view from the bucket, its memory growth, the view's
//! disk per session, how soon a restarted gateway with its view present is ready and lists,
//! and a filtered page's latency, read from the view and through the HTTP API. The build's CPU
//! time is told apart: the gateway's, nats-server's, and of that the server's garbage collector's,
//! whose cycles (10–15 s each at 10M sessions) make the build's rate vary.

use std::path::Path;
use std::time::{Duration, Instant};

use gateway::catalog::index::{ArchivedFilter, CatalogIndex, ListQuery};
use hdrhistogram::Histogram;
use reqwest::Method;
use starcite_tests::catalog::{BUCKET, fill_bucket};
use starcite_tests::{TestGateway, TestNats, eventually};

/// Resident memory of this process, in bytes.
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|pages| pages.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

const MIB: f64 = 1024.0 * 1024.0;

/// The highest resident memory of this process seen by a thread sampling it every 20 ms.
struct PeakResident {
    stop: std::sync::mpsc::Sender<()>,
    sampler: std::thread::JoinHandle<u64>,
}

impl PeakResident {
    fn sample() -> PeakResident {
        let (stop, stopped) = std::sync::mpsc::channel();
        let sampler = std::thread::spawn(move || {
            let mut peak = resident_bytes();
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(Duration::from_millis(20))
            {
                peak = peak.max(resident_bytes());
            }
            peak
        });
        PeakResident { stop, sampler }
    }

    fn stop(self) -> u64 {
        let _ = self.stop.send(());
        self.sampler.join().unwrap_or(0)
    }
}

/// The page the figures time: one tenant's active sessions from the middle of the id space.
fn filtered_page() -> ListQuery {
    ListQuery {
        limit: 50,
        after: Some("ses_8".into()),
        metadata: vec![("tenant".into(), "tenant-7".into())],
        archived: ArchivedFilter::Active,
        tenant: None,
        only: None,
        search: None,
    }
}

async fn metric(gateway: &TestGateway, name: &str) -> Option<f64> {
    let response = gateway.request(Method::GET, "/metrics", None).await;
    let text = response.text().await.ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))?
        .trim()
        .parse()
        .ok()
}

/// Waits until the gateway answers a list with 200, and returns how long that took.
async fn until_listed(gateway: &TestGateway, started: Instant) -> Duration {
    eventually(Duration::from_secs(1200), || async {
        let response = gateway
            .request(Method::GET, "/v1/sessions?limit=1", None)
            .await;
        match response.status().as_u16() {
            200 => Ok(started.elapsed()),
            status => Err(format!("the list is still {status}")),
        }
    })
    .await
}

/// Disk the view's files take (allocated blocks: the file is larger, partly unwritten).
fn view_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|entry| entry.metadata().ok())
                .map(|metadata| metadata.blocks() * 512)
                .sum()
        })
        .unwrap_or(0)
}

fn p99_ms(histogram: &Histogram<u64>) -> (f64, f64) {
    (
        histogram.value_at_quantile(0.5) as f64 / 1000.0,
        histogram.value_at_quantile(0.99) as f64 / 1000.0,
    )
}

/// CPU seconds process `pid` has spent, its exited threads' included (the bulk load's threads
/// end with it): `/proc/<pid>/stat` in the kernel's ticks of 1/100 s.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // User and system time are the 14th and 15th fields; the 2nd, the name, may hold spaces.
    let (_, after_name) = stat.rsplit_once(')')?;
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some((user + system) as f64 / 100.0)
}

/// CPU seconds `pid` has spent since it had spent `before`.
fn cpu_seconds_since(pid: u32, before: Option<f64>) -> f64 {
    cpu_seconds(pid)
        .zip(before)
        .map_or(0.0, |(now, before)| now - before)
}

async fn figures(count: usize) {
    let nats = TestNats::start_with_gc_trace();
    // A gateway creates the stream and the bucket; what it holds with no session at all is
    // its own, and what the figures below grow beyond it is the sessions'.
    let without_gateway = resident_bytes();
    let empty = TestGateway::start(&nats).await;
    until_listed(&empty, Instant::now()).await;
    let own = resident_bytes().saturating_sub(without_gateway);
    empty.stop().await;
    println!(
        "{:<44} {:>8} sessions: {:>6.1} MiB",
        "gateway memory growth (RSS), started",
        0,
        own as f64 / MIB
    );
    let started = Instant::now();
    fill_bucket(&nats, count).await;
    println!(
        "{:<44} {:>8} sessions in {:>6.1} s",
        "bucket filled (pipelined publishes)",
        count,
        started.elapsed().as_secs_f64()
    );
    let mut config = TestGateway::config(&nats);
    config.catalog.dir = nats.catalog_dir().join(format!("bench-{count}"));
    let dir = config.catalog.dir.clone();

    // A fresh view: ready at once, lists once the view is built.
    let before = resident_bytes();
    let peak = PeakResident::sample();
    let server_cpu = cpu_seconds(nats.pid());
    let own_cpu = cpu_seconds(std::process::id());
    let started = Instant::now();
    let gateway = TestGateway::start_with(config.clone()).await;
    let ready = started.elapsed();
    let built = until_listed(&gateway, started).await;
    let (server_cpu, own_cpu) = (
        cpu_seconds_since(nats.pid(), server_cpu),
        cpu_seconds_since(std::process::id(), own_cpu),
    );
    let collections: Vec<_> = nats
        .gc_cycles()
        .into_iter()
        .filter(|cycle| cycle.began < started + built && cycle.began + cycle.lasted > started)
        .collect();
    let grown = resident_bytes().saturating_sub(before);
    let peak_grown = peak.stop().saturating_sub(before);
    let applied = metric(&gateway, "starcite_catalog_view_applied_total")
        .await
        .unwrap_or(0.0);
    let replayed = metric(&gateway, "starcite_catalog_view_build_replay_seconds")
        .await
        .unwrap_or(0.0);
    println!(
        "{:<44} {:>8} sessions: ready in {:>5.0} ms, built in {:>6.1} s (the replay {:>5.1} s) \
         = {:>7.0} sessions/s",
        "fresh view",
        count,
        ready.as_secs_f64() * 1000.0,
        built.as_secs_f64(),
        replayed,
        applied / built.as_secs_f64()
    );
    println!(
        "{:<44} {:>8} sessions: nats-server {server_cpu:>5.1} s, {:>5.1} s of it in {} \
         garbage collections; the gateway {own_cpu:>5.1} s",
        "  CPU time while building",
        count,
        collections
            .iter()
            .map(|cycle| cycle.cpu)
            .sum::<Duration>()
            .as_secs_f64(),
        collections.len(),
    );

    // Filtered pages through the HTTP API (each also reads its sessions' heads from NATS).
    let mut http = Histogram::<u64>::new(3).unwrap();
    let path = "/v1/sessions?limit=50&cursor=ses_8&metadata[tenant]=tenant-7";
    for round in 0..1100 {
        let asked = Instant::now();
        let response = gateway.request(Method::GET, path, None).await;
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
        if round >= 100 {
            http.record(asked.elapsed().as_micros() as u64).unwrap();
        }
    }
    let grown_after_pages = resident_bytes().saturating_sub(before);
    // Each growth in all, then beyond what the gateway grew with no session.
    for (label, less) in [
        ("gateway memory growth (RSS)", 0),
        ("  of which beyond a gateway with no session", own),
    ] {
        let mib = |grown: u64| grown.saturating_sub(less) as f64 / MIB;
        println!(
            "{label:<44} {count:>8} sessions: {:>6.1} MiB at most while building, {:>6.1} MiB \
             after the build, {:>6.1} MiB after 1,100 lists",
            mib(peak_grown),
            mib(grown),
            mib(grown_after_pages)
        );
    }
    println!(
        "{:<44} {:>8} sessions: {:>6.1} B/session ({:.0} MiB)",
        "view on disk",
        count,
        view_bytes(&dir) as f64 / count as f64,
        view_bytes(&dir) as f64 / MIB
    );
    let (p50, p99) = p99_ms(&http);
    println!(
        "{:<44} {:>8} sessions: p50 {p50:>6.2} ms, p99 {p99:>6.2} ms",
        "filtered page (limit 50), HTTP list", count
    );
    gateway.stop().await;

    // A restart with the view present.
    let started = Instant::now();
    let gateway = TestGateway::start_with(config).await;
    let ready = started.elapsed();
    let listed = until_listed(&gateway, started).await;
    let applied = metric(&gateway, "starcite_catalog_view_applied_total")
        .await
        .unwrap_or(-1.0);
    println!(
        "{:<44} {:>8} sessions: ready in {:>5.0} ms, first list in {:>5.0} ms, {applied} re-read",
        "restart with the view present",
        count,
        ready.as_secs_f64() * 1000.0,
        listed.as_secs_f64() * 1000.0,
    );
    gateway.stop().await;

    // The same page read from the view alone.
    let index = CatalogIndex::open(&dir, BUCKET).unwrap();
    let query = filtered_page();
    let mut view = Histogram::<u64>::new(3).unwrap();
    for round in 0..11_000 {
        let asked = Instant::now();
        let page = index.page(&query).unwrap();
        assert_eq!(page.sessions.len(), 50);
        if round >= 1000 {
            view.record(asked.elapsed().as_micros() as u64).unwrap();
        }
    }
    let (p50, p99) = p99_ms(&view);
    println!(
        "{:<44} {:>8} sessions: p50 {p50:>6.2} ms, p99 {p99:>6.2} ms",
        "filtered page (limit 50), from the view", count
    );
}

pub async fn run() {
    // Each gateway here outlives its NATS server, and would log every reconnect attempt over
    // the figures; errors still show (the first subscriber installed wins).
    gateway::telemetry::init("error", gateway::telemetry::LogFormat::Text);
    let counts: Vec<usize> = std::env::var("BENCH_CATALOG_SESSIONS")
        .unwrap_or_else(|_| "1000000,10000000".to_owned())
        .split(',')
        .filter_map(|count| count.trim().parse().ok())
        .collect();
    for count in counts {
        figures(count).await;
    }
}
