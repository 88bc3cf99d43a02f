//! The producer socket: pipelined appends answered in order with the exact answers of
//! `POST /append`, and a resume after a drop that stores every event exactly once. What it
//! refuses, and how it closes, is in `guards`.

mod guards;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use starcite_tests::{
    GatewayProcess, ProducerFrame, ProducerReplies, ProducerSender, TcpProxy, TestGateway,
    TestNats, connect_producer, event, path_segment, stored_events,
};

fn produce_url(base_url: &str, session_id: &str, producer_id: &str) -> String {
    format!(
        "{}/v1/sessions/{}/produce?producer_id={producer_id}",
        base_url.replacen("http", "ws", 1),
        path_segment(session_id)
    )
}

/// `events` events of `producer` from `first`, as frames: mostly single appends, every tenth
/// frame an array of three.
fn frames(producer: &str, first: u64, last: u64) -> Vec<Value> {
    let mut frames = Vec::new();
    let mut next = first;
    while next <= last {
        if frames.len() % 10 == 9 && next + 2 <= last {
            frames.push(json!([
                event(producer, next),
                event(producer, next + 1),
                event(producer, next + 2)
            ]));
            next += 3;
        } else {
            frames.push(event(producer, next));
            next += 1;
        }
    }
    frames
}

/// Each `(producer_seq, seq)` an answer carries, a single append's or an array's.
fn acknowledged(reply: &Value) -> Vec<(u64, u64)> {
    let one = |answer: &Value| {
        let producer_seq = answer["producer_seq"].as_u64();
        let seq = answer["seq"].as_u64();
        match (producer_seq, seq) {
            (Some(producer_seq), Some(seq)) => (producer_seq, seq),
            _ => panic!("not an acknowledgement: {reply}"),
        }
    };
    match reply["events"].as_array() {
        Some(events) => events.iter().map(one).collect(),
        None => vec![one(reply)],
    }
}

/// Sends every frame from a task of its own while reading answers, as a pipelining client
/// does, and returns the answers in the order they came.
async fn pipeline(
    mut sender: ProducerSender,
    replies: &mut ProducerReplies,
    frames: Vec<Value>,
) -> (ProducerSender, Vec<Value>) {
    let count = frames.len();
    let sending = tokio::spawn(async move {
        for frame in &frames {
            sender.send(frame).await.unwrap();
        }
        sender
    });
    let mut answers = Vec::with_capacity(count);
    for _ in 0..count {
        answers.push(replies.reply().await);
    }
    (sending.await.unwrap(), answers)
}

/// Every `(producer_seq, seq)` of `producer` stored in the session.
async fn stored(gateway: &TestGateway, session_id: &str, producer: &str) -> Vec<(u64, u64)> {
    stored_events(&gateway.base_url, session_id)
        .await
        .iter()
        .filter(|event| event["producer_id"] == producer)
        .map(|event| {
            (
                event["producer_seq"].as_u64().unwrap(),
                event["seq"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn ten_thousand_pipelined_events_get_seqs_in_order_and_tails_see_the_same() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let id = gateway.create_session().await;
    let mut tail = gateway.tail(&id, 0).await;
    let (sender, mut replies, ready) =
        connect_producer(&produce_url(&gateway.base_url, &id, "writer")).await;
    assert_eq!(
        ready,
        json!({"type": "ready", "producer_id": "writer", "producer_seq": null, "seq": null})
    );

    let (sender, answers) = pipeline(sender, &mut replies, frames("writer", 1, 10_000)).await;
    let seqs: Vec<(u64, u64)> = answers.iter().flat_map(acknowledged).collect();
    let expected: Vec<(u64, u64)> = (1..=10_000).map(|n| (n, n)).collect();
    assert_eq!(seqs, expected, "answers in order, seqs gapless");
    for answer in &answers {
        assert_eq!(answer["producer_id"], "writer", "{answer}");
        assert!(answer.get("error").is_none(), "{answer}");
    }
    let batch = answers
        .iter()
        .find(|answer| answer["events"].is_array())
        .unwrap();
    assert_eq!(batch["producer_seq"], batch["events"][2]["producer_seq"]);
    assert_eq!(batch["last_seq"], batch["events"][2]["seq"]);

    let tailed = tail.seqs(10_000).await;
    assert_eq!(tailed, (1..=10_000).collect::<Vec<_>>());
    sender.close().await;
    assert_eq!(gateway.last_seq(&id).await, 10_000);
}

#[tokio::test]
async fn a_retry_is_deduped_and_a_reopened_socket_says_where_the_producer_stands() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let id = gateway.create_session().await;
    let url = produce_url(&gateway.base_url, &id, "p");
    let (mut sender, mut replies, _) = connect_producer(&url).await;
    sender.send(&event("p", 1)).await.unwrap();
    sender.send(&event("p", 2)).await.unwrap();
    sender.send(&event("p", 2)).await.unwrap();
    let answers = [
        replies.reply().await,
        replies.reply().await,
        replies.reply().await,
    ];
    assert_eq!(
        answers.map(|answer| (answer["seq"].clone(), answer["deduped"].clone())),
        [
            (json!(1), json!(false)),
            (json!(2), json!(false)),
            (json!(2), json!(true))
        ]
    );
    let scraped = gateway.request(Method::GET, "/metrics", None).await;
    let scraped = scraped.text().await.unwrap();
    assert!(
        scraped
            .lines()
            .any(|line| line == "starcite_producer_sockets 1"),
        "{scraped}"
    );
    sender.close().await;
    let (_, _, ready) = connect_producer(&url).await;
    assert_eq!(
        ready,
        json!({"type": "ready", "producer_id": "p", "producer_seq": 2, "seq": 2})
    );
}

/// Resumes a producer the way a client should after a drop: what the `ready` frame says is
/// stored is read back, the rest is sent again.
async fn resume(
    gateway: &TestGateway,
    produce_url: &str,
    session_id: &str,
    total: u64,
    mut learned: BTreeMap<u64, u64>,
) -> BTreeMap<u64, u64> {
    let (sender, mut replies, ready) = connect_producer(produce_url).await;
    let stored_up_to = ready["producer_seq"].as_u64().unwrap_or(0);
    let answered_up_to = learned.keys().next_back().copied().unwrap_or(0);
    assert!(
        stored_up_to >= answered_up_to,
        "ready says {stored_up_to}, but {answered_up_to} was answered"
    );
    if stored_up_to < total {
        let (sender, answers) =
            pipeline(sender, &mut replies, frames("p", stored_up_to + 1, total)).await;
        learned.extend(answers.iter().flat_map(acknowledged));
        sender.close().await;
    }
    for (producer_seq, seq) in stored(gateway, session_id, "p").await {
        if producer_seq <= stored_up_to {
            learned.entry(producer_seq).or_insert(seq);
        }
    }
    learned
}

/// Sends `total` events and reads answers until `answered` have come, leaving the rest in
/// flight; returns what was learned.
async fn produce_until_cut(url: &str, total: u64, answered: usize) -> BTreeMap<u64, u64> {
    let (mut sender, mut replies, _) = connect_producer(url).await;
    let sending = tokio::spawn(async move {
        for frame in frames("p", 1, total) {
            // The link is cut under it: later sends fail, and that is expected.
            if sender.send(&frame).await.is_err() {
                return;
            }
        }
    });
    let mut learned = BTreeMap::new();
    while learned.len() < answered {
        learned.extend(acknowledged(&replies.reply().await));
    }
    drop(replies);
    sending.abort();
    learned
}

fn assert_each_stored_once(learned: &BTreeMap<u64, u64>, stored: &[(u64, u64)], total: u64) {
    let expected: Vec<(u64, u64)> = (1..=total).map(|n| (n, n)).collect();
    assert_eq!(stored, expected, "every event stored once, in order");
    let learned: Vec<(u64, u64)> = learned.iter().map(|(&a, &b)| (a, b)).collect();
    assert_eq!(learned, expected, "the client learned every seq");
}

#[tokio::test]
async fn a_cut_link_with_requests_in_flight_resumes_exactly() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let proxy = TcpProxy::start(gateway.base_url.trim_start_matches("http://")).await;
    let id = gateway.create_session().await;
    let proxied = proxy.url.replacen("nats://", "http://", 1);
    let url = produce_url(&proxied, &id, "p");
    let total = 3_000;
    let learned = produce_until_cut(&url, total, 300).await;
    proxy.cut();
    proxy.heal();
    let learned = resume(&gateway, &url, &id, total, learned).await;
    assert_each_stored_once(&learned, &stored(&gateway, &id, "p").await, total);
}

#[tokio::test]
async fn a_killed_gateway_with_requests_in_flight_resumes_exactly() {
    let nats = TestNats::start();
    let binary = Path::new(env!("CARGO_BIN_EXE_starcite-e2e"));
    let mut process = GatewayProcess::start(binary, &nats, &[]).await;
    let gateway = TestGateway::start(&nats).await;
    let id = gateway.create_session().await;
    let url = produce_url(&process.base_url, &id, "p");
    let total = 3_000;
    let learned = produce_until_cut(&url, total, 300).await;
    process.kill();
    process.restart().await;
    let url = produce_url(&process.base_url, &id, "p");
    let learned = resume(&gateway, &url, &id, total, learned).await;
    assert_each_stored_once(&learned, &stored(&gateway, &id, "p").await, total);
}

#[tokio::test]
async fn two_producers_on_two_gateways_stay_gapless_and_each_in_its_order() {
    let nats = TestNats::start();
    let first = TestGateway::start(&nats).await;
    let second = TestGateway::start(&nats).await;
    let id = first.create_session().await;
    let run = |gateway: &TestGateway, producer: &'static str| {
        let url = produce_url(&gateway.base_url, &id, producer);
        async move {
            let (sender, mut replies, _) = connect_producer(&url).await;
            let (_, answers) = pipeline(sender, &mut replies, frames(producer, 1, 2_000)).await;
            answers
                .iter()
                .flat_map(acknowledged)
                .collect::<Vec<(u64, u64)>>()
        }
    };
    let (a, b) = tokio::join!(run(&first, "a"), run(&second, "b"));
    for acks in [&a, &b] {
        let producer_seqs: Vec<u64> = acks.iter().map(|(producer_seq, _)| *producer_seq).collect();
        assert_eq!(producer_seqs, (1..=2_000).collect::<Vec<_>>());
        assert!(
            acks.windows(2).all(|pair| pair[0].1 < pair[1].1),
            "seqs rise in send order"
        );
    }
    let mut seqs: Vec<u64> = a.iter().chain(&b).map(|(_, seq)| *seq).collect();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (1..=4_000).collect::<Vec<_>>(),
        "gapless, each seq once"
    );
    assert_eq!(stored(&first, &id, "a").await, a);
    assert_eq!(stored(&second, &id, "b").await, b);
}

#[tokio::test]
async fn refusals_are_frames_with_their_codes_and_write_nothing() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let id = gateway.create_session().await;
    let (mut sender, mut replies, _) =
        connect_producer(&produce_url(&gateway.base_url, &id, "p")).await;
    let mut missing_type = event("p", 1);
    missing_type.as_object_mut().unwrap().remove("type");
    let mut expected_seq = event("p", 2);
    expected_seq["expected_seq"] = json!(7);
    let mut replayed = event("p", 2);
    replayed["payload"] = json!({"text": "other content"});
    // Within the frame limit, but over NATS's `max_payload` once stored with its headers.
    let mut too_large = event("q", 1);
    let filler = 1024 * 1024 - too_large.to_string().len() - 64;
    too_large["payload"]["text"] = json!("x".repeat(filler));
    let requests: Vec<(String, Option<(&str, Value)>)> = vec![
        ("{not json".into(), Some(("invalid_event", Value::Null))),
        (missing_type.to_string(), Some(("invalid_event", json!(1)))),
        (event("p", 1).to_string(), None),
        (
            event("p", 5).to_string(),
            Some(("producer_seq_conflict", json!(5))),
        ),
        (
            expected_seq.to_string(),
            Some(("expected_seq_conflict", json!(2))),
        ),
        (event("p", 2).to_string(), None),
        (
            replayed.to_string(),
            Some(("producer_replay_conflict", json!(2))),
        ),
        ("[]".into(), Some(("invalid_event", Value::Null))),
        (
            json!([event("p", 3), event("p", 9)]).to_string(),
            Some(("producer_seq_conflict", json!(9))),
        ),
        (event("p", 3).to_string(), None),
    ];
    for (text, _) in &requests {
        sender.send_text(text.clone()).await.unwrap();
    }
    for (text, refusal) in &requests {
        let answer = replies.reply().await;
        match refusal {
            None => assert!(answer["seq"].is_u64(), "{text} got {answer}"),
            Some((code, producer_seq)) => {
                assert_eq!(answer["error"], *code, "{text} got {answer}");
                assert!(answer["message"].is_string(), "{answer}");
                assert_eq!(answer["producer_seq"], *producer_seq, "{answer}");
            }
        }
    }
    // Too large for a NATS message: refused alone, and the socket goes on.
    sender.send(&too_large).await.unwrap();
    let answer = replies.reply().await;
    assert_eq!(answer["error"], "event_too_large", "{answer}");
    sender.send(&event("p", 4)).await.unwrap();
    assert_eq!(replies.reply().await["seq"], 4);
    assert_eq!(gateway.last_seq(&id).await, 4);
}

#[tokio::test]
async fn before_the_upgrade_errors_are_plain_http() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let id = gateway.create_session().await;
    let plain = gateway
        .request(Method::GET, &format!("/v1/sessions/{id}/produce"), None)
        .await;
    let body = gateway.expect(plain, 400).await;
    assert_eq!(body["error"], "invalid_websocket_upgrade");
    // With a producer id or without one, an unknown session is refused before the upgrade.
    let without_producer = gateway.ws_url("/v1/sessions/nope/produce");
    for url in [
        produce_url(&gateway.base_url, "nope", "p"),
        without_producer,
    ] {
        match tokio_tungstenite::connect_async(url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 404);
            }
            other => panic!("expected a 404, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn shutdown_answers_what_was_sent_then_closes_with_going_away() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let id = gateway.create_session().await;
    let (mut sender, mut replies, _) =
        connect_producer(&produce_url(&gateway.base_url, &id, "p")).await;
    sender.send(&event("p", 1)).await.unwrap();
    assert_eq!(replies.reply().await["seq"], 1);
    let stopping = tokio::spawn(gateway.stop());
    assert_eq!(
        replies.frame(Duration::from_secs(10)).await,
        ProducerFrame::Closed(Some(1001))
    );
    stopping.await.unwrap();
}
