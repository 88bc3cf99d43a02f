//! Appends through the gateway, each beside the JetStream baseline it is held against.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use hdrhistogram::Histogram;
use hyper::Uri;

use starcite_tests::GatewayProcess;

use crate::harness::{
    Api, Connection, Report, Scale, append, create_session, event_body, histogram, micros,
};

/// A file-backed stream beside the gateway's, for the baselines: same server, same storage,
/// same message size.
pub async fn raw_stream(jetstream: &jetstream::Context) -> stream::Stream {
    let _ = jetstream.delete_stream("BENCH_RAW").await;
    jetstream
        .create_stream(stream::Config {
            name: "BENCH_RAW".into(),
            subjects: vec!["bench_raw.>".into()],
            storage: stream::StorageType::File,
            allow_direct: true,
            allow_atomic_publish: true,
            ..Default::default()
        })
        .await
        .expect("create the baseline stream")
}

/// One client, sequential appends to one session.
pub async fn append_c1(gateway: &GatewayProcess, scale: Scale, report: &mut Report) {
    let id = create_session(gateway).await;
    let path = gateway.append_path(&id);
    let mut connection = Connection::open(gateway).await;
    let warm_up = scale.pick(500, 50);
    for producer_seq in 1..=warm_up {
        append(&mut connection, &path, event_body("c1", producer_seq)).await;
    }
    let mut latencies = histogram();
    let count = scale.pick(10_000, 300);
    let cpu = report.cpu_meter();
    for producer_seq in warm_up + 1..=warm_up + count {
        let body = event_body("c1", producer_seq);
        let sent = Instant::now();
        append(&mut connection, &path, body).await;
        latencies.record(micros(sent.elapsed())).ok();
    }
    report.cpu("append_c1_cpu", cpu, count, "us/event");
    report.latencies("append_c1", &latencies, &["p50_us", "p99_us", "p999_us"]);
}

/// Diagnostic beside `append_c1`: the same client's round trip to the gateway for a request
/// that does no work (`GET /health/live`), the floor under any append's latency.
pub async fn http_floor_c1(gateway: &GatewayProcess, scale: Scale, report: &mut Report) {
    let path = Uri::from_static("/health/live");
    let mut connection = Connection::open(gateway).await;
    for _ in 0..scale.pick(500, 50) {
        connection.get(&path).await;
    }
    let mut latencies = histogram();
    let count = scale.pick(10_000, 300);
    let cpu = report.cpu_meter();
    for _ in 0..count {
        let sent = Instant::now();
        let (status, _) = connection.get(&path).await;
        assert_eq!(status, 200);
        latencies.record(micros(sent.elapsed())).ok();
    }
    report.cpu("http_floor_c1_cpu", cpu, count, "us/request");
    report.latencies("http_floor_c1", &latencies, &["p50_us", "p99_us"]);
}

/// One writer publishing with expected-last-subject-sequence, awaiting each ack.
pub async fn raw_cas_c1(jetstream: &jetstream::Context, scale: Scale, report: &mut Report) {
    let body = event_body("raw", 1);
    let mut last = 0;
    let publish = async |last: &mut u64| {
        let mut headers = HeaderMap::new();
        headers.insert(
            "Nats-Expected-Last-Subject-Sequence",
            last.to_string().as_str(),
        );
        let ack = jetstream
            .publish_with_headers("bench_raw.cas", headers, body.clone())
            .await
            .expect("publish")
            .await
            .expect("ack");
        *last = ack.sequence;
    };
    for _ in 0..scale.pick(500, 50) {
        publish(&mut last).await;
    }
    let mut latencies = histogram();
    let count = scale.pick(10_000, 300);
    let cpu = report.cpu_meter();
    let started = Instant::now();
    for _ in 0..count {
        let sent = Instant::now();
        publish(&mut last).await;
        latencies.record(micros(sent.elapsed())).ok();
    }
    let elapsed = started.elapsed();
    report.cpu("raw_cas_c1_cpu", cpu, count, "us/event");
    report.latencies("raw_cas_c1", &latencies, &["p50_us", "p99_us"]);
    report.add(
        "raw_cas_c1",
        "events_per_s",
        count as f64 / elapsed.as_secs_f64(),
        "events/s",
    );
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
pub async fn raw_batch_64(jetstream: &jetstream::Context, scale: Scale, report: &mut Report) {
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
    report.add("raw_batch_64", "events_per_s", rate, "events/s");
}

/// 64 clients over 64 sessions.
pub async fn append_c64(gateway: &GatewayProcess, scale: Scale, report: &mut Report) {
    let mut sessions = Vec::new();
    for _ in 0..64 {
        sessions.push(create_session(gateway).await);
    }
    append_for(gateway, &sessions, 64, Duration::from_millis(500)).await;
    let cpu = report.cpu_meter();
    let (rate, latencies) = append_for(gateway, &sessions, 64, scale.duration(8)).await;
    report.cpu("append_c64_cpu", cpu, latencies.len(), "us/event");
    report.add("append_c64", "events_per_s", rate, "events/s");
    report.latencies("append_c64", &latencies, &["p99_us"]);
}

/// 64 producers into one session.
pub async fn append_hot_c64(gateway: &GatewayProcess, scale: Scale, report: &mut Report) {
    let session = [create_session(gateway).await];
    append_for(gateway, &session, 64, Duration::from_millis(500)).await;
    let session = [create_session(gateway).await];
    let cpu = report.cpu_meter();
    let (rate, latencies) = append_for(gateway, &session, 64, scale.duration(8)).await;
    report.cpu("append_hot_c64_cpu", cpu, latencies.len(), "us/event");
    report.add("append_hot_c64", "events_per_s", rate, "events/s");
    report.latencies("append_hot_c64", &latencies, &["p99_us"]);
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
