//! Appending: validation, sequencing, producer dedupe and `expected_seq`.

use std::time::Duration;

use serde_json::{Value, json};
use starcite_tests::{TestGateway, TestNats, event};

async fn rejected(gateway: &TestGateway, session_id: &str, body: Value) -> (u16, Value) {
    let response = gateway.append(session_id, body).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn with(field: &str, value: Value) -> Value {
    let mut body = event("p", 1);
    body[field] = value;
    body
}

fn without(field: &str) -> Value {
    let mut body = event("p", 1);
    body.as_object_mut().unwrap().remove(field);
    body
}

#[tokio::test]
async fn every_invalid_body_is_a_400_with_its_code_and_writes_nothing() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let id = gateway.create_session().await;
    let cases = [
        (without("type"), "invalid_event"),
        (with("type", json!("")), "invalid_event"),
        (without("payload"), "invalid_event"),
        (with("payload", json!([1])), "invalid_event"),
        (with("payload", json!("text")), "invalid_event"),
        (with("payload", Value::Null), "invalid_event"),
        (without("actor"), "invalid_event"),
        (with("actor", json!(7)), "invalid_event"),
        (without("producer_id"), "invalid_event"),
        (with("producer_id", json!("")), "invalid_event"),
        (without("producer_seq"), "invalid_event"),
        (with("producer_seq", json!(0)), "invalid_event"),
        (with("producer_seq", json!(-1)), "invalid_event"),
        (with("producer_seq", json!(1.5)), "invalid_event"),
        (with("producer_seq", json!("3.0")), "invalid_event"),
        (with("producer_seq", json!("abc")), "invalid_event"),
        (with("producer_seq", json!(true)), "invalid_event"),
        (with("source", json!("")), "invalid_event"),
        (with("source", json!(1)), "invalid_event"),
        (with("metadata", json!([])), "invalid_metadata"),
        (with("metadata", json!("x")), "invalid_metadata"),
        (with("refs", json!(1)), "invalid_refs"),
        (with("refs", json!({"to_seq": -1})), "invalid_event"),
        (with("refs", json!({"to_seq": "x"})), "invalid_event"),
        (with("refs", json!({"step": 1.5})), "invalid_event"),
        (with("refs", json!({"request_id": 5})), "invalid_event"),
        (with("refs", json!({"sequence_id": []})), "invalid_event"),
        (with("idempotency_key", json!("")), "invalid_event"),
        (with("expected_seq", json!(-1)), "invalid_event"),
        (with("expected_seq", json!("1x")), "invalid_event"),
        (json!([event("p", 1)]), "invalid_event"),
        (json!("event"), "invalid_event"),
    ];
    for (body, code) in cases {
        let (status, reply) = rejected(&gateway, &id, body.clone()).await;
        assert_eq!(
            (status, reply["error"].as_str().unwrap()),
            (400, code),
            "{body}"
        );
    }
    assert_eq!(gateway.last_seq(&id).await, 0);
    // The producer cursor was not touched either: p may still start anywhere.
    assert_eq!(gateway.append_ok(&id, event("p", 9)).await["seq"], 1);
}

#[tokio::test]
async fn validation_comes_before_the_session_lookup() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let (status, reply) = rejected(&gateway, "nobody", without("type")).await;
    assert_eq!(
        (status, reply["error"].as_str().unwrap()),
        (400, "invalid_event")
    );
    let (status, reply) = rejected(&gateway, "nobody", event("p", 1)).await;
    assert_eq!(
        (status, reply["error"].as_str().unwrap()),
        (404, "session_not_found")
    );
}

#[tokio::test]
async fn seqs_start_at_one_and_are_gapless_across_producers() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let id = gateway.create_session().await;
    let mut seqs = Vec::new();
    for round in 1..=5 {
        for producer in ["a", "b", "c"] {
            let reply = gateway.append_ok(&id, event(producer, round)).await;
            assert_eq!(reply["deduped"], false);
            assert_eq!(reply["seq"], reply["last_seq"]);
            assert_eq!(reply["cursor"], reply["seq"]);
            assert_eq!(reply["committed_cursor"], reply["last_seq"]);
            seqs.push(reply["seq"].as_u64().unwrap());
        }
    }
    assert_eq!(seqs, (1..=15).collect::<Vec<_>>());
}

#[tokio::test]
async fn optional_fields_and_string_integers_are_accepted_and_stored() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let id = gateway.create_session().await;
    let body = json!({
        "type": "state", "payload": {"state": "running"}, "actor": "agent:researcher",
        "producer_id": "writer_123", "producer_seq": "+8", "source": "agent",
        "metadata": {"role": "worker"}, "refs": {"to_seq": "0", "request_id": "req_1", "extra": [1]},
        "idempotency_key": "run_123-step_8", "expected_seq": "0", "seq": 999, "id": "ignored",
    });
    assert_eq!(gateway.append_ok(&id, body).await["seq"], 1);
    let mut tail = gateway.tail(&id, 0).await;
    let stored = tail.event().await;
    let expected_keys = [
        "seq",
        "cursor",
        "type",
        "payload",
        "actor",
        "producer_id",
        "producer_seq",
        "source",
        "metadata",
        "refs",
        "idempotency_key",
        "inserted_at",
    ];
    assert_eq!(
        stored.as_object().unwrap().len(),
        expected_keys.len(),
        "{stored}"
    );
    for key in expected_keys {
        assert!(stored.get(key).is_some(), "missing {key}: {stored}");
    }
    assert_eq!(stored["seq"], 1);
    assert_eq!(stored["cursor"], 1);
    assert_eq!(stored["producer_seq"], 8);
    assert_eq!(
        stored["refs"],
        json!({"to_seq": 0, "request_id": "req_1", "extra": [1]})
    );
    assert_eq!(stored["source"], "agent");
}

#[tokio::test]
async fn a_retry_with_the_same_content_is_deduped_to_the_original_seq() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let id = gateway.create_session().await;
    gateway.append_ok(&id, event("p", 1)).await;
    gateway.append_ok(&id, event("other", 1)).await;
    // Key order does not make a different request.
    let reordered: Value = serde_json::from_str(
        r#"{"producer_seq":1,"producer_id":"p","actor":"agent:test","payload":{"text":"p #1"},"type":"message"}"#,
    )
    .unwrap();
    let retry = gateway.append_ok(&id, reordered).await;
    assert_eq!(
        retry,
        json!({"seq": 1, "last_seq": 2, "deduped": true, "cursor": 1, "committed_cursor": 2})
    );
    assert_eq!(gateway.last_seq(&id).await, 2);
}

#[tokio::test]
async fn producer_rules_reject_replays_gaps_and_old_requests() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let id = gateway.create_session().await;
    gateway.append_ok(&id, event("p", 5)).await;
    gateway.append_ok(&id, event("p", 6)).await;

    let mut changed = event("p", 6);
    changed["payload"] = json!({"text": "something else"});
    let (status, reply) = rejected(&gateway, &id, changed).await;
    assert_eq!(
        (status, reply["error"].as_str().unwrap()),
        (409, "producer_replay_conflict")
    );

    let (status, reply) = rejected(&gateway, &id, event("p", 5)).await;
    assert_eq!(
        (status, reply["error"].as_str().unwrap()),
        (409, "producer_seq_conflict")
    );
    assert_eq!(reply["message"], "Producer p expected seq 7, got 5");

    let (status, reply) = rejected(&gateway, &id, event("p", 8)).await;
    assert_eq!(
        (status, reply["error"].as_str().unwrap()),
        (409, "producer_seq_conflict")
    );

    // `1` and `1.0` are different content.
    let mut float = event("p", 6);
    float["payload"] = json!({"text": "p #6", "n": 1.0});
    let mut int = event("p", 6);
    int["payload"] = json!({"text": "p #6", "n": 1});
    assert_eq!(rejected(&gateway, &id, float).await.0, 409);
    assert_eq!(rejected(&gateway, &id, int).await.0, 409);

    assert_eq!(gateway.last_seq(&id).await, 2);
    assert_eq!(gateway.append_ok(&id, event("p", 7)).await["seq"], 3);
}

#[tokio::test]
async fn expected_seq_is_checked_before_dedupe() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let id = gateway.create_session().await;
    let mut first = event("p", 1);
    first["expected_seq"] = json!(0);
    assert_eq!(gateway.append_ok(&id, first.clone()).await["seq"], 1);

    // The exact retry carried expected_seq 0, which is no longer true: a conflict, not a dedupe.
    let (status, reply) = rejected(&gateway, &id, first).await;
    assert_eq!(
        (status, reply["error"].as_str().unwrap()),
        (409, "expected_seq_conflict")
    );
    assert_eq!(reply["message"], "Expected seq 0, current seq is 1");

    let mut ahead = event("p", 2);
    ahead["expected_seq"] = json!(5);
    let (status, reply) = rejected(&gateway, &id, ahead).await;
    assert_eq!(
        (status, reply["error"].as_str().unwrap()),
        (409, "expected_seq_conflict")
    );

    let mut right = event("p", 2);
    right["expected_seq"] = json!("1");
    assert_eq!(gateway.append_ok(&id, right).await["seq"], 2);
}

#[tokio::test]
async fn rejected_and_deduped_appends_never_reach_tailers() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let id = gateway.create_session().await;
    let mut tail = gateway.tail(&id, 0).await;
    gateway.append_ok(&id, event("p", 1)).await;
    gateway.append_ok(&id, event("p", 1)).await;
    assert_eq!(rejected(&gateway, &id, event("p", 3)).await.0, 409);
    assert_eq!(
        rejected(&gateway, &id, with("type", json!(""))).await.0,
        400
    );
    gateway.append_ok(&id, event("p", 2)).await;
    assert_eq!(tail.seqs(2).await, vec![1, 2]);
    tail.expect_no_event(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn concurrent_appends_through_one_gateway_are_gapless() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let id = gateway.create_session().await;
    let writers = (0..16).map(|writer| {
        let gateway = &gateway;
        let id = &id;
        async move {
            let mut seqs = Vec::new();
            for producer_seq in 1..=25 {
                let reply = gateway
                    .append_ok(id, event(&format!("w{writer}"), producer_seq))
                    .await;
                seqs.push(reply["seq"].as_u64().unwrap());
            }
            seqs
        }
    });
    let mut seqs: Vec<u64> = futures::future::join_all(writers)
        .await
        .into_iter()
        .flatten()
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=400).collect::<Vec<_>>());
}
