//! `make bench`: Starcite against JetStream itself, on the same machine in the same run.
//!
//! A private nats-server (file storage) and the `starcite` gateway in its own process, both on
//! loopback; real HTTP and WebSocket clients; HDR histograms; warm-up before each figure.
//! Writes `target/bench/report.json` (or `BENCH_REPORT`). `BENCH_QUICK=1` runs the same
//! scenarios small, as a smoke test. `bench catalog` gives the catalog figures instead.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod appends;
mod catalog;
mod harness;
mod tails;

use std::path::PathBuf;

use harness::{Report, Scale, create_session};
use starcite_tests::TestNats;

#[tokio::main]
async fn main() {
    let only = std::env::args().nth(1).unwrap_or_default();
    let scale = Scale::from_env();
    // The benchmark's reqwest shares the gateway library's rustls build, which needs a provider.
    gateway::auth::install_crypto_provider();
    // The catalog figures measure this process's memory, so they need a process of their own.
    if only == "catalog" {
        catalog::run().await;
        return;
    }
    let report = scenarios(scale).await;
    let path = std::env::var_os("BENCH_REPORT")
        .map_or_else(|| PathBuf::from("target/bench/report.json"), PathBuf::from);
    report.write(&path);
    targets(&report);
}

async fn scenarios(scale: Scale) -> Report {
    let nats = TestNats::start();
    let mut gateway = harness::start_gateway(&nats).await;
    let jetstream = nats.jetstream().await;
    appends::raw_stream(&jetstream).await;
    let mut report = Report::default();
    println!(
        "Starcite bench{}: nats-server (file store) and gateway on loopback, ~1 KiB events\n",
        if scale.quick { " (quick)" } else { "" }
    );

    appends::append_c1(&gateway, scale, &mut report).await;
    appends::raw_cas_c1(&jetstream, scale, &mut report).await;
    appends::http_floor_c1(&gateway, scale, &mut report).await;
    appends::append_c64(&gateway, scale, &mut report).await;
    appends::raw_publish_c64(&jetstream, scale, &mut report).await;
    appends::append_hot_c64(&gateway, scale, &mut report).await;
    appends::raw_batch_64(&jetstream, scale, &mut report).await;

    tails::tail_1(&gateway, scale, &mut report).await;
    tails::tail_1000(&gateway, scale, &mut report).await;

    let long = create_session(&gateway).await;
    let length = scale.pick(100_000, 5_000);
    appends::fill(&gateway, &long, length).await;
    assert_eq!(harness::last_seq(&gateway, &long).await, length);
    tails::replay(&gateway, &long, length, &mut report).await;
    tails::raw_replay(&jetstream, &long, length, &mut report).await;

    tails::idle_tailers(&gateway, &jetstream, scale, &mut report).await;
    tails::cold_append(&mut gateway, &nats, &long, scale, &mut report).await;
    report
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
            "cold_append_100k.ms <= 50",
            figure("cold_append_100k", "ms"),
            50.0,
            true,
        ),
    ];
    println!("\n{:<52} {:>12} {:>12}", "target", "measured", "bound");
    for (name, measured, bound, at_most) in checks {
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
