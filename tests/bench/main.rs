//! `make bench`: Starcite against JetStream itself, on the same machine in the same run.
//!
//! A private nats-server (file storage) and the `starcite` gateway in its own process, both on
//! loopback; real HTTP and WebSocket clients; HDR histograms; warm-up before each figure. Then
//! the append scenarios again on a three-node cluster with streams of three replicas (`_r3`).
//! Writes `target/bench/report.json` (or `BENCH_REPORT`). `BENCH_QUICK=1` runs the same
//! scenarios small, as a smoke test. `bench catalog` gives the catalog figures instead;
//! `bench append_hot tail_1000` runs only the scenarios with those name prefixes, `bench r3`
//! only the cluster's.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod appends;
mod catalog;
mod durable_streams;
mod harness;
mod produce;
mod r3;
mod tails;

use std::path::PathBuf;

use harness::{Report, Scale, SharedCores, Topology, create_session};
use starcite_tests::TestNats;

// The same allocator as the gateway, so the load generator is not slowed by glibc's arena locks
// on the cores it shares with what it measures.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let only: Vec<String> = std::env::args().skip(1).collect();
    let scale = Scale::from_env();
    // The catalog figures measure this process's memory, so they need a process of their own.
    if only.iter().any(|name| name == "catalog") {
        catalog::run().await;
        return;
    }
    let report = scenarios(scale, &Selection(only)).await;
    let path = std::env::var_os("BENCH_REPORT")
        .map_or_else(|| PathBuf::from("target/bench/report.json"), PathBuf::from);
    report.write(&path);
    targets(&report);
}

/// The scenarios named on the command line (by prefix; `r3` names every scenario on the
/// cluster), or all of them.
struct Selection(Vec<String>);

impl Selection {
    fn wants(&self, scenario: &str) -> bool {
        self.0.is_empty()
            || self.0.iter().any(|prefix| {
                scenario.starts_with(prefix.as_str())
                    || (prefix == "r3" && scenario.ends_with("_r3"))
            })
    }

    fn wants_any(&self, scenarios: &[&str]) -> bool {
        scenarios.iter().any(|scenario| self.wants(scenario))
    }
}

/// The scenarios on the single nats-server.
const SINGLE_NODE: &[&str] = &[
    "append_c1",
    "raw_cas_c1",
    "http_floor_c1",
    "append_c64",
    "raw_publish_c64",
    "append_hot_c64",
    "raw_batch_64",
    "produce_c1_w64",
    "produce_tokens_w256",
    "produce_c64",
    "raw_publish_pipelined_small",
    "tail_1",
    "tail_1000",
    "ds_append_c1",
    "ds_sse_1000",
    "replay_100k",
    "raw_replay_100k",
    "idle_tailers_10k",
    "cold_append_100k",
];

async fn scenarios(scale: Scale, selection: &Selection) -> Report {
    let mut report = Report::new();
    println!(
        "Starcite bench{}: nats-server (file store) and gateway on loopback, ~1 KiB events\n",
        if scale.quick { " (quick)" } else { "" }
    );
    if selection.wants_any(SINGLE_NODE) {
        single_node(scale, selection, &mut report).await;
    }
    if selection.wants_any(r3::SCENARIOS) {
        r3::run(scale, selection, &mut report).await;
    }
    report
}

/// Every scenario against a single nats-server; it and its gateway stop at the end.
async fn single_node(scale: Scale, selection: &Selection, report: &mut Report) {
    let nats = TestNats::start();
    let mut gateway = harness::start_gateway(&nats.url, &[]).await;
    let jetstream = nats.jetstream().await;
    appends::raw_stream(&jetstream, 1).await;
    report.meter(SharedCores {
        gateway: gateway.pid(),
        nats: vec![nats.pid()],
        client: std::process::id(),
    });

    let single = Topology::Single;
    if selection.wants_any(&["append_c1", "raw_cas_c1", "http_floor_c1"]) {
        appends::one_at_a_time(&gateway, &jetstream, single, scale, report).await;
    }
    if selection.wants("append_c64") {
        appends::append_c64(&gateway, "append_c64", scale, report).await;
    }
    if selection.wants("raw_publish_c64") {
        appends::raw_publish_c64(&jetstream, scale, report).await;
    }
    if selection.wants("append_hot_c64") {
        appends::append_hot_c64(&gateway, single, scale, report).await;
    }
    if selection.wants("raw_batch_64") {
        appends::raw_batch_64(&jetstream, single, scale, report).await;
    }
    if selection.wants_any(&[
        "produce_c1_w64",
        "produce_tokens_w256",
        "produce_c64",
        "raw_publish_pipelined_small",
    ]) {
        produce::produce(&gateway, &jetstream, scale, report).await;
    }
    if selection.wants("tail_1") {
        tails::tail_1(&gateway, scale, report).await;
    }
    if selection.wants("tail_1000") {
        tails::tail_1000(&gateway, scale, report).await;
    }
    if selection.wants("ds_append_c1") {
        durable_streams::ds_append_c1(&gateway, scale, report).await;
    }
    if selection.wants("ds_sse_1000") {
        durable_streams::ds_sse_1000(&gateway, scale, report).await;
    }

    let long_session_scenarios = ["replay_100k", "raw_replay_100k", "cold_append_100k"];
    let mut long = None;
    if selection.wants_any(&long_session_scenarios) {
        let id = create_session(&gateway).await;
        let length = scale.pick(100_000, 5_000);
        appends::fill(&gateway, &id, length).await;
        assert_eq!(harness::last_seq(&gateway, &id).await, length);
        tails::warm_up_replay(&jetstream, &id, length).await;
        if selection.wants("replay_100k") || selection.wants("raw_replay_100k") {
            tails::replays(&gateway, &jetstream, &id, length, report).await;
        }
        long = Some(id);
    }
    if selection.wants("idle_tailers_10k") {
        tails::idle_tailers(&gateway, &jetstream, scale, report).await;
    }
    // Last: it restarts the gateway.
    if let Some(long) = long.filter(|_| selection.wants("cold_append_100k")) {
        tails::cold_append(&mut gateway, &long, scale, report).await;
    }
}

/// Each target of `docs/performance.md`, as met or missed in this run.
fn targets(report: &Report) {
    let figure = |scenario, metric| report.value(scenario, metric).unwrap_or(f64::NAN);
    let checks = [
        (
            "append_c1.p50_us <= 2 x raw_cas_c1.p50_us",
            figure("append_c1", "p50_us"),
            2.0 * figure("raw_cas_c1", "p50_us"),
            true,
        ),
        (
            "append_c1_r3.p50_us <= 2 x raw_cas_c1_r3.p50_us",
            figure("append_c1_r3", "p50_us"),
            2.0 * figure("raw_cas_c1_r3", "p50_us"),
            true,
        ),
        (
            "append_c1.p99_us <= 1000",
            figure("append_c1", "p99_us"),
            1000.0,
            true,
        ),
        (
            "append_c64 >= 0.5 x raw_publish_c64",
            figure("append_c64", "events_per_s"),
            0.5 * figure("raw_publish_c64", "events_per_s"),
            false,
        ),
        (
            "append_hot_c64 >= 1.5 x raw_cas_c1",
            figure("append_hot_c64", "events_per_s"),
            1.5 * figure("raw_cas_c1", "events_per_s"),
            false,
        ),
        (
            "produce_c1_w64 >= 3 x append_c1",
            figure("produce_c1_w64", "events_per_s"),
            3.0 * figure("append_c1", "events_per_s"),
            false,
        ),
        (
            "produce_c1_w64 >= 1.5 x raw_cas_c1",
            figure("produce_c1_w64", "events_per_s"),
            1.5 * figure("raw_cas_c1", "events_per_s"),
            false,
        ),
        (
            "produce_tokens_w256 >= 0.25 x raw_publish_pipelined_small",
            figure("produce_tokens_w256", "events_per_s"),
            0.25 * figure("raw_publish_pipelined_small", "events_per_s"),
            false,
        ),
        (
            "produce_c64 >= 0.5 x raw_publish_c64",
            figure("produce_c64", "events_per_s"),
            0.5 * figure("raw_publish_c64", "events_per_s"),
            false,
        ),
        (
            "tail_1000.p99_us <= 5000",
            figure("tail_1000", "p99_us"),
            5000.0,
            true,
        ),
        (
            "replay_100k >= 0.8 x raw_replay_100k",
            figure("replay_100k", "events_per_s"),
            0.8 * figure("raw_replay_100k", "events_per_s"),
            false,
        ),
        (
            "idle_tailers_10k KiB/tailer <= 64",
            figure("idle_tailers_10k", "gateway_rss_kib_per_tailer"),
            64.0,
            true,
        ),
        (
            "idle_tailers_10k nats_consumers <= 1 per session",
            figure("idle_tailers_10k", "nats_consumers"),
            1000.0,
            true,
        ),
        (
            "ds_append_c1.p50_us <= 1.1 x its native_p50_us",
            figure("ds_append_c1", "p50_us"),
            1.1 * figure("ds_append_c1", "native_p50_us"),
            true,
        ),
        (
            "ds_append_c1.p99_us <= 1.1 x its native_p99_us",
            figure("ds_append_c1", "p99_us"),
            1.1 * figure("ds_append_c1", "native_p99_us"),
            true,
        ),
        (
            "ds_sse_1000.p99_us <= 1.1 x tail_1000.p99_us",
            figure("ds_sse_1000", "p99_us"),
            1.1 * figure("tail_1000", "p99_us"),
            true,
        ),
        (
            "cold_append_100k.ms <= 50",
            figure("cold_append_100k", "ms"),
            50.0,
            true,
        ),
    ];
    println!("\n{:<52} {:>12} {:>12}", "target", "measured", "bound");
    for (name, measured, bound, at_most) in checks {
        if measured.is_nan() {
            continue; // Not run this time.
        }
        let met = if at_most {
            measured <= bound
        } else {
            measured >= bound
        };
        println!(
            "{name:<52} {measured:>12.1} {bound:>12.1}  {}",
            if met { "met" } else { "MISSED" }
        );
    }
}
