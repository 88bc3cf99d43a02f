//! Chaos on a three-node cluster: two gateway processes, producers that retry each request
//! until it is answered, tailers that resume from their last seq, a checker that appends
//! through one gateway and states the seq it just got through the other, and faults in turn
//! (the stream leader killed, a follower frozen, a gateway killed, quorum lost, every node
//! killed at once). Afterwards every session is read back and held to the promise: each
//! acknowledged `(producer_id, producer_seq)` stored exactly once at its acknowledged seq,
//! seqs exactly 1..N, every tailer saw exactly the log, no 500, no stale answer.
//!
//! The gateways run with three shards: `chaos-0` is placed on shard 2, `chaos-1` and `chaos-2`
//! on shard 0 (the stream whose leader the faults aim at) and the checker's `chaos-3` on shard
//! 1, so every guarantee is held on each shard while the others' leaders may be elsewhere.
//!
//! One scenario whose clients, faults and checks share one record, so it stays in one file.
// The figures are the test's report (`.config/nextest.toml` shows them on success too).
#![allow(clippy::print_stdout)]

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use starcite_tests::{GatewayProcess, TestCluster, event, path_segment};
use tokio_tungstenite::tungstenite::Message;

const EVENTS: &str = "STARCITE_EVENTS";
const SESSIONS: usize = 3;
const PRODUCERS_PER_SESSION: usize = 3;
const NATS_TIMEOUT: Duration = Duration::from_secs(2);
/// A request not answered by then hung: every request must end within the NATS timeout and
/// a margin (a queued request may wait for one commit ahead of it).
const HANG: Duration = Duration::from_secs(7);

/// What the clients saw, shared by every task.
#[derive(Default)]
struct Record {
    /// `(session, producer_id, producer_seq) -> seq`.
    acks: HashMap<(String, String, u64), u64>,
    ack_times: Vec<Instant>,
    /// Failed attempts by status (`timeout`, `connect`, `503`…).
    failures: BTreeMap<String, u64>,
    /// Answers that break the promise.
    wrong: Vec<String>,
}

struct Chaos {
    gateways: RwLock<Vec<String>>,
    http: reqwest::Client,
    record: Mutex<Record>,
    stop: AtomicBool,
}

impl Chaos {
    fn gateway(&self, pick: usize) -> String {
        let gateways = self.gateways.read().unwrap();
        gateways[pick % gateways.len()].clone()
    }

    fn failed(&self, what: String) {
        *self
            .record
            .lock()
            .unwrap()
            .failures
            .entry(what)
            .or_default() += 1;
    }

    fn wrong(&self, what: String) {
        self.record.lock().unwrap().wrong.push(what);
    }

    /// Posts an append; `Err` is a failed attempt worth retrying, already counted.
    async fn append(&self, gateway: &str, session: &str, body: &Value) -> Result<Value, u16> {
        let url = format!("{gateway}/v1/sessions/{}/append", path_segment(session));
        let started = Instant::now();
        let response = match self.http.post(url).json(body).send().await {
            Ok(response) => response,
            Err(err) if err.is_timeout() => {
                self.wrong(format!("an append hung for {:?}", started.elapsed()));
                self.failed("timeout".into());
                return Err(0);
            }
            Err(_) => {
                self.failed("connect".into());
                return Err(0);
            }
        };
        let status = response.status().as_u16();
        let reply: Value = response.json().await.unwrap_or(Value::Null);
        match status {
            201 => Ok(reply),
            503 => {
                self.failed(format!("503 {}", reply["error"].as_str().unwrap_or("?")));
                Err(503)
            }
            409 => Err(409),
            _ => {
                self.wrong(format!("append answered {status} {reply}"));
                self.failed(status.to_string());
                Err(status)
            }
        }
    }

    fn acked(&self, session: &str, producer: &str, producer_seq: u64, seq: u64) {
        let mut record = self.record.lock().unwrap();
        record
            .acks
            .insert((session.to_owned(), producer.to_owned(), producer_seq), seq);
        record.ack_times.push(Instant::now());
    }
}

/// Sends requests one after another, each retried as it is until answered.
async fn produce(chaos: Arc<Chaos>, session: String, producer: String) {
    let mut producer_seq = 0;
    while !chaos.stop.load(Ordering::Acquire) {
        producer_seq += 1;
        let body = event(&producer, producer_seq);
        for attempt in 0.. {
            let gateway = chaos.gateway(attempt + producer_seq as usize);
            match chaos.append(&gateway, &session, &body).await {
                Ok(reply) => {
                    if reply["deduped"] == true && attempt == 0 {
                        chaos.wrong(format!(
                            "{producer}#{producer_seq}: deduped on its first attempt"
                        ));
                    }
                    let seq = reply["seq"].as_u64().unwrap();
                    chaos.acked(&session, &producer, producer_seq, seq);
                    break;
                }
                Err(409) => {
                    chaos.wrong(format!(
                        "{producer}#{producer_seq}: 409 for a retried request"
                    ));
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

/// Appends through one gateway, then through the other with `expected_seq` set to the seq it
/// was just answered: a stale read of the log refuses it.
async fn check_expected_seqs(chaos: Arc<Chaos>, session: String) {
    let mut last = 0;
    let mut producer_seq = 0;
    while !chaos.stop.load(Ordering::Acquire) {
        producer_seq += 1;
        let mut body = event("checker", producer_seq);
        body["expected_seq"] = json!(last);
        let mut unsure = false;
        for attempt in 0.. {
            let gateway = chaos.gateway(producer_seq as usize + attempt);
            match chaos.append(&gateway, &session, &body).await {
                Ok(reply) => {
                    let seq = reply["seq"].as_u64().unwrap();
                    if seq != last + 1 {
                        chaos.wrong(format!("checker: expected seq {} got {seq}", last + 1));
                    }
                    last = seq;
                    break;
                }
                // An earlier attempt may have landed: the session then moved past `last` by
                // exactly this event, which the read-back verifies.
                Err(409) if unsure => {
                    last += 1;
                    break;
                }
                Err(409) => {
                    chaos.wrong(format!(
                        "checker: expected_seq {last} refused, a stale read"
                    ));
                    return;
                }
                Err(_) => {
                    unsure = true;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        chaos.acked(&session, "checker", producer_seq, last);
    }
}

/// Follows a session from its last seq through whichever gateway answers, resuming after
/// every close; returns every seq it received.
async fn tail(chaos: Arc<Chaos>, session: String, stop_at: Arc<Mutex<Option<u64>>>) -> Vec<u64> {
    let mut seqs: Vec<u64> = Vec::new();
    for attempt in 0usize.. {
        if reached(&stop_at, &seqs) {
            return seqs;
        }
        let cursor = seqs.last().copied().unwrap_or(0);
        let gateway = chaos.gateway(attempt).replacen("http", "ws", 1);
        let url = format!(
            "{gateway}/v1/sessions/{}/tail?cursor={cursor}",
            path_segment(&session)
        );
        let Ok((mut socket, _)) = tokio_tungstenite::connect_async(&url).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        loop {
            match tokio::time::timeout(Duration::from_millis(500), socket.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => {
                    let frame: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    if let Some(seq) = frame["seq"].as_u64() {
                        seqs.push(seq);
                    }
                }
                // Pings, or quiet: see whether the end was reached, and wait on.
                Ok(Some(Ok(_))) | Err(_) => {}
                // Closed or broken: resume from the last seq.
                Ok(_) => break,
            }
            if reached(&stop_at, &seqs) {
                return seqs;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seqs
}

/// Whether the tailer has every event of the finished log.
fn reached(stop_at: &Mutex<Option<u64>>, seqs: &[u64]) -> bool {
    let last = seqs.last().copied().unwrap_or(0);
    stop_at.lock().unwrap().is_some_and(|end| last >= end)
}

/// Every event of a session, read back in pages; a 503 (the cluster still settling) is
/// retried like a client would.
async fn read_back(chaos: &Chaos, session: &str) -> Vec<Value> {
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let url = format!(
            "{}/v1/sessions/{}/events?cursor={}&limit=1000",
            chaos.gateway(0),
            path_segment(session),
            events.len()
        );
        let response = chaos.http.get(url).send().await.unwrap();
        let status = response.status().as_u16();
        let page: Value = response.json().await.unwrap();
        if status == 503 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        assert_eq!(status, 200, "reading {session} back: {page}");
        let batch = page["events"].as_array().unwrap().clone();
        if batch.is_empty() {
            return events;
        }
        events.extend(batch);
    }
}

/// Waits until an append is acknowledged after `since`; returns how long that took.
async fn first_ack_after(chaos: &Chaos, since: Instant) -> Duration {
    let deadline = since + Duration::from_secs(40);
    loop {
        if chaos
            .record
            .lock()
            .unwrap()
            .ack_times
            .iter()
            .any(|at| *at > since)
        {
            return since.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "appends did not resume within 40 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The longest time without an acknowledgement from `from` until `until`.
fn longest_silence(ack_times: &[Instant], from: Instant, until: Instant) -> Duration {
    let mut longest = Duration::ZERO;
    let mut previous = from;
    for at in ack_times.iter().filter(|at| **at > from && **at <= until) {
        longest = longest.max(at.duration_since(previous));
        previous = *at;
    }
    longest.max(until.saturating_duration_since(previous))
}

async fn start_gateway(urls: &str, shards: &str) -> GatewayProcess {
    let binary = Path::new(env!("CARGO_BIN_EXE_starcite-e2e"));
    let timeout = format!("{}s", NATS_TIMEOUT.as_secs());
    let env = [
        ("STARCITE_STREAM_REPLICAS", "3"),
        ("STARCITE_STREAM_SHARDS", shards),
        ("STARCITE_NATS_TIMEOUT", timeout.as_str()),
    ];
    GatewayProcess::start_on(binary, urls, &env).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_every_fault_exactly_once() {
    survive_every_fault("1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_on_three_shards_survive_every_fault_exactly_once() {
    survive_every_fault("3").await;
}

/// Producers, tailers and two gateway processes through node, gateway and quorum failures,
/// with the sessions spread over `shards` event streams.
async fn survive_every_fault(shards: &str) {
    let mut cluster = TestCluster::start().await;
    let urls = cluster.urls().join(",");
    let mut gateways = [
        start_gateway(&urls, shards).await,
        start_gateway(&urls, shards).await,
    ];
    let chaos = Arc::new(Chaos {
        gateways: RwLock::new(gateways.iter().map(|g| g.base_url.clone()).collect()),
        http: reqwest::Client::builder().timeout(HANG).build().unwrap(),
        record: Mutex::default(),
        stop: AtomicBool::new(false),
    });
    let mut sessions = Vec::new();
    for index in 0..=SESSIONS {
        let url = format!("{}/v1/sessions", chaos.gateway(0));
        let reply = chaos
            .http
            .post(url)
            .json(&json!({"id": format!("chaos-{index}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 201);
        sessions.push(format!("chaos-{index}"));
    }
    let checker_session = sessions.pop().unwrap();
    let mut producers = Vec::new();
    for session in &sessions {
        for producer in 0..PRODUCERS_PER_SESSION {
            let name = format!("{session}-p{producer}");
            producers.push(tokio::spawn(produce(chaos.clone(), session.clone(), name)));
        }
    }
    producers.push(tokio::spawn(check_expected_seqs(
        chaos.clone(),
        checker_session.clone(),
    )));
    let mut tailers = Vec::new();
    let ends: Vec<Arc<Mutex<Option<u64>>>> = sessions.iter().map(|_| Arc::default()).collect();
    for (session, end) in sessions.iter().zip(&ends) {
        tailers.push(tokio::spawn(tail(
            chaos.clone(),
            session.clone(),
            end.clone(),
        )));
    }

    let mut faults: Vec<(&str, Instant, Duration)> = Vec::new();
    tokio::time::sleep(Duration::from_secs(2)).await;

    let started = Instant::now();
    let leader = cluster.stream_leader(EVENTS).await;
    cluster.kill(leader);
    let resumed = first_ack_after(&chaos, started).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.restart(leader);
    faults.push(("stream leader killed", started, resumed));
    tokio::time::sleep(Duration::from_secs(2)).await;

    let started = Instant::now();
    let follower = cluster.stream_followers(EVENTS).await[0];
    cluster.pause(follower);
    let resumed = first_ack_after(&chaos, started).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.resume(follower);
    faults.push(("a follower frozen for 3 s", started, resumed));
    tokio::time::sleep(Duration::from_secs(2)).await;

    let started = Instant::now();
    gateways[1].kill();
    let resumed = first_ack_after(&chaos, started).await;
    gateways[1] = start_gateway(&urls, shards).await;
    chaos.gateways.write().unwrap()[1] = gateways[1].base_url.clone();
    faults.push(("a gateway killed and replaced", started, resumed));
    tokio::time::sleep(Duration::from_secs(2)).await;

    let started = Instant::now();
    let leader = cluster.stream_leader(EVENTS).await;
    let others: Vec<usize> = (0..cluster.size()).filter(|node| *node != leader).collect();
    cluster.kill(others[0]);
    cluster.kill(others[1]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.restart(others[0]);
    cluster.restart(others[1]);
    let resumed = first_ack_after(&chaos, started).await;
    faults.push(("quorum lost for 3 s", started, resumed));
    tokio::time::sleep(Duration::from_secs(2)).await;

    let started = Instant::now();
    for node in 0..cluster.size() {
        cluster.kill(node);
    }
    for node in 0..cluster.size() {
        cluster.restart(node);
    }
    let resumed = first_ack_after(&chaos, started).await;
    faults.push(("every node killed and restarted", started, resumed));
    tokio::time::sleep(Duration::from_secs(2)).await;

    chaos.stop.store(true, Ordering::Release);
    let ended = Instant::now();
    for producer in producers {
        tokio::time::timeout(Duration::from_secs(30), producer)
            .await
            .expect("a producer never got its last request answered")
            .unwrap();
    }

    let mut logs = HashMap::new();
    for (session, end) in sessions.iter().zip(&ends) {
        let log = read_back(&chaos, session).await;
        *end.lock().unwrap() = Some(log.len() as u64);
        logs.insert(session.clone(), log);
    }
    let checker_log = read_back(&chaos, &checker_session).await;
    let mut seen = Vec::new();
    for tailer in tailers {
        seen.push(
            tokio::time::timeout(Duration::from_secs(30), tailer)
                .await
                .expect("a tailer never caught up")
                .unwrap(),
        );
    }

    let mut record = chaos.record.lock().unwrap();
    record.ack_times.sort_unstable();
    println!("chaos: {} appends acknowledged", record.acks.len());
    println!("chaos: failed attempts by status: {:?}", record.failures);
    let mut until = faults
        .iter()
        .skip(1)
        .map(|(_, at, _)| *at)
        .collect::<Vec<_>>();
    until.push(ended);
    for ((what, at, resumed), until) in faults.iter().zip(until) {
        let silence = longest_silence(&record.ack_times, *at, until);
        println!(
            "chaos: {what}: first acknowledgement after {resumed:?}, longest stretch without one {silence:?}"
        );
    }
    assert!(
        record.wrong.is_empty(),
        "wrong answers: {:#?}",
        record.wrong
    );

    for (session, tailer_seqs) in sessions.iter().zip(seen) {
        let log = &logs[session];
        let seqs: Vec<u64> = log
            .iter()
            .map(|event| event["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(
            seqs,
            (1..=log.len() as u64).collect::<Vec<_>>(),
            "{session}: seqs are not 1..N"
        );
        let mut stored = HashMap::new();
        for event in log {
            let key = (
                session.clone(),
                event["producer_id"].as_str().unwrap().to_owned(),
                event["producer_seq"].as_u64().unwrap(),
            );
            let seq = event["seq"].as_u64().unwrap();
            assert!(
                stored.insert(key.clone(), seq).is_none(),
                "{key:?} stored twice"
            );
        }
        for (key, seq) in record.acks.iter().filter(|(key, _)| key.0 == *session) {
            assert_eq!(stored.get(key), Some(seq), "{key:?} acknowledged at {seq}");
        }
        assert_eq!(tailer_seqs, seqs, "{session}: the tailer saw another log");
    }
    // The checker's log: exactly its own requests, in order, each acknowledged where stored.
    for (index, event) in checker_log.iter().enumerate() {
        assert_eq!(event["seq"], json!(index + 1));
        assert_eq!(event["producer_seq"], json!(index + 1));
        let key = (
            checker_session.clone(),
            "checker".to_owned(),
            index as u64 + 1,
        );
        if let Some(seq) = record.acks.get(&key) {
            assert_eq!(
                *seq,
                index as u64 + 1,
                "checker #{} acknowledged elsewhere",
                index + 1
            );
        }
    }
    assert!(
        record.acks.len() > 100,
        "too little traffic to judge: {}",
        record.acks.len()
    );
}
