//! `make bench`: append and tail figures against a private nats-server on loopback.
//!
//! The gateway runs in this process and shares the machine's cores with NATS and the load
//! generator, so the figures are a floor for a dedicated deployment, not a ceiling.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod catalog;

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use starcite_tests::{TestGateway, TestNats};

/// A realistic event: a chat message of about 1 KiB.
fn event(producer_id: &str, producer_seq: u64) -> Value {
    json!({
        "type": "message",
        "payload": {"role": "assistant", "text": "x".repeat(900)},
        "actor": "agent:bench",
        "producer_id": producer_id,
        "producer_seq": producer_seq,
    })
}

struct Figures {
    latencies: Histogram<u64>,
    elapsed: Duration,
}

impl Figures {
    fn print(&self, name: &str) {
        let count = self.latencies.len();
        let micros = |quantile: f64| self.latencies.value_at_quantile(quantile);
        println!(
            "{name:<58} {count:>6} ops {:>9.0} ops/s   p50 {:>6} µs  p99 {:>6} µs  max {:>7} µs",
            count as f64 / self.elapsed.as_secs_f64(),
            micros(0.5),
            micros(0.99),
            self.latencies.max(),
        );
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap()
}

/// `writers` concurrent writers, each appending `per_writer` events to its session, spread
/// over `gateways` round-robin. `sessions` is one id per writer (repeat an id to contend).
async fn append_load(gateways: &[TestGateway], sessions: &[String], per_writer: u64) -> Figures {
    let started = Instant::now();
    let writers = sessions.iter().enumerate().map(|(writer, id)| async move {
        let mut latencies = histogram();
        for producer_seq in 1..=per_writer {
            let gateway = &gateways[(writer + producer_seq as usize) % gateways.len()];
            let sent = Instant::now();
            gateway
                .append_ok(id, event(&format!("w{writer}"), producer_seq))
                .await;
            latencies.record(sent.elapsed().as_micros() as u64).unwrap();
        }
        latencies
    });
    let mut latencies = histogram();
    for writer in futures::future::join_all(writers).await {
        latencies.add(writer).unwrap();
    }
    Figures {
        latencies,
        elapsed: started.elapsed(),
    }
}

#[tokio::main]
async fn main() {
    let only = std::env::args().nth(1).unwrap_or_default();
    if only != "catalog" {
        appends().await;
    }
    if only != "appends" {
        println!();
        catalog::run().await;
    }
}

/// `make bench` runs everything; `bench appends` or `bench catalog` runs one part.
async fn appends() {
    let nats = TestNats::start();
    let gateways = [
        TestGateway::start(&nats).await,
        TestGateway::start(&nats).await,
    ];
    println!("Starcite bench: nats-server on loopback, gateways in-process, ~1 KiB events\n");

    let one = gateways[0].create_session().await;
    append_load(&gateways[..1], std::slice::from_ref(&one), 200).await; // warm-up
    let one = vec![gateways[0].create_session().await];
    append_load(&gateways[..1], &one, 3000)
        .await
        .print("append, 1 writer, 1 session");

    let mut many = Vec::new();
    for _ in 0..32 {
        many.push(gateways[0].create_session().await);
    }
    append_load(&gateways[..1], &many, 200)
        .await
        .print("append, 32 writers, 32 sessions, 1 gateway");
    let mut many = Vec::new();
    for _ in 0..32 {
        many.push(gateways[0].create_session().await);
    }
    append_load(&gateways, &many, 200)
        .await
        .print("append, 32 writers, 32 sessions, 2 gateways");

    let shared = gateways[0].create_session().await;
    let contended = vec![shared.clone(); 8];
    append_load(&gateways[..1], &contended, 250)
        .await
        .print("append, 8 writers, 1 session, 1 gateway");
    let shared = gateways[0].create_session().await;
    let contended = vec![shared.clone(); 8];
    append_load(&gateways, &contended, 250)
        .await
        .print("append, 8 writers, 1 session, 2 gateways (contended)");

    // Live delivery: from sending the append to the tailer's frame.
    let live = gateways[0].create_session().await;
    let mut tail = gateways[1].tail(&live, 0).await;
    let mut latencies = histogram();
    let started = Instant::now();
    for producer_seq in 1..=1000 {
        let sent = Instant::now();
        gateways[0]
            .append_ok(&live, event("live", producer_seq))
            .await;
        tail.event().await;
        latencies.record(sent.elapsed().as_micros() as u64).unwrap();
    }
    Figures {
        latencies,
        elapsed: started.elapsed(),
    }
    .print("append -> tail frame on another gateway");

    // Replay of a long session, and the cold start of a gateway that has never seen it.
    let long = gateways[0].create_session().await;
    let writers: Vec<String> = (0..16).map(|_| long.clone()).collect();
    append_load(&gateways[..1], &writers, 1250).await;
    let started = Instant::now();
    let mut replay = gateways[1].tail(&long, 0).await;
    let seqs = replay.seqs(20_000).await;
    let elapsed = started.elapsed();
    assert_eq!(seqs.last(), Some(&20_000));
    println!(
        "{:<58} {:>6} events in {:>6.0} ms = {:>7.0} events/s",
        "tail replay of a 20,000-event session",
        seqs.len(),
        elapsed.as_secs_f64() * 1000.0,
        seqs.len() as f64 / elapsed.as_secs_f64()
    );
    let cold = TestGateway::start(&nats).await;
    let started = Instant::now();
    cold.append_ok(&long, event("cold", 1)).await;
    println!(
        "{:<58} {:>9.1} ms (rebuilds producer cursors from the stream)",
        "first append on a gateway new to a 20,000-event session",
        started.elapsed().as_secs_f64() * 1000.0
    );
    let started = Instant::now();
    let mut middle = cold.tail(&long, 12_345).await;
    middle.seqs(1).await;
    println!(
        "{:<58} {:>9.1} ms",
        "open a tail at cursor 12,345 and get its first event",
        started.elapsed().as_secs_f64() * 1000.0
    );
}
