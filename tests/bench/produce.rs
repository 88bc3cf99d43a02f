//! Appends over producer sockets, many in flight per socket, beside JetStream publishing the
//! same events with as many in flight.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use bytes::Bytes;
use futures::stream::FuturesOrdered;
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use starcite_tests::{GatewayProcess, path_segment};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{Api, Report, Scale, create_session, event, histogram, micros};

/// What one socket sends: 1 KiB messages, or tokens of a model's output.
#[derive(Clone, Copy)]
enum Events {
    Messages,
    Tokens,
}

impl Events {
    fn event(self, producer_seq: u64) -> Value {
        match self {
            Events::Messages => event("bench", producer_seq),
            // A token event of 64 bytes of payload, as a model streams it.
            Events::Tokens => json!({
                "type": "token",
                "payload": {"text": "x".repeat(52)},
                "actor": "agent:bench",
                "producer_id": "bench",
                "producer_seq": producer_seq,
            }),
        }
    }
}

/// One producer socket per session, each keeping `in_flight` requests unanswered until
/// `deadline`; returns the events answered and every request's latency (send to answer).
async fn produce_for(
    gateway: &GatewayProcess,
    sessions: &[String],
    in_flight: usize,
    events: Events,
    duration: Duration,
) -> (f64, Histogram<u64>) {
    let started = Instant::now();
    let deadline = started + duration;
    let sockets = sessions.iter().map(|id| {
        let url = gateway
            .url(&format!(
                "/v1/sessions/{}/produce?producer_id=bench",
                path_segment(id)
            ))
            .replacen("http", "ws", 1);
        tokio::spawn(async move { one_socket(&url, in_flight, events, deadline).await })
    });
    let mut latencies = histogram();
    for socket in futures::future::join_all(sockets).await {
        latencies
            .add(socket.expect("a producer socket task"))
            .expect("histograms of the same bounds");
    }
    let rate = latencies.len() as f64 / started.elapsed().as_secs_f64();
    (rate, latencies)
}

async fn one_socket(
    url: &str,
    in_flight: usize,
    events: Events,
    deadline: Instant,
) -> Histogram<u64> {
    // Nagle's algorithm off, as a producer streaming small frames wants it: each request goes
    // out when sent, not when the previous one is acknowledged.
    let (socket, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .expect("a producer socket");
    let (mut outgoing, mut incoming) = socket.split();
    let ready = incoming.next().await;
    assert!(
        matches!(ready, Some(Ok(Message::Text(_)))),
        "no ready frame"
    );
    // The producer continues where the session's last run of it left off.
    let mut producer_seq = match ready {
        Some(Ok(Message::Text(text))) => serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|ready| ready["producer_seq"].as_u64())
            .unwrap_or(0),
        _ => 0,
    };
    let mut sent_at = VecDeque::with_capacity(in_flight);
    let mut latencies = histogram();
    loop {
        let sending = sent_at.len() < in_flight && Instant::now() < deadline;
        if !sending && sent_at.is_empty() {
            break;
        }
        tokio::select! {
            biased;
            answer = incoming.next() => {
                let Some(Ok(Message::Text(text))) = answer else { continue };
                assert!(!text.contains("\"error\""), "refused: {text}");
                if let Some(sent) = sent_at.pop_front() {
                    latencies.record(micros(Instant::elapsed(&sent))).ok();
                }
            }
            sent = async {
                producer_seq += 1;
                outgoing.send(Message::text(events.event(producer_seq).to_string())).await
            }, if sending => {
                sent.expect("a request frame");
                sent_at.push_back(Instant::now());
            }
        }
    }
    let _ = outgoing.close().await;
    latencies
}

/// `produce_c1_w64` (one socket, 1 KiB events, 64 in flight), `produce_tokens_w256` (64-byte
/// tokens, 256 in flight) beside `raw_publish_pipelined_small` (JetStream publishes of the
/// same tokens, 256 in flight, no condition), and `produce_c64` (64 sockets on 64 sessions,
/// 16 in flight each).
pub async fn produce(
    gateway: &GatewayProcess,
    jetstream: &jetstream::Context,
    scale: Scale,
    report: &mut Report,
) {
    let runs: [(&str, usize, usize, Events); 3] = [
        ("produce_c1_w64", 1, 64, Events::Messages),
        ("produce_tokens_w256", 1, 256, Events::Tokens),
        ("produce_c64", 64, 16, Events::Messages),
    ];
    for (scenario, sockets, in_flight, events) in runs {
        let mut sessions = Vec::with_capacity(sockets);
        for _ in 0..sockets {
            sessions.push(create_session(gateway).await);
        }
        produce_for(
            gateway,
            &sessions,
            in_flight,
            events,
            Duration::from_millis(500),
        )
        .await;
        let cpu = report.cpu_meter();
        let duration = scale.duration(8);
        let (rate, latencies) = produce_for(gateway, &sessions, in_flight, events, duration).await;
        report.cpu(&format!("{scenario}_cpu"), cpu, latencies.len(), "us/event");
        report.add(scenario, "events_per_s", rate, "events/s");
        report.latencies(scenario, &latencies, &["p50_us", "p99_us"]);
    }
    raw_publish_pipelined_small(jetstream, scale, report).await;
}

/// One publisher keeping 256 publishes of token-sized events unacknowledged, no condition.
async fn raw_publish_pipelined_small(
    jetstream: &jetstream::Context,
    scale: Scale,
    report: &mut Report,
) {
    let body = Bytes::from(Events::Tokens.event(1).to_string());
    let run = async |duration: Duration| {
        let started = Instant::now();
        let deadline = started + duration;
        let mut acks = FuturesOrdered::new();
        let mut acknowledged = 0u64;
        while Instant::now() < deadline || !acks.is_empty() {
            if acks.len() < 256 && Instant::now() < deadline {
                let ack = jetstream
                    .publish("bench_raw.pipelined", body.clone())
                    .await
                    .expect("publish");
                acks.push_back(ack.into_future());
                continue;
            }
            if let Some(ack) = acks.next().await {
                ack.expect("ack");
                acknowledged += 1;
            }
        }
        (
            acknowledged,
            acknowledged as f64 / started.elapsed().as_secs_f64(),
        )
    };
    run(Duration::from_millis(500)).await;
    let cpu = report.cpu_meter();
    let (published, rate) = run(scale.duration(8)).await;
    let scenario = "raw_publish_pipelined_small";
    report.cpu(&format!("{scenario}_cpu"), cpu, published, "us/event");
    report.add(scenario, "events_per_s", rate, "events/s");
}
