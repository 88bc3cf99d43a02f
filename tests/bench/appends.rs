//! Appends through the gateway, each beside the JetStream baseline it is held against.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishError;
use async_nats::jetstream::{self, ErrorCode, stream};
use bytes::Bytes;
use hdrhistogram::Histogram;
use hyper::Uri;

use starcite_tests::GatewayProcess;

use crate::harness::{
    Api, Connection, Report, Scale, Topology, append, create_session, event_body, histogram, micros,
};

/// A file-backed stream beside the gateway's, for the baselines: same servers, same storage,
/// same replicas, same message size.
pub async fn raw_stream(jetstream: &jetstream::Context, replicas: usize) -> stream::Stream {
    let _ = jetstream.delete_stream("BENCH_RAW").await;
    jetstream
        .create_stream(stream::Config {
            name: "BENCH_RAW".into(),
            subjects: vec!["bench_raw.>".into()],
            storage: stream::StorageType::File,
            allow_direct: true,
            allow_atomic_publish: true,
            num_replicas: replicas,
            ..Default::default()
        })
        .await
        .expect("create the baseline stream")
}

/// One client, one request at a time, three ways: `append_c1` (sequential appends to one
/// session), its baseline `raw_cas_c1` (one writer publishing with expected-last-subject-
/// sequence, awaiting each ack) and the diagnostic `http_floor_c1` (the same HTTP client's
/// round trip for a request that does no work, `GET /health/live`: the floor under any
/// append). They run in alternating blocks, so the ratios compare the same machine state.
pub async fn one_at_a_time(
    gateway: &GatewayProcess,
    jetstream: &jetstream::Context,
    topology: Topology,
    scale: Scale,
    report: &mut Report,
) {
    let id = create_session(gateway).await;
    let path = gateway.append_path(&id);
    let mut appends = Connection::open(gateway).await;
    let mut floor = Connection::open(gateway).await;
    let health = Uri::from_static("/health/live");
    let mut raw = RawCas::new();
    let mut producer_seq = 0;
    for _ in 0..scale.pick(500, 50) {
        producer_seq += 1;
        append(&mut appends, &path, event_body("c1", producer_seq)).await;
        raw.publish(jetstream).await;
        floor.get(&health).await;
    }
    let (blocks, per_block) = (scale.pick(10, 3), scale.pick(1_000, 100));
    let (mut append_latencies, mut raw_latencies, mut floor_latencies) =
        (histogram(), histogram(), histogram());
    let mut append_cpu = report.cpu_meter();
    append_cpu.stop();
    let mut raw_cpu = report.cpu_meter();
    raw_cpu.stop();
    let mut floor_cpu = report.cpu_meter();
    floor_cpu.stop();
    let (mut append_elapsed, mut raw_elapsed) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..blocks {
        append_cpu.start();
        let started = Instant::now();
        for _ in 0..per_block {
            producer_seq += 1;
            let body = event_body("c1", producer_seq);
            let sent = Instant::now();
            append(&mut appends, &path, body).await;
            append_latencies.record(micros(sent.elapsed())).ok();
        }
        append_elapsed += started.elapsed();
        append_cpu.stop();
        raw_cpu.start();
        let started = Instant::now();
        for _ in 0..per_block {
            let sent = Instant::now();
            raw.publish(jetstream).await;
            raw_latencies.record(micros(sent.elapsed())).ok();
        }
        raw_elapsed += started.elapsed();
        raw_cpu.stop();
        floor_cpu.start();
        for _ in 0..per_block {
            let sent = Instant::now();
            let (status, _) = floor.get(&health).await;
            assert_eq!(status, 200);
            floor_latencies.record(micros(sent.elapsed())).ok();
        }
        floor_cpu.stop();
    }
    let count = blocks * per_block;
    let (append_c1, raw_cas_c1, http_floor_c1) = ("append_c1", "raw_cas_c1", "http_floor_c1");
    let cpu = |scenario| topology.cpu_name(scenario);
    report.cpu(&cpu(append_c1), append_cpu, count, "us/event");
    report.latencies(
        &topology.name(append_c1),
        &append_latencies,
        &["p50_us", "p99_us", "p999_us"],
    );
    let rate = count as f64 / append_elapsed.as_secs_f64();
    report.add(&topology.name(append_c1), "events_per_s", rate, "events/s");
    report.cpu(&cpu(raw_cas_c1), raw_cpu, count, "us/event");
    let raw_cas_c1 = topology.name(raw_cas_c1);
    report.latencies(&raw_cas_c1, &raw_latencies, &["p50_us", "p99_us"]);
    let rate = count as f64 / raw_elapsed.as_secs_f64();
    report.add(&raw_cas_c1, "events_per_s", rate, "events/s");
    let retries = raw.retries as f64;
    report.add(&raw_cas_c1, "transient_refusals", retries, "publishes");
    report.cpu(&cpu(http_floor_c1), floor_cpu, count, "us/request");
    report.latencies(
        &topology.name(http_floor_c1),
        &floor_latencies,
        &["p50_us", "p99_us"],
    );
}

/// The raw baseline's writer: each publish of the same ~1 KiB event expects the subject's last
/// sequence to be the one its previous publish got.
struct RawCas {
    body: Bytes,
    last: u64,
    /// Publishes refused with the transient "wrong last sequence" (10164) and sent again.
    retries: u64,
}

impl RawCas {
    fn new() -> RawCas {
        RawCas {
            body: event_body("raw", 1),
            last: 0,
            retries: 0,
        }
    }

    async fn publish(&mut self, jetstream: &jetstream::Context) {
        for _ in 0..100 {
            let mut headers = HeaderMap::new();
            headers.insert(
                "Nats-Expected-Last-Subject-Sequence",
                self.last.to_string().as_str(),
            );
            let ack = jetstream
                .publish_with_headers("bench_raw.cas", headers, self.body.clone())
                .await
                .expect("publish")
                .await;
            match ack {
                Ok(ack) => {
                    self.last = ack.sequence;
                    return;
                }
                // A replicated stream's leader sometimes refuses a publish that arrives right
                // after the previous one's ack (`STREAM_WRONG_LAST_SEQUENCE_CONSTANT`), though
                // the sequence is right: this writer is the subject's only one. The gateway
                // decides again after a catch-up; the baseline sends again.
                Err(err) if is_transient_wrong_last_sequence(&err) => self.retries += 1,
                Err(err) => panic!("ack: {err:?}"),
            }
        }
        panic!("100 publishes in a row refused as 'wrong last sequence'");
    }
}

fn is_transient_wrong_last_sequence(err: &PublishError) -> bool {
    std::error::Error::source(err)
        .and_then(|source| source.downcast_ref::<jetstream::Error>())
        .is_some_and(|err| err.error_code() == ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT)
}

/// `writers` clients, each with its own connection, appending as fast as they are answered
/// for `duration`; writer `n` appends to `sessions[n % sessions.len()]`.
async fn append_for(
    gateway: &GatewayProcess,
    sessions: &[String],
    writers: usize,
    duration: Duration,
) -> (f64, Histogram<u64>) {
    // Producer ids are new on every run, so a run never replays an earlier one's seqs.
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let run = RUNS.fetch_add(1, Ordering::Relaxed);
    let connections = futures::future::join_all((0..writers).map(|_| Connection::open(gateway)));
    let connections = connections.await;
    let started = Instant::now();
    let deadline = started + duration;
    let tasks = connections
        .into_iter()
        .enumerate()
        .map(|(writer, mut connection)| {
            let path = gateway.append_path(&sessions[writer % sessions.len()]);
            tokio::spawn(async move {
                let producer = format!("writer-{run}-{writer}");
                let mut latencies = histogram();
                let mut producer_seq = 0;
                while Instant::now() < deadline {
                    producer_seq += 1;
                    let body = event_body(&producer, producer_seq);
                    let sent = Instant::now();
                    append(&mut connection, &path, body).await;
                    latencies.record(micros(sent.elapsed())).ok();
                }
                latencies
            })
        });
    let mut latencies = histogram();
    for writer in futures::future::join_all(tasks).await {
        latencies.add(writer.expect("a writer task")).ok();
    }
    let rate = latencies.len() as f64 / started.elapsed().as_secs_f64();
    (rate, latencies)
}

/// Diagnostic beside `append_hot_c64`: one writer committing atomic batches of 64 messages
/// to one subject, each conditional on the subject's last sequence, as a group commit does.
pub async fn raw_batch_64(
    jetstream: &jetstream::Context,
    topology: Topology,
    scale: Scale,
    report: &mut Report,
) {
    let client = jetstream.client();
    let body = event_body("raw", 1);
    let mut last = 0u64;
    let mut batches = 0u64;
    let commit = async |last: &mut u64, batches: &mut u64| {
        *batches += 1;
        for index in 1..=64u64 {
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Batch-Id", format!("bench-{batches}").as_str());
            headers.insert("Nats-Batch-Sequence", index.to_string().as_str());
            if index == 1 {
                headers.insert(
                    "Nats-Expected-Last-Subject-Sequence",
                    last.to_string().as_str(),
                );
            }
            if index < 64 {
                client
                    .publish_with_headers("bench_raw.batch", headers, body.clone())
                    .await
                    .expect("publish");
                continue;
            }
            headers.insert("Nats-Batch-Commit", "1");
            let ack = jetstream
                .publish_with_headers("bench_raw.batch", headers, body.clone())
                .await
                .expect("publish")
                .await
                .expect("commit");
            *last = ack.sequence;
        }
    };
    for _ in 0..scale.pick(20, 3) {
        commit(&mut last, &mut batches).await;
    }
    let rounds = scale.pick(300, 10);
    let started = Instant::now();
    for _ in 0..rounds {
        commit(&mut last, &mut batches).await;
    }
    let rate = (rounds * 64) as f64 / started.elapsed().as_secs_f64();
    let scenario = topology.name("raw_batch_64");
    report.add(&scenario, "events_per_s", rate, "events/s");
}

/// 64 clients over 64 sessions, reported as `scenario` (`append_c64`, or its runs on the
/// cluster).
pub async fn append_c64(
    gateway: &GatewayProcess,
    scenario: &str,
    scale: Scale,
    report: &mut Report,
) {
    let mut sessions = Vec::new();
    for _ in 0..64 {
        sessions.push(create_session(gateway).await);
    }
    append_for(gateway, &sessions, 64, Duration::from_millis(500)).await;
    let cpu = report.cpu_meter();
    let (rate, latencies) = append_for(gateway, &sessions, 64, scale.duration(8)).await;
    report.cpu(&format!("{scenario}_cpu"), cpu, latencies.len(), "us/event");
    report.add(scenario, "events_per_s", rate, "events/s");
    report.latencies(scenario, &latencies, &["p99_us"]);
}

/// 64 producers into one session.
pub async fn append_hot_c64(
    gateway: &GatewayProcess,
    topology: Topology,
    scale: Scale,
    report: &mut Report,
) {
    let session = [create_session(gateway).await];
    append_for(gateway, &session, 64, Duration::from_millis(500)).await;
    let session = [create_session(gateway).await];
    let cpu = report.cpu_meter();
    let (rate, latencies) = append_for(gateway, &session, 64, scale.duration(8)).await;
    let scenario = "append_hot_c64";
    report.cpu(
        &topology.cpu_name(scenario),
        cpu,
        latencies.len(),
        "us/event",
    );
    let scenario = topology.name(scenario);
    report.add(&scenario, "events_per_s", rate, "events/s");
    report.latencies(&scenario, &latencies, &["p99_us"]);
}

/// 64 publishers, each awaiting its ack before the next, on subjects of their own.
pub async fn raw_publish_c64(jetstream: &jetstream::Context, scale: Scale, report: &mut Report) {
    let body = event_body("raw", 1);
    let run = async |duration: Duration| {
        let started = Instant::now();
        let deadline = started + duration;
        let tasks = (0..64).map(|writer| {
            let (jetstream, body) = (jetstream.clone(), body.clone());
            tokio::spawn(async move {
                let subject = format!("bench_raw.c64.{writer}");
                let mut count = 0u64;
                while Instant::now() < deadline {
                    let ack = jetstream
                        .publish(subject.clone(), body.clone())
                        .await
                        .expect("publish");
                    ack.await.expect("ack");
                    count += 1;
                }
                count
            })
        });
        let mut total = 0;
        for writer in futures::future::join_all(tasks).await {
            total += writer.expect("a publisher task");
        }
        (total, total as f64 / started.elapsed().as_secs_f64())
    };
    run(Duration::from_millis(500)).await;
    let cpu = report.cpu_meter();
    let (published, rate) = run(scale.duration(8)).await;
    report.cpu("raw_publish_c64_cpu", cpu, published, "us/event");
    report.add("raw_publish_c64", "events_per_s", rate, "events/s");
}

/// Fills a session with `count` events through the batch endpoint, 1,000 per request.
pub async fn fill(gateway: &GatewayProcess, id: &str, count: u64) {
    let path = gateway.append_batch_path(id);
    let mut connection = Connection::open(gateway).await;
    let mut producer_seq = 0;
    while producer_seq < count {
        let events: Vec<serde_json::Value> = (producer_seq + 1..=count.min(producer_seq + 1000))
            .map(|seq| crate::harness::event("fill", seq))
            .collect();
        producer_seq += events.len() as u64;
        let body = Bytes::from(
            serde_json::to_vec(&serde_json::json!({ "events": events })).unwrap_or_default(),
        );
        let (status, reply) = connection.post_json(&path, body).await;
        assert_eq!(
            status,
            201,
            "batch append failed: {}",
            String::from_utf8_lossy(&reply)
        );
    }
}
