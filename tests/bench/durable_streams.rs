//! The Durable Streams protocol beside the native API: `ds_append_c1` (one client appending
//! one message at a time with `POST /v1/stream/{name}`, in blocks alternating with native
//! appends of the same body, whose figures it reports beside its own) and `ds_sse_1000` (each
//! append delivered to 1,000 readers with `live=sse`, beside `tail_1000`'s WebSocket tailers).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::{StatusCode, Uri};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use starcite_tests::GatewayProcess;

use crate::harness::{
    Api, Connection, Report, Scale, append, create_session, event_body, histogram, micros,
};

/// Creates a JSON stream, and returns its path.
async fn create_stream(connection: &mut Connection, name: &str) -> Uri {
    let path = Uri::try_from(format!("/v1/stream/{name}")).expect("a valid stream path");
    // `[]` creates it empty, and makes the request name its JSON content type.
    let (status, _) = connection.put_json(&path, Bytes::from_static(b"[]")).await;
    assert_eq!(status, StatusCode::CREATED, "create the stream");
    path
}

async fn ds_append(connection: &mut Connection, path: &Uri, body: Bytes) {
    let (status, reply) = connection.post_json(path, body).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "append failed: {reply:?}");
}

pub async fn ds_append_c1(gateway: &GatewayProcess, scale: Scale, report: &mut Report) {
    let mut connection = Connection::open(gateway).await;
    let stream = create_stream(&mut connection, "ds-append-c1").await;
    let session = create_session(gateway).await;
    let native = gateway.append_path(&session);
    // The same ~1 KiB body both ways: a native event, which the stream stores as one message.
    let (mut ds_seq, mut native_seq) = (0, 0);
    let next = |seq: &mut u64| {
        *seq += 1;
        event_body("c1", *seq)
    };
    for _ in 0..scale.pick(500, 50) {
        ds_append(&mut connection, &stream, next(&mut ds_seq)).await;
        append(&mut connection, &native, next(&mut native_seq)).await;
    }
    let (blocks, per_block) = (scale.pick(10, 3), scale.pick(1_000, 100));
    let (mut ds_latencies, mut native_latencies) = (histogram(), histogram());
    let mut ds_cpu = report.cpu_meter();
    ds_cpu.stop();
    let mut ds_elapsed = Duration::ZERO;
    for _ in 0..blocks {
        ds_cpu.start();
        let started = Instant::now();
        for _ in 0..per_block {
            let body = next(&mut ds_seq);
            let sent = Instant::now();
            ds_append(&mut connection, &stream, body).await;
            ds_latencies.record(micros(sent.elapsed())).ok();
        }
        ds_elapsed += started.elapsed();
        ds_cpu.stop();
        for _ in 0..per_block {
            let body = next(&mut native_seq);
            let sent = Instant::now();
            append(&mut connection, &native, body).await;
            native_latencies.record(micros(sent.elapsed())).ok();
        }
    }
    let count = blocks * per_block;
    report.cpu("ds_append_c1_cpu", ds_cpu, count, "us/event");
    report.latencies(
        "ds_append_c1",
        &ds_latencies,
        &["p50_us", "p99_us", "p999_us"],
    );
    let rate = count as f64 / ds_elapsed.as_secs_f64();
    report.add("ds_append_c1", "events_per_s", rate, "events/s");
    for (metric, quantile) in [("p50", 0.5), ("p99", 0.99)] {
        let native = native_latencies.value_at_quantile(quantile) as f64;
        let ds = ds_latencies.value_at_quantile(quantile) as f64;
        report.add("ds_append_c1", &format!("native_{metric}_us"), native, "us");
        report.add("ds_append_c1", &format!("{metric}_ratio"), ds / native, "x");
    }
}

/// One SSE reader on a raw socket: the response's bytes are searched for control events'
/// offsets, which is all a load generator needs (parsing every event would measure itself).
async fn sse_reader(
    address: String,
    path: String,
    events: u64,
    receipts: Arc<Receipts>,
    readers: u64,
) -> Vec<(u64, Instant)> {
    let mut socket = TcpStream::connect(&address)
        .await
        .expect("connect a reader");
    socket.set_nodelay(true).ok();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nAccept: text/event-stream\r\n\r\n");
    socket
        .write_all(request.as_bytes())
        .await
        .expect("send the read");
    let mut received = Vec::with_capacity(events as usize);
    let mut buffer = Vec::with_capacity(16 * 1024);
    let mut chunk = vec![0u8; 16 * 1024];
    const MARK: &[u8] = b"\"streamNextOffset\":\"";
    let mut searched = 0;
    let mut ready = false;
    while (received.len() as u64) < events {
        let read = socket.read(&mut chunk).await.expect("read the stream");
        assert!(read > 0, "a reader's stream ended early");
        let at = Instant::now();
        buffer.extend_from_slice(&chunk[..read]);
        while let Some(found) = find(&buffer[searched..], MARK) {
            let start = searched + found + MARK.len();
            let Some(digits) = buffer.get(start..start + 20) else {
                break;
            };
            let seq: u64 = std::str::from_utf8(digits)
                .ok()
                .and_then(|digits| digits.parse().ok())
                .expect("an offset");
            searched = start + 20;
            if !ready {
                ready = true;
                receipts.ready.fetch_add(1, Ordering::AcqRel);
                receipts.progress.notify_one();
            }
            if seq > received.last().map_or(0, |(last, _)| *last) {
                received.push((seq, at));
                let total = receipts.total.fetch_add(1, Ordering::AcqRel) + 1;
                if total.is_multiple_of(readers) {
                    receipts.progress.notify_one();
                }
            }
        }
        if searched > 64 * 1024 {
            buffer.drain(..searched);
            searched = 0;
        }
    }
    received
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Counts what every reader has received, and wakes the writer when all have the latest.
struct Receipts {
    /// Readers that got their first control event: open and caught up.
    ready: AtomicU64,
    total: AtomicU64,
    progress: Notify,
}

pub async fn ds_sse_1000(gateway: &GatewayProcess, scale: Scale, report: &mut Report) {
    let readers = scale.pick(1_000, 100);
    let events = scale.pick(300, 20);
    let mut connection = Connection::open(gateway).await;
    let stream = create_stream(&mut connection, "ds-sse-1000").await;
    let address = gateway.address.clone();
    let receipts = Arc::new(Receipts {
        ready: AtomicU64::new(0),
        total: AtomicU64::new(0),
        progress: Notify::new(),
    });
    let path = format!("{stream}?offset=-1&live=sse");
    let tasks: Vec<_> = (0..readers)
        .map(|_| {
            tokio::spawn(sse_reader(
                address.clone(),
                path.clone(),
                events,
                receipts.clone(),
                readers,
            ))
        })
        .collect();
    // Every reader is open and caught up (its first control event) before the first append.
    while receipts.ready.load(Ordering::Acquire) < readers {
        tokio::time::timeout(Duration::from_secs(30), receipts.progress.notified())
            .await
            .expect("every reader opens within 30 s");
    }
    let mut replied = Vec::with_capacity(events as usize);
    let cpu = report.cpu_meter();
    for seq in 1..=events {
        ds_append(&mut connection, &stream, event_body("live", seq)).await;
        replied.push(Instant::now());
        let wanted = seq * readers;
        while receipts.total.load(Ordering::Acquire) < wanted {
            tokio::time::timeout(Duration::from_secs(30), receipts.progress.notified())
                .await
                .expect("every reader receives the append within 30 s");
        }
    }
    report.cpu("ds_sse_1000_cpu", cpu, events * readers, "us/delivery");
    let mut latencies = histogram();
    for task in tasks {
        for (seq, at) in task.await.expect("a reader task") {
            let reply = replied[(seq - 1) as usize];
            latencies
                .record(micros(at.saturating_duration_since(reply)))
                .ok();
        }
    }
    report.latencies("ds_sse_1000", &latencies, &["p50_us", "p99_us"]);
}
