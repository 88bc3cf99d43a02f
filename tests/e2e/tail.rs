//! Tailing: replay then live on one socket, resuming from a cursor, and pre-upgrade errors.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;
use starcite_tests::{TailFrame, TestGateway, TestNats, error_of, event, eventually, path_segment};

async fn append_n(
    gateway: &TestGateway,
    id: &str,
    producer: &str,
    range: std::ops::RangeInclusive<u64>,
) {
    for producer_seq in range {
        gateway.append_ok(id, event(producer, producer_seq)).await;
    }
}

#[tokio::test]
async fn replay_then_live_on_one_socket() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let id = gateway.create_session().await;
    append_n(&gateway, &id, "p", 1..=5).await;
    let mut tail = gateway.tail(&id, 0).await;
    assert_eq!(tail.seqs(5).await, vec![1, 2, 3, 4, 5]);
    append_n(&gateway, &id, "p", 6..=8).await;
    assert_eq!(tail.seqs(3).await, vec![6, 7, 8]);
    tail.expect_no_event(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn appends_during_replay_are_neither_lost_nor_repeated() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let id = gateway.create_session().await;
    append_n(&gateway, &id, "p", 1..=300).await;
    let mut tail = gateway.tail(&id, 0).await;
    let writer = async { append_n(&gateway, &id, "q", 1..=100).await };
    let reader = tail.seqs(400);
    let ((), seqs) = tokio::join!(writer, reader);
    assert_eq!(seqs, (1..=400).collect::<Vec<_>>());
    tail.expect_no_event(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn reconnecting_with_the_last_seen_seq_continues_exactly() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let id = gateway.create_session().await;
    append_n(&gateway, &id, "p", 1..=10).await;
    let mut tail = gateway.tail(&id, 0).await;
    let seen = tail.seqs(4).await;
    drop(tail);
    append_n(&gateway, &id, "p", 11..=12).await;
    let mut resumed = gateway.tail(&id, *seen.last().unwrap()).await;
    assert_eq!(resumed.seqs(8).await, (5..=12).collect::<Vec<_>>());
    resumed.expect_no_event(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn replays_are_byte_identical() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let id = gateway.create_session().await;
    let mut live = gateway.tail(&id, 0).await;
    append_n(&gateway, &id, "p", 1..=3).await;
    let mut first = Vec::new();
    for _ in 0..3 {
        first.push(live.raw_frame(Duration::from_secs(5)).await.1.unwrap());
    }
    // No wait needed: each append was answered only once stored, so the replay finds all three.
    let mut replay = gateway.tail(&id, 0).await;
    for text in &first {
        assert_eq!(
            replay.raw_frame(Duration::from_secs(5)).await.1.as_ref(),
            Some(text)
        );
    }
    let event: Value = serde_json::from_str(&first[0]).unwrap();
    assert!(event["inserted_at"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn a_cursor_beyond_the_head_gets_resume_invalidated_then_continues_from_the_head() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let id = gateway.create_session().await;
    append_n(&gateway, &id, "p", 1..=2).await;
    let mut tail = gateway.tail(&id, 4).await;
    let gap = tail.event().await;
    assert_eq!(
        gap,
        serde_json::json!({"type": "gap", "reason": "resume_invalidated", "from_cursor": 4,
                           "next_cursor": 2, "earliest_available_cursor": 0, "committed_cursor": 2})
    );
    tail.expect_no_event(Duration::from_millis(100)).await;
    append_n(&gateway, &id, "p", 3..=4).await;
    assert_eq!(tail.seqs(2).await, vec![3, 4]);

    let mut at_head = gateway.tail(&id, 4).await;
    at_head.expect_no_event(Duration::from_millis(100)).await;
    append_n(&gateway, &id, "p", 5..=5).await;
    assert_eq!(at_head.seqs(1).await, vec![5]);
}

#[tokio::test]
async fn a_cursor_in_the_middle_of_an_interleaved_stream_resumes_exactly() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let sessions = [
        gateway.create_session().await,
        gateway.create_session().await,
        gateway.create_session().await,
    ];
    for producer_seq in 1..=60 {
        for id in &sessions {
            gateway.append_ok(id, event("p", producer_seq)).await;
        }
    }
    for cursor in [0, 1, 17, 30, 59, 60] {
        let mut tail = gateway.tail(&sessions[1], cursor).await;
        let expected: Vec<u64> = (cursor + 1..=60).collect();
        assert_eq!(tail.seqs(expected.len()).await, expected, "cursor {cursor}");
        tail.expect_no_event(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn several_tailers_see_the_identical_order() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let id = gateway.create_session().await;
    let mut tails = Vec::new();
    for cursor in [0, 0, 0] {
        tails.push(gateway.tail(&id, cursor).await);
    }
    let writers = (0..4).map(|writer| {
        let gateway = &gateway;
        let id = &id;
        async move { append_n(gateway, id, &format!("w{writer}"), 1..=25).await }
    });
    futures::future::join_all(writers).await;
    let mut orders = Vec::new();
    for tail in &mut tails {
        let mut order = Vec::new();
        for _ in 0..100 {
            let event = tail.event().await;
            order.push((
                event["seq"].as_u64().unwrap(),
                event["producer_id"].clone(),
                event["producer_seq"].clone(),
            ));
        }
        orders.push(order);
    }
    assert_eq!(
        orders[0].iter().map(|e| e.0).collect::<Vec<_>>(),
        (1..=100).collect::<Vec<_>>()
    );
    assert_eq!(orders[0], orders[1]);
    assert_eq!(orders[1], orders[2]);
}

#[tokio::test]
async fn idle_tails_get_ping_frames_and_client_frames_are_ignored() {
    let nats = TestNats::start();
    let mut config = TestGateway::config(&nats);
    config.tail.ping_interval = Duration::from_millis(150);
    let gateway = TestGateway::start_with(config).await;
    let id = gateway.create_session().await;
    let mut tail = gateway.tail(&id, 0).await;
    assert_eq!(tail.frame(Duration::from_secs(5)).await, TailFrame::Ping);
    tail.send_text("hello?").await;
    append_n(&gateway, &id, "p", 1..=1).await;
    assert_eq!(tail.seqs(1).await, vec![1]);
}

/// A client that closes gets the closing handshake's answer, not a dropped connection, and
/// its tail stops counting as open.
#[tokio::test]
async fn a_client_close_is_answered_with_a_close() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let id = gateway.create_session().await;
    let mut tail = gateway.tail(&id, 0).await;
    append_n(&gateway, &id, "p", 1..=1).await;
    assert_eq!(tail.seqs(1).await, vec![1]);
    tail.close().await;
    assert_eq!(
        tail.frame(Duration::from_secs(5)).await,
        TailFrame::Closed(Some(1000))
    );
}

#[tokio::test]
async fn pre_upgrade_errors_are_plain_http_upgrade_then_cursor_then_session() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let id = gateway.create_session().await;
    let upgrade_get = |path: String| {
        gateway
            .client
            .get(format!("{}{path}", gateway.base_url))
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .send()
    };
    // A plain GET, even on an unknown session, is an upgrade error first.
    let plain = gateway
        .request(Method::GET, "/v1/sessions/nobody/tail", None)
        .await;
    assert_eq!(
        error_of(plain).await,
        (400, "invalid_websocket_upgrade".into())
    );
    for bad in ["bad", "-1", "1.5", "", "1x"] {
        let response = upgrade_get(format!("/v1/sessions/nobody/tail?cursor={bad}"))
            .await
            .unwrap();
        assert_eq!(
            error_of(response).await,
            (400, "invalid_cursor".into()),
            "cursor {bad:?}"
        );
    }
    let response = upgrade_get("/v1/sessions/nobody/tail?cursor=0".into())
        .await
        .unwrap();
    assert_eq!(error_of(response).await, (404, "session_not_found".into()));
    let response = upgrade_get(format!("/v1/sessions/{}/tail", path_segment(&id)))
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
}

#[tokio::test]
async fn the_stored_message_is_the_tail_frame_byte_for_byte() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    gateway
        .create_session_with(serde_json::json!({"id": "a.b c"}))
        .await;
    gateway.append_ok("a.b c", event("p", 1)).await;
    let mut tail = gateway.tail("a.b c", 0).await;
    let (_, frame) = tail.raw_frame(Duration::from_secs(5)).await;
    let stream = nats
        .jetstream()
        .await
        .get_stream("STARCITE_EVENTS")
        .await
        .unwrap();
    let stored = stream
        .get_last_raw_message_by_subject("starcite.events.a=2Eb=20c")
        .await
        .unwrap();
    assert_eq!(
        std::str::from_utf8(&stored.payload).unwrap(),
        frame.unwrap()
    );
    assert!(
        stored.headers.get("Nats-Msg-Id").is_some(),
        "appends carry a Nats-Msg-Id"
    );
    assert_eq!(stored.headers.get("Starcite-Seq").unwrap().as_str(), "1");
}

/// Live tails share one feed per session and hold no consumer: the one a replay used is gone
/// once the tail is live, so open tails never pile consumers up on the stream.
#[tokio::test]
async fn live_tails_hold_no_consumers() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let id = gateway.create_session().await;
    gateway.append_ok(&id, event("p", 1)).await;
    let mut tails = Vec::new();
    for _ in 0..5 {
        let mut tail = gateway.tail(&id, 0).await;
        tail.seqs(1).await;
        tails.push(tail);
    }
    let jetstream = nats.jetstream().await;
    let consumers = || async {
        let mut stream = jetstream.get_stream("STARCITE_EVENTS").await.unwrap();
        stream.info().await.unwrap().state.consumer_count
    };
    // The server alone would keep a replay's consumer for 30 s.
    eventually(Duration::from_secs(10), || async {
        match consumers().await {
            0 => Ok(()),
            left => Err(format!("consumers left behind: {left}")),
        }
    })
    .await;
    gateway.append_ok(&id, event("p", 2)).await;
    for tail in &mut tails {
        assert_eq!(tail.seqs(1).await, vec![2]);
    }
    assert_eq!(consumers().await, 0);
}
