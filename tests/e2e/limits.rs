//! Limits on hostile input: each answers with its own 4xx and leaves the session unchanged.

use reqwest::Method;
use serde_json::{Value, json};
use starcite_tests::{TestGateway, TestNats, error_of, event};

fn nested(depth: usize) -> Value {
    (0..depth).fold(json!("bottom"), |inner, _| json!([inner]))
}

#[tokio::test]
async fn deep_or_large_input_is_refused_and_nothing_changes() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    gateway
        .create_session_with(json!({"id": "s", "title": "kept"}))
        .await;

    let mut deep = event("p", 1);
    deep["payload"] = json!({"deep": nested(40)});
    assert_eq!(
        error_of(gateway.append("s", deep).await).await,
        (400, "invalid_event".into())
    );
    let mut heavy = event("p", 1);
    heavy["metadata"] = json!({"blob": "x".repeat(20_000)});
    assert_eq!(
        error_of(gateway.append("s", heavy).await).await,
        (400, "invalid_metadata".into())
    );
    let mut deep_refs = event("p", 1);
    deep_refs["refs"] = json!({"deep": nested(40)});
    assert_eq!(
        error_of(gateway.append("s", deep_refs).await).await,
        (400, "invalid_refs".into())
    );
    assert_eq!(gateway.last_seq("s").await, 0);

    let create = |body: Value| gateway.request(Method::POST, "/v1/sessions", Some(body));
    let long_title = json!({"id": "t", "title": "x".repeat(5000)});
    assert_eq!(
        error_of(create(long_title).await).await,
        (400, "invalid_session".into())
    );
    let deep_metadata = json!({"id": "t", "metadata": {"deep": nested(40)}});
    assert_eq!(
        error_of(create(deep_metadata).await).await,
        (400, "invalid_metadata".into())
    );
    assert_eq!(gateway.session("t").await.status(), 404);

    let patch = gateway.request(
        Method::PATCH,
        "/v1/sessions/s",
        Some(json!({"metadata": {"deep": nested(40)}})),
    );
    assert_eq!(
        error_of(patch.await).await,
        (400, "invalid_metadata".into())
    );
    let session: Value = gateway.session("s").await.json().await.unwrap();
    assert_eq!(
        (session["title"].as_str(), session["version"].as_u64()),
        (Some("kept"), Some(1))
    );
}

#[tokio::test]
async fn a_tenant_over_its_append_rate_gets_429_with_retry_after() {
    let nats = TestNats::start();
    let mut config = TestGateway::config(&nats);
    config.limits.append_rate = Some(1);
    config.limits.append_burst = Some(3);
    let gateway = TestGateway::start_with(config).await;
    let id = gateway.create_session().await;
    for producer_seq in 1..=3 {
        gateway.append_ok(&id, event("p", producer_seq)).await;
    }
    let response = gateway.append(&id, event("p", 4)).await;
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert_eq!(error_of(response).await, (429, "rate_limited".into()));
    assert_eq!(gateway.last_seq(&id).await, 3);
    tokio::time::sleep(std::time::Duration::from_secs(retry_after)).await;
    assert_eq!(gateway.append_ok(&id, event("p", 4)).await["seq"], 4);
}
