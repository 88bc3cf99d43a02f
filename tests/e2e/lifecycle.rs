//! The lifecycle feed: session changes in order, replay then live, resumable by cursor.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use starcite_tests::{SseClient, SseFrame, TailClient, TestGateway, TestNats};

async fn make_changes(gateway: &TestGateway, id: &str) {
    gateway
        .create_session_with(json!({"id": id, "title": "t", "metadata": {"k": "v"}}))
        .await;
    // Archived twice: the second changes nothing and must not show in the feed.
    let changes = [
        (Method::PATCH, "", Some(json!({"title": "renamed"}))),
        (Method::POST, "/archive", None),
        (Method::POST, "/archive", None),
        (Method::POST, "/unarchive", None),
    ];
    for (method, action, body) in changes {
        let path = format!("/v1/sessions/{id}{action}");
        let response = gateway.request(method.clone(), &path, body).await;
        assert_eq!(response.status(), 200, "{method} {path}");
    }
}

fn kinds(frames: &[Value]) -> Vec<String> {
    frames
        .iter()
        .map(|frame| frame["event"]["kind"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_listener_connected_first_receives_every_change_in_order() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let mut listener = TailClient::connect(&gateway.ws_url("/v1/lifecycle")).await;
    make_changes(&gateway, "life").await;
    let mut frames = Vec::new();
    for _ in 0..4 {
        frames.push(listener.event().await);
    }
    assert_eq!(
        kinds(&frames),
        [
            "session.created",
            "session.updated",
            "session.archived",
            "session.unarchived"
        ]
    );
    let cursors: Vec<u64> = frames
        .iter()
        .map(|frame| frame["cursor"].as_u64().unwrap())
        .collect();
    assert!(
        cursors.windows(2).all(|pair| pair[0] < pair[1]),
        "{cursors:?}"
    );
    let created = &frames[0]["event"];
    assert_eq!(created["session_id"], "life");
    assert_eq!(created["title"], "t");
    assert_eq!(created["metadata"], json!({"k": "v"}));
    assert_eq!(created["version"], 1);
    assert!(created["created_at"].is_string());
    assert_eq!(frames[1]["event"]["title"], "renamed");
    assert_eq!(frames[1]["event"]["version"], 2);
    assert_eq!(frames[2]["event"]["archived"], true);
    // Re-archiving was a no-op: no event for it.
    assert_eq!(frames[3]["event"]["archived"], false);
    listener.expect_no_event(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_listener_that_reconnects_with_its_cursor_misses_nothing() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let mut listener = TailClient::connect(&gateway.ws_url("/v1/lifecycle?cursor=0")).await;
    gateway.create_session_with(json!({"id": "one"})).await;
    let first = listener.event().await;
    drop(listener);
    let cursor = first["cursor"].as_u64().unwrap();
    make_changes(&gateway, "two").await;
    let mut resumed =
        TailClient::connect(&gateway.ws_url(&format!("/v1/lifecycle?cursor={cursor}"))).await;
    let mut frames = Vec::new();
    for _ in 0..4 {
        frames.push(resumed.event().await);
    }
    assert!(
        frames
            .iter()
            .all(|frame| frame["event"]["session_id"] == "two")
    );
    assert_eq!(
        kinds(&frames),
        [
            "session.created",
            "session.updated",
            "session.archived",
            "session.unarchived"
        ]
    );
    resumed.expect_no_event(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn the_lifecycle_feed_is_also_server_sent_events_resumable_with_last_event_id() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let url = format!("{}/v1/lifecycle", gateway.base_url);
    let mut stream = SseClient::connect(&gateway.client, &url, None).await;
    gateway.create_session_with(json!({"id": "a"})).await;
    let (id, frame) = stream.event().await;
    assert_eq!(id, frame["cursor"].as_u64().unwrap().to_string());
    drop(stream);
    gateway.create_session_with(json!({"id": "b"})).await;
    let mut resumed = SseClient::connect(&gateway.client, &url, Some(&id)).await;
    let (_, frame) = resumed.event().await;
    assert_eq!(frame["event"]["session_id"], "b");
    assert!(matches!(
        resumed.frame(Duration::from_millis(200)).await,
        SseFrame::TimedOut | SseFrame::Comment(_)
    ));
}

#[tokio::test]
async fn lifecycle_needs_a_websocket_or_an_event_stream_and_a_valid_cursor() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let plain = gateway.request(Method::GET, "/v1/lifecycle", None).await;
    assert_eq!(
        gateway.expect(plain, 400).await["error"],
        "invalid_websocket_upgrade"
    );
    let bad = gateway
        .client
        .get(format!("{}/v1/lifecycle?cursor=x", gateway.base_url))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(gateway.expect(bad, 400).await["error"], "invalid_cursor");
}
