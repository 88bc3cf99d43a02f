//! The stream or the bucket deleted under running gateways: they report it, create it again,
//! and never answer from what they had cached of the log that is gone.

use std::time::Duration;

use async_nats::jetstream::stream;
use serde_json::json;
use starcite_tests::{TestGateway, TestNats, event, ids_on};

const EVENTS: &str = "STARCITE_EVENTS";

/// Before: the stream was created only at start, so every append failed from then on while
/// `/health/ready` kept answering 200.
#[tokio::test]
async fn a_deleted_stream_is_reported_then_created_again() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let id = gateway.create_session().await;
    delete_and_recreate(&nats, &gateway, &id, EVENTS, "starcite.events.>").await;
}

/// The same for the stream of a later shard: the watcher keeps every shard in place.
#[tokio::test]
async fn a_deleted_shard_stream_is_reported_then_created_again() {
    let nats = TestNats::start();
    let mut config = TestGateway::config(&nats);
    config.nats.stream_shards = 3;
    let gateway = TestGateway::start_with(config).await;
    let id = ids_on("on-shard-2", 2, 3, 1).remove(0);
    gateway.create_session_with(json!({ "id": id })).await;
    let stream = format!("{EVENTS}_2");
    delete_and_recreate(&nats, &gateway, &id, &stream, "starcite.events_2.>").await;
}

/// Appends three events to `id`, deletes `stream` (holding `subjects`), and checks the gateway
/// reports it, refuses appends and ends tails while it is missing, then starts the session's
/// log over once the stream is back.
async fn delete_and_recreate(
    nats: &TestNats,
    gateway: &TestGateway,
    id: &str,
    stream: &str,
    subjects: &str,
) {
    for producer_seq in 1..=3 {
        gateway.append_ok(id, event("p", producer_seq)).await;
    }
    let mut tail = gateway.tail(id, 0).await;
    assert_eq!(tail.seqs(3).await, vec![1, 2, 3]);

    let jetstream = nats.jetstream().await;
    jetstream.delete_stream(stream).await.unwrap();
    // A stream on the same subjects keeps the gateway from creating its own meanwhile.
    let blocker = stream::Config {
        name: "BLOCKER".into(),
        subjects: vec![subjects.into()],
        ..Default::default()
    };
    jetstream.create_stream(blocker).await.unwrap();
    let body = gateway.wait_for_readiness(|status, _| status == 503).await;
    assert_eq!(body["reason"], "stream_missing");
    let refused = gateway.append(id, event("p", 4)).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    // The tail that read the old log is closed, so its client starts over.
    tail.until_closed(Duration::from_secs(10)).await;

    jetstream.delete_stream("BLOCKER").await.unwrap();
    gateway.wait_for_readiness(|status, _| status == 200).await;
    // The session's log starts over: the producer is unknown to it and may go on.
    let reply = gateway.append_ok(id, event("p", 4)).await;
    assert_eq!(
        (reply["seq"].clone(), reply["deduped"].clone()),
        (json!(1), json!(false))
    );
    let mut tail = gateway.tail(id, 0).await;
    assert_eq!(tail.seqs(1).await, vec![1]);
}

/// Before: a cached state whose position the new stream happened to reach again was taken
/// for the stream's: the producer's last request was answered `deduped` from the old log.
#[tokio::test]
async fn a_state_of_a_stream_created_anew_is_never_answered_from() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    gateway
        .create_session_with(json!({"id": "recreated"}))
        .await;
    for producer_seq in 1..=3 {
        gateway
            .append_ok("recreated", event("p", producer_seq))
            .await;
    }
    let jetstream = nats.jetstream().await;
    let mut events = jetstream.get_stream(EVENTS).await.unwrap();
    let config = events.info().await.unwrap().config.clone();
    jetstream.delete_stream(EVENTS).await.unwrap();
    jetstream.create_stream(config).await.unwrap();
    // The same positions, another producer's events.
    for seq in 1..=3u64 {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Starcite-Seq", seq.to_string().as_str());
        headers.insert("Starcite-Content-Hash", "00".repeat(32).as_str());
        let body = json!({
            "seq": seq, "type": "message", "payload": {}, "actor": "agent:other",
            "producer_id": "q", "producer_seq": seq,
        });
        jetstream
            .publish_with_headers(
                "starcite.events.recreated",
                headers,
                serde_json::to_vec(&body).unwrap().into(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    // `p`'s last request again: the log now holds no event of `p`.
    let reply = gateway.append_ok("recreated", event("p", 3)).await;
    assert_eq!(
        (reply["seq"].clone(), reply["deduped"].clone()),
        (json!(4), json!(false))
    );
}
