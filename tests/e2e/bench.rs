//! `make bench` in its quick form: every scenario runs against a real server and gateway and
//! the report names every figure the issue asks for. No speed is asserted here.

use std::process::Command;

use serde_json::Value;

const FIGURES: &[(&str, &str)] = &[
    ("append_c1", "p50_us"),
    ("append_c1", "p99_us"),
    ("append_c1", "p999_us"),
    ("raw_cas_c1", "p50_us"),
    ("raw_cas_c1", "p99_us"),
    ("raw_cas_c1", "events_per_s"),
    ("append_c64", "events_per_s"),
    ("append_c64", "p99_us"),
    ("raw_publish_c64", "events_per_s"),
    ("append_hot_c64", "events_per_s"),
    ("append_hot_c64", "p99_us"),
    ("tail_1", "p50_us"),
    ("tail_1", "p99_us"),
    ("tail_1000", "p50_us"),
    ("tail_1000", "p99_us"),
    ("ds_append_c1", "p50_us"),
    ("ds_append_c1", "p99_us"),
    ("ds_append_c1", "native_p50_us"),
    ("ds_append_c1", "native_p99_us"),
    ("ds_sse_1000", "p50_us"),
    ("ds_sse_1000", "p99_us"),
    ("replay_100k", "events_per_s"),
    ("raw_replay_100k", "events_per_s"),
    ("idle_tailers_10k", "gateway_rss_kib_per_tailer"),
    ("idle_tailers_10k", "nats_consumers"),
    ("cold_append_100k", "ms"),
];

#[tokio::test]
async fn the_quick_bench_reports_every_figure() {
    let out = tempfile::tempdir().unwrap();
    let report = out.path().join("report.json");
    let run = tokio::task::spawn_blocking({
        let report = report.clone();
        move || {
            Command::new(env!("CARGO_BIN_EXE_bench"))
                .env("BENCH_QUICK", "1")
                .env("BENCH_REPORT", &report)
                .env("STARCITE_BIN", env!("CARGO_BIN_EXE_starcite-e2e"))
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        run.status.success(),
        "bench failed:\n{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let rows: Vec<Value> = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    for (scenario, metric) in FIGURES {
        let row = rows
            .iter()
            .find(|row| row["scenario"] == *scenario && row["metric"] == *metric)
            .unwrap_or_else(|| panic!("{scenario}.{metric} is missing from the report"));
        let value = row["value"].as_f64().unwrap();
        assert!(
            value.is_finite() && value >= 0.0,
            "{scenario}.{metric} = {value}"
        );
        assert!(row["unit"].as_str().is_some_and(|unit| !unit.is_empty()));
    }
    // The live feeds are shared: idle tailers add no consumers.
    let consumers = rows
        .iter()
        .find(|row| row["scenario"] == "idle_tailers_10k" && row["metric"] == "nats_consumers")
        .and_then(|row| row["value"].as_f64());
    assert_eq!(consumers, Some(0.0));
}
