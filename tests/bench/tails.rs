//! Readers: live delivery to many tailers, replay of a long session, idle tailers' cost, and
//! the first append to a long session on a freshly started gateway.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::{self};
use futures::StreamExt;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use starcite_tests::GatewayProcess;

use crate::harness::{
    Api, Connection, Report, Scale, append, create_session, event_body, histogram, micros,
};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A tail with a read buffer of `read_buffer` bytes. tungstenite zeroes the whole buffer on
/// every read: its 128 KiB default suits a replay's large frames, but for live events of ~1 KiB
/// it made the load generator, not the gateway, the cost of a receipt.
async fn connect(url: &str, read_buffer: usize) -> Socket {
    let config = WebSocketConfig::default().read_buffer_size(read_buffer);
    let (socket, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), false)
        .await
        .expect("open a tail");
    socket
}

/// The read buffer of a tail that receives one live event at a time.
const LIVE_READ_BUFFER: usize = 8 * 1024;

/// The read buffer of a replay in frames of 1,000 events: tungstenite's default.
const REPLAY_READ_BUFFER: usize = 128 * 1024;

/// The seq of a one-event frame. Stored events begin with their seq, and a load generator
/// that parsed every event would measure itself, not the gateway (the raw baselines do not
/// parse either).
fn seq(text: &str) -> Option<u64> {
    seq_at(text.strip_prefix(SEQ_FIELD)?)
}

/// The seq of the last event in an array frame.
fn last_seq_of(text: &str) -> Option<u64> {
    let at = text.rfind(SEQ_FIELD)?;
    seq_at(&text[at + SEQ_FIELD.len()..])
}

const SEQ_FIELD: &str = "{\"seq\":";

fn seq_at(rest: &str) -> Option<u64> {
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..digits].parse().ok()
}

/// Opens `count` sockets, 100 at a time.
async fn connect_many(urls: Vec<String>) -> Vec<Socket> {
    futures::stream::iter(urls)
        .map(|url| async move { connect(&url, LIVE_READ_BUFFER).await })
        .buffered(100)
        .collect()
        .await
}

/// Counts what every tailer has received, and wakes the writer when all have the latest.
struct Receipts {
    total: AtomicU64,
    progress: Notify,
}

/// `tailers` sockets on one session; each append waits until every tailer has it. Latency is
/// from the append's reply to each tailer's receipt (zero when the frame came first).
async fn live_delivery(
    gateway: &GatewayProcess,
    (scenario, cpu_scenario): (&'static str, &'static str),
    tailers: usize,
    events: u64,
    report: &mut Report,
) {
    let id = create_session(gateway).await;
    let path = gateway.append_path(&id);
    let mut connection = Connection::open(gateway).await;
    let sockets = connect_many(vec![gateway.tail_url(&id, 0, 1); tailers]).await;
    let receipts = Arc::new(Receipts {
        total: AtomicU64::new(0),
        progress: Notify::new(),
    });
    let tailers_total = tailers as u64;
    let readers: Vec<_> = sockets
        .into_iter()
        .map(|mut socket| {
            let receipts = receipts.clone();
            tokio::spawn(async move {
                let mut received = Vec::with_capacity(events as usize);
                while (received.len() as u64) < events {
                    let Some(Ok(message)) = socket.next().await else {
                        panic!("a tail closed early");
                    };
                    let Message::Text(text) = message else {
                        continue;
                    };
                    let at = Instant::now();
                    let Some(seq) = seq(&text) else { continue };
                    received.push((seq, at));
                    let total = receipts.total.fetch_add(1, Ordering::AcqRel) + 1;
                    if total.is_multiple_of(tailers_total) {
                        receipts.progress.notify_one();
                    }
                }
                received
            })
        })
        .collect();
    let mut replied = Vec::with_capacity(events as usize);
    let cpu = report.cpu_meter();
    for producer_seq in 1..=events {
        let seq = append(&mut connection, &path, event_body("live", producer_seq)).await;
        replied.push(Instant::now());
        assert_eq!(seq, producer_seq, "a fresh session numbers from 1");
        let wanted = producer_seq * tailers_total;
        while receipts.total.load(Ordering::Acquire) < wanted {
            tokio::time::timeout(Duration::from_secs(30), receipts.progress.notified())
                .await
                .expect("every tailer receives the event within 30 s");
        }
    }
    report.cpu(cpu_scenario, cpu, events * tailers_total, "us/delivery");
    let mut latencies = histogram();
    for reader in readers {
        for (seq, at) in reader.await.expect("a tailer task") {
            let reply = replied[(seq - 1) as usize];
            latencies
                .record(micros(at.saturating_duration_since(reply)))
                .ok();
        }
    }
    report.latencies(scenario, &latencies, &["p50_us", "p99_us"]);
}

pub async fn tail_1(gateway: &GatewayProcess, scale: Scale, report: &mut Report) {
    live_delivery(
        gateway,
        ("tail_1", "tail_1_cpu"),
        1,
        scale.pick(2_000, 100),
        report,
    )
    .await;
}

pub async fn tail_1000(gateway: &GatewayProcess, scale: Scale, report: &mut Report) {
    let tailers = scale.pick(1_000, 100) as usize;
    live_delivery(
        gateway,
        ("tail_1000", "tail_1000_cpu"),
        tailers,
        scale.pick(300, 20),
        report,
    )
    .await;
}

/// `replay_100k` (one tailer from cursor 0 to the end of a session of `count` events, in
/// frames of 1,000) and its baseline `raw_replay_100k` (an ordered consumer over the same
/// subject), taken in turns three times each; each reports its median rate.
pub async fn replays(
    gateway: &GatewayProcess,
    jetstream: &jetstream::Context,
    id: &str,
    count: u64,
    report: &mut Report,
) {
    let (mut gateway_rates, mut raw_rates) = (Vec::new(), Vec::new());
    let mut gateway_cpu = report.cpu_meter();
    gateway_cpu.stop();
    let mut raw_cpu = report.cpu_meter();
    raw_cpu.stop();
    for _ in 0..3 {
        gateway_cpu.start();
        gateway_rates.push(replay_rate(gateway, id, count).await);
        gateway_cpu.stop();
        raw_cpu.start();
        raw_rates.push(raw_replay_rate(jetstream, id, count).await);
        raw_cpu.stop();
    }
    report.cpu("replay_100k_cpu", gateway_cpu, 3 * count, "us/event");
    report.add(
        "replay_100k",
        "events_per_s",
        median(gateway_rates),
        "events/s",
    );
    report.cpu("raw_replay_100k_cpu", raw_cpu, 3 * count, "us/event");
    report.add(
        "raw_replay_100k",
        "events_per_s",
        median(raw_rates),
        "events/s",
    );
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

async fn replay_rate(gateway: &GatewayProcess, id: &str, count: u64) -> f64 {
    let started = Instant::now();
    let mut socket = connect(&gateway.tail_url(id, 0, 1000), REPLAY_READ_BUFFER).await;
    let mut last = 0;
    while last < count {
        let Some(Ok(message)) = socket.next().await else {
            panic!("the replay closed at {last}");
        };
        if let Message::Text(text) = message {
            last = last_seq_of(&text).unwrap_or(last);
        }
    }
    let rate = count as f64 / started.elapsed().as_secs_f64();
    let _ = socket.close(None).await;
    rate
}

/// Reads the session once before either replay is measured, so neither finds the stream's
/// blocks in nats-server's cache only because the other read them first.
pub async fn warm_up_replay(jetstream: &jetstream::Context, id: &str, count: u64) {
    raw_replay_rate(jetstream, id, count).await;
}

async fn raw_replay_rate(jetstream: &jetstream::Context, id: &str, count: u64) -> f64 {
    let defaults = gateway::config::NatsConfig::default();
    let session = gateway::sessions::model::SessionId::parse(id).expect("a valid id");
    let subject = gateway::nats::subjects::events_subject(&defaults.subject_prefix, &session);
    let stream = jetstream
        .get_stream(&defaults.stream)
        .await
        .expect("the events stream");
    let started = Instant::now();
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            name: Some("bench-raw-replay".into()),
            filter_subject: subject,
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .expect("an ordered consumer");
    let mut messages = consumer.messages().await.expect("its messages");
    let mut received = 0;
    let mut bytes = 0;
    while received < count {
        let message = messages.next().await.expect("a message").expect("no error");
        bytes += message.payload.len();
        received += 1;
    }
    std::hint::black_box(bytes);
    let rate = count as f64 / started.elapsed().as_secs_f64();
    // Gone now, not in 30 s, so it is not counted among the gateway's consumers.
    drop(messages);
    stream.delete_consumer("bench-raw-replay").await.ok();
    rate
}

/// Events the gateway's stream has consumers for right now.
async fn consumer_count(jetstream: &jetstream::Context) -> u64 {
    let defaults = gateway::config::NatsConfig::default();
    let mut stream = jetstream
        .get_stream(&defaults.stream)
        .await
        .expect("the events stream");
    stream
        .info()
        .await
        .expect("stream info")
        .state
        .consumer_count as u64
}

/// `per_session` idle tailers on each of `sessions` sessions; one append per session proves
/// every tailer is live before the gateway's memory is read.
pub async fn idle_tailers(
    gateway: &GatewayProcess,
    jetstream: &jetstream::Context,
    scale: Scale,
    report: &mut Report,
) {
    let sessions = scale.pick(1_000, 50) as usize;
    let per_session = 10;
    let mut ids = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        ids.push(create_session(gateway).await);
    }
    let before = gateway.rss_kib();
    let urls = ids
        .iter()
        .flat_map(|id| std::iter::repeat_n(gateway.tail_url(id, 0, 1), per_session))
        .collect();
    let sockets = connect_many(urls).await;
    let live = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = sockets
        .into_iter()
        .map(|mut socket| {
            let live = live.clone();
            tokio::spawn(async move {
                while let Some(Ok(message)) = socket.next().await {
                    if matches!(message, Message::Text(_)) {
                        live.fetch_add(1, Ordering::AcqRel);
                    }
                }
            })
        })
        .collect();
    let mut connection = Connection::open(gateway).await;
    for id in &ids {
        append(
            &mut connection,
            &gateway.append_path(id),
            event_body("idle", 1),
        )
        .await;
    }
    let tailers = (sessions * per_session) as u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while live.load(Ordering::Acquire) < tailers {
        assert!(
            Instant::now() < deadline,
            "not every idle tailer got its session's event"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grown = gateway.rss_kib().saturating_sub(before);
    report.add(
        "idle_tailers_10k",
        "gateway_rss_kib_per_tailer",
        grown as f64 / tailers as f64,
        "KiB",
    );
    report.add(
        "idle_tailers_10k",
        "nats_consumers",
        consumer_count(jetstream).await as f64,
        "consumers",
    );
    for reader in readers {
        reader.abort();
    }
}

/// Restarts the gateway and times the first append to the long session, `rounds` times;
/// reports the median.
pub async fn cold_append(
    gateway: &mut GatewayProcess,
    id: &str,
    scale: Scale,
    report: &mut Report,
) {
    let rounds = scale.pick(5, 1);
    let mut times = Vec::new();
    for round in 1..=rounds {
        gateway.restart().await;
        let mut connection = Connection::open(gateway).await;
        let path = gateway.append_path(id);
        let started = Instant::now();
        append(
            &mut connection,
            &path,
            event_body(&format!("cold-{round}"), 1),
        )
        .await;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    println!("  cold appends (ms): {times:.1?}");
    report.add("cold_append_100k", "ms", times[times.len() / 2], "ms");
}
