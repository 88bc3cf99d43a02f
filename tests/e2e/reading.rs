//! Every way to read: HTTP pages (with long-poll), SSE, batched WebSocket frames, retention
//! gaps, slow readers, and shutdown.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use starcite_tests::{
    GatewayProcess, SseClient, SseFrame, TailClient, TailFrame, TestGateway, TestNats, event,
};

async fn page(gateway: &TestGateway, id: &str, query: &str) -> Value {
    let path = format!("/v1/sessions/{id}/events{query}");
    gateway
        .expect(gateway.request(Method::GET, &path, None).await, 200)
        .await
}

fn seqs(page: &Value) -> Vec<u64> {
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["seq"].as_u64().unwrap())
        .collect()
}

/// Appends `count` events through 8 concurrent producers.
async fn fill(gateway: &TestGateway, id: &str, count: u64, payload_bytes: usize) {
    let producers = (0..8u64).map(|producer| async move {
        for producer_seq in 1..=count.div_ceil(8) {
            if (producer_seq - 1) * 8 + producer >= count {
                break;
            }
            let mut body = event(&format!("p{producer}"), producer_seq);
            body["payload"]["blob"] = json!("x".repeat(payload_bytes));
            gateway.append_ok(id, body).await;
        }
    });
    futures::future::join_all(producers).await;
}

#[tokio::test]
async fn pages_walk_a_2500_event_session_exactly_once() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let id = gateway.create_session().await;
    fill(&gateway, &id, 2500, 0).await;
    let mut cursor = 0;
    let mut seen = Vec::new();
    loop {
        let page = page(&gateway, &id, &format!("?cursor={cursor}&limit=97")).await;
        assert_eq!(page["last_seq"], 2500);
        assert!(page.get("gap").is_none());
        seen.extend(seqs(&page));
        cursor = page["next_cursor"].as_u64().unwrap();
        if page["caught_up"] == true {
            break;
        }
    }
    assert_eq!(seen, (1..=2500).collect::<Vec<_>>());
    let default = page(&gateway, &id, "").await;
    assert_eq!(seqs(&default).len(), 100);
    let full = page(&gateway, &id, "?cursor=100&limit=1000").await;
    assert_eq!(seqs(&full), (101..=1100).collect::<Vec<_>>());
    for bad in [
        "?limit=0",
        "?limit=1001",
        "?cursor=-1",
        "?wait=61",
        "?wait=x",
    ] {
        let response = gateway
            .request(Method::GET, &format!("/v1/sessions/{id}/events{bad}"), None)
            .await;
        assert_eq!(response.status(), 400, "{bad}");
    }
}

#[tokio::test]
async fn long_poll_returns_early_when_an_event_arrives_and_on_time_when_none_does() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let id = gateway.create_session().await;
    gateway.append_ok(&id, event("p", 1)).await;

    // The append is made only once the poll has subscribed to the session's live events,
    // which it does after its first read came back empty: the event can reach it only by
    // waking it. Were the wake-up broken, the poll would answer nothing after 30 s.
    let started = Instant::now();
    let waiting = page(&gateway, &id, "?cursor=1&wait=30");
    let writer = async {
        nats.wait_for_subscription(&format!("starcite.events_live.{id}"))
            .await;
        gateway.append_ok(&id, event("p", 2)).await;
    };
    let (arrived, ()) = tokio::join!(waiting, writer);
    assert_eq!(seqs(&arrived), vec![2]);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );

    let started = Instant::now();
    let quiet = page(&gateway, &id, "?cursor=2&wait=1").await;
    let waited = started.elapsed();
    assert!(seqs(&quiet).is_empty());
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
}

#[tokio::test]
async fn sse_replays_then_streams_live_and_resumes_from_last_event_id() {
    let nats = TestNats::start();
    let mut config = TestGateway::config(&nats);
    config.tail.ping_interval = Duration::from_millis(200);
    let gateway = TestGateway::start_with(config).await;
    let id = gateway.create_session().await;
    for producer_seq in 1..=3 {
        gateway.append_ok(&id, event("p", producer_seq)).await;
    }
    let url = format!("{}/v1/sessions/{id}/tail", gateway.base_url);
    let mut stream = SseClient::connect(&gateway.client, &url, None).await;
    for expected in 1..=3u64 {
        let (event_id, data) = stream.event().await;
        assert_eq!(
            (event_id, data["seq"].as_u64()),
            (expected.to_string(), Some(expected))
        );
    }
    gateway.append_ok(&id, event("p", 4)).await;
    assert_eq!(stream.event().await.0, "4");
    // Idle: comment heartbeats keep proxies from closing the stream.
    assert!(matches!(
        stream.frame(Duration::from_secs(5)).await,
        SseFrame::Comment(_)
    ));
    drop(stream);

    for producer_seq in 5..=6 {
        gateway.append_ok(&id, event("p", producer_seq)).await;
    }
    // What EventSource sends on reconnect; it wins over the URL's cursor.
    let mut resumed =
        SseClient::connect(&gateway.client, &format!("{url}?cursor=0"), Some("4")).await;
    assert_eq!(resumed.event().await.0, "5");
    assert_eq!(resumed.event().await.0, "6");
}

#[tokio::test]
async fn batch_size_makes_frames_arrays_and_is_validated() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let id = gateway.create_session().await;
    for producer_seq in 1..=7 {
        gateway.append_ok(&id, event("p", producer_seq)).await;
    }
    let mut tail =
        TailClient::connect(&gateway.ws_url(&format!("/v1/sessions/{id}/tail?batch_size=3"))).await;
    let mut seen = Vec::new();
    let mut largest = 0;
    while seen.len() < 7 {
        let TailFrame::Event(Value::Array(frame)) = tail.frame(Duration::from_secs(5)).await else {
            panic!("with batch_size > 1 every frame is an array");
        };
        assert!(!frame.is_empty() && frame.len() <= 3, "{frame:?}");
        largest = largest.max(frame.len());
        seen.extend(frame.iter().map(|event| event["seq"].as_u64().unwrap()));
    }
    assert_eq!(seen, (1..=7).collect::<Vec<_>>());
    assert!(largest > 1, "replay should fill batches");
    gateway.append_ok(&id, event("p", 8)).await;
    let TailFrame::Event(live) = tail.frame(Duration::from_secs(5)).await else {
        panic!("no live frame")
    };
    assert_eq!(live[0]["seq"], 8);
    assert!(live.is_array());

    let mut single =
        TailClient::connect(&gateway.ws_url(&format!("/v1/sessions/{id}/tail?batch_size=1"))).await;
    assert!(single.event().await.is_object());

    for bad in ["0", "1001", "x", "-1", ""] {
        let response = gateway
            .client
            .get(format!(
                "{}/v1/sessions/{id}/tail?batch_size={bad}",
                gateway.base_url
            ))
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(
            gateway.expect(response, 400).await["error"],
            "invalid_tail_batch_size",
            "{bad}"
        );
    }
}

#[tokio::test]
async fn expired_cursors_get_a_gap_then_the_retained_events() {
    let nats = TestNats::start();
    let mut config = TestGateway::config(&nats);
    config.nats.retention_max_events_per_session = Some(5);
    let gateway = TestGateway::start_with(config.clone()).await;
    let id = gateway.create_session().await;
    for producer_seq in 1..=12 {
        gateway.append_ok(&id, event("p", producer_seq)).await;
    }
    let expected_gap = |from: u64| {
        json!({"type": "gap", "reason": "cursor_expired", "from_cursor": from, "next_cursor": 7,
               "earliest_available_cursor": 7, "committed_cursor": 12})
    };
    let mut tail = gateway.tail(&id, 2).await;
    assert_eq!(tail.event().await, expected_gap(2));
    assert_eq!(tail.seqs(5).await, vec![8, 9, 10, 11, 12]);
    // A cursor at the edge needs no gap.
    let mut edge = gateway.tail(&id, 7).await;
    assert_eq!(edge.seqs(1).await, vec![8]);

    let expired = page(&gateway, &id, "?cursor=0").await;
    let mut gap = expected_gap(0);
    gap.as_object_mut().unwrap().remove("type");
    assert_eq!(expired["gap"], gap);
    assert_eq!(seqs(&expired), vec![8, 9, 10, 11, 12]);
    let ahead = page(&gateway, &id, "?cursor=20").await;
    assert_eq!(ahead["gap"]["reason"], "resume_invalidated");
    assert_eq!(ahead["gap"]["next_cursor"], 12);
    assert!(seqs(&ahead).is_empty());

    let url = format!("{}/v1/sessions/{id}/tail?cursor=1", gateway.base_url);
    let mut stream = SseClient::connect(&gateway.client, &url, None).await;
    match stream.frame(Duration::from_secs(5)).await {
        SseFrame::Event { event, data, .. } => {
            assert_eq!(event.as_deref(), Some("gap"));
            assert_eq!(data["reason"], "cursor_expired");
        }
        other => panic!("expected a gap event, got {other:?}"),
    }
    assert_eq!(stream.event().await.0, "8");

    // A gateway that never saw the session still continues the seqs.
    let fresh = TestGateway::start_with(config).await;
    assert_eq!(fresh.append_ok(&id, event("q", 1)).await["seq"], 13);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_reading_is_cut_off_while_a_fast_one_gets_everything() {
    let nats = TestNats::start();
    let mut config = TestGateway::config(&nats);
    config.tail.buffer = 256;
    config.tail.stall_timeout = Duration::from_millis(1500);
    let gateway = TestGateway::start_with(config).await;
    let id = gateway.create_session().await;
    let mut slow = gateway.tail(&id, 0).await;
    let mut fast = gateway.tail(&id, 0).await;
    let total = 10_000u64;
    // 1 KiB events: far more than the socket buffers between the gateway and the slow reader.
    let writer = fill(&gateway, &id, total, 1024);
    let reader = async {
        let mut seqs = Vec::with_capacity(total as usize);
        while seqs.len() < total as usize {
            seqs.push(fast.event().await["seq"].as_u64().unwrap());
        }
        seqs
    };
    let ((), fast_seqs) = tokio::join!(writer, reader);
    assert_eq!(fast_seqs, (1..=total).collect::<Vec<_>>());

    // The slow reader now reads what was queued for it, then the close that cut it off.
    let (received, code) = slow.until_closed(Duration::from_secs(10)).await;
    let received: Vec<u64> = received
        .iter()
        .map(|event| event["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(code, Some(4002));
    assert!(
        (received.len() as u64) < total,
        "the gateway kept buffering for a reader that did not read"
    );
    assert_eq!(
        received,
        (1..=received.len() as u64).collect::<Vec<_>>(),
        "nothing skipped before the cut"
    );
    // It resumes from its cursor and misses nothing.
    let cursor = received.len() as u64;
    let mut resumed = gateway.tail(&id, cursor).await;
    let rest = resumed.seqs((total - cursor) as usize).await;
    assert_eq!(rest, (cursor + 1..=total).collect::<Vec<_>>());
}

#[tokio::test]
async fn sigterm_closes_tails_with_going_away_and_the_process_exits() {
    let nats = TestNats::start();
    let mut process = GatewayProcess::start(
        Path::new(env!("CARGO_BIN_EXE_starcite-e2e")),
        &nats,
        &[("STARCITE_SHUTDOWN_TIMEOUT", "5s")],
    )
    .await;
    let client = reqwest::Client::new();
    let base = &process.base_url;
    let address = &process.address;
    let created: Value = client
        .post(format!("{base}/v1/sessions"))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap();
    let mut tail = TailClient::connect(&format!("ws://{address}/v1/sessions/{id}/tail")).await;
    drop(client);

    let status = Command::new("kill")
        .args(["-TERM", &process.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        tail.frame(Duration::from_secs(10)).await,
        TailFrame::Closed(Some(1001))
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(exit) = process.try_wait() {
            let log = process.log();
            assert!(exit.success(), "exited with {exit}:\n{log}");
            break;
        }
        if Instant::now() > deadline {
            process.kill();
            panic!("the gateway did not exit after SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn retention_never_stalls_appends() {
    let nats = TestNats::start();
    let mut config = TestGateway::config(&nats);
    config.nats.retention_max_events_per_session = Some(3);
    let first = TestGateway::start_with(config.clone()).await;
    let id = first.create_session().await;
    first.append_ok(&id, event("p", 1)).await;
    fill(&first, &id, 99, 0).await;
    assert_eq!(first.last_seq(&id).await, 100);

    // A gateway new to the session rebuilds from the 3 events left, not the 100 it expects.
    let second = TestGateway::start_with(config).await;
    let started = Instant::now();
    assert_eq!(second.append_ok(&id, event("q", 1)).await["seq"], 101);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // p's only event expired, so the log has forgotten p: like an evicted producer it may
    // start again, and JetStream's memory of its old request id does not stand in the way.
    let again = second.append_ok(&id, event("p", 1)).await;
    assert_eq!(
        (again["seq"].as_u64(), again["deduped"].as_bool()),
        (Some(102), Some(false))
    );
    // Its newest request is retry-safe again.
    let retry = first.append_ok(&id, event("p", 1)).await;
    assert_eq!(
        (retry["seq"].as_u64(), retry["deduped"].as_bool()),
        (Some(102), Some(true))
    );
}
