//! Creating and reading sessions, ids, the error shape of every route, and the OpenAPI spec.

use reqwest::Method;
use serde_json::{Value, json};
use starcite_tests::{TestGateway, TestNats, error_of, event};

#[tokio::test]
async fn create_returns_the_full_session_with_defaults() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let session = gateway.create_session_with(json!({})).await;
    let id = session["id"].as_str().unwrap();
    assert!(id.starts_with("ses_") && id.len() == 20, "{id}");
    assert_eq!(session["title"], Value::Null);
    assert_eq!(session["metadata"], json!({}));
    assert_eq!(session["last_seq"], 0);
    assert_eq!(session["version"], 1);
    assert_eq!(session["archived"], false);
    assert_eq!(session["created_at"], session["updated_at"]);
    let created_at = session["created_at"].as_str().unwrap();
    assert_eq!(
        created_at.len(),
        "2026-01-01T00:00:00.000000Z".len(),
        "{created_at}"
    );
    assert!(created_at.ends_with('Z'));

    let named = gateway
        .create_session_with(json!({"id": "chat-1", "title": "Plan", "metadata": {"tenant": "acme", "n": {"deep": [1]}}}))
        .await;
    assert_eq!(named["id"], "chat-1");
    assert_eq!(named["title"], "Plan");
    assert_eq!(
        named["metadata"],
        json!({"tenant": "acme", "n": {"deep": [1]}})
    );
}

#[tokio::test]
async fn get_returns_the_header_and_last_seq() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let created = gateway
        .create_session_with(json!({"id": "s1", "title": "t"}))
        .await;
    gateway.append_ok("s1", event("p", 1)).await;
    gateway.append_ok("s1", event("p", 2)).await;
    let response = gateway.session("s1").await;
    assert_eq!(response.status(), 200);
    let session: Value = response.json().await.unwrap();
    assert_eq!(session["last_seq"], 2);
    assert_eq!(session["created_at"], created["created_at"]);
    assert_eq!(session["title"], "t");
    assert_eq!(
        error_of(gateway.session("missing").await).await,
        (404, "session_not_found".into())
    );
}

#[tokio::test]
async fn create_with_an_existing_id_is_a_conflict_and_changes_nothing() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    gateway
        .create_session_with(json!({"id": "dup", "title": "first"}))
        .await;
    let response = gateway
        .request(
            Method::POST,
            "/v1/sessions",
            Some(json!({"id": "dup", "title": "second"})),
        )
        .await;
    assert_eq!(error_of(response).await, (409, "session_exists".into()));
    let session: Value = gateway.session("dup").await.json().await.unwrap();
    assert_eq!(session["title"], "first");
}

#[tokio::test]
async fn concurrent_creates_of_one_id_across_gateways_have_one_winner() {
    let nats = TestNats::start();
    let first = TestGateway::start(&nats).await;
    let second = TestGateway::start(&nats).await;
    for round in 0..10 {
        let id = format!("race-{round}");
        let body = Some(json!({"id": id}));
        let (a, b) = tokio::join!(
            first.request(Method::POST, "/v1/sessions", body.clone()),
            second.request(Method::POST, "/v1/sessions", body.clone()),
        );
        let mut statuses = [a.status().as_u16(), b.status().as_u16()];
        statuses.sort();
        assert_eq!(statuses, [201, 409], "round {round}");
    }
}

#[tokio::test]
async fn create_refuses_bad_fields_in_id_title_metadata_order_and_creates_nothing() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let cases = [
        (json!({"id": ""}), "invalid_event"),
        (json!({"id": 5}), "invalid_event"),
        (json!({"id": "x".repeat(257)}), "invalid_session_id"),
        (json!({"title": 5}), "invalid_event"),
        (json!({"metadata": "x"}), "invalid_metadata"),
        (json!({"metadata": [1]}), "invalid_metadata"),
        (json!({"id": "", "metadata": "x"}), "invalid_event"),
        (json!([1, 2]), "invalid_session"),
    ];
    for (body, code) in cases {
        let response = gateway
            .request(Method::POST, "/v1/sessions", Some(body.clone()))
            .await;
        assert_eq!(error_of(response).await, (400, code.to_owned()), "{body}");
    }
    // None of them created anything.
    assert_eq!(
        gateway.session("x".repeat(256).as_str()).await.status(),
        404
    );
    let max_id = "é".repeat(128);
    let session = gateway
        .create_session_with(json!({"id": max_id, "title": null, "metadata": null}))
        .await;
    assert_eq!(session["metadata"], json!({}));
}

#[tokio::test]
async fn malformed_bodies_and_unknown_routes_get_the_json_error_shape() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let id = gateway.create_session().await;
    let url = |path: &str| format!("{}{path}", gateway.base_url);
    let post_raw = |path: String, content_type: &'static str, body: &'static str| {
        gateway
            .client
            .post(url(&path))
            .header("content-type", content_type)
            .body(body)
            .send()
    };

    let response = post_raw("/v1/sessions".into(), "application/json", "{nope")
        .await
        .unwrap();
    assert_eq!(error_of(response).await, (400, "invalid_session".into()));
    let response = post_raw(
        format!("/v1/sessions/{id}/append"),
        "application/json",
        "{nope",
    )
    .await
    .unwrap();
    assert_eq!(error_of(response).await, (400, "invalid_event".into()));
    let response = post_raw(format!("/v1/sessions/{id}/append"), "text/plain", "{}")
        .await
        .unwrap();
    assert_eq!(
        error_of(response).await,
        (415, "unsupported_media_type".into())
    );
    let response = gateway.client.get(url("/v2/nothing")).send().await.unwrap();
    assert_eq!(error_of(response).await, (404, "not_found".into()));
    let response = gateway
        .client
        .delete(url(&format!("/v1/sessions/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(response).await, (405, "method_not_allowed".into()));
    let huge = json!({"type": "m", "payload": {"blob": "x".repeat(2 * 1024 * 1024)}, "actor": "a",
                      "producer_id": "p", "producer_seq": 1});
    let response = gateway.append(&id, huge).await;
    assert_eq!(error_of(response).await, (413, "payload_too_large".into()));
    assert_eq!(gateway.last_seq(&id).await, 0);
}

#[tokio::test]
async fn an_empty_json_body_creates_a_session_with_defaults() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let response = gateway
        .client
        .post(format!("{}/v1/sessions", gateway.base_url))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
}

#[tokio::test]
async fn ids_that_subjects_cannot_hold_are_distinct_working_sessions() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let ids = [
        "a.b",
        "a*b",
        "a>b",
        "a b",
        "a=2Eb",
        "a/b",
        "日本語 🚀",
        "a.b.",
        ">",
        "*",
    ];
    for id in ids {
        gateway.create_session_with(json!({"id": id})).await;
    }
    for (n, id) in ids.iter().enumerate() {
        for producer_seq in 1..=(n as u64 + 1) {
            gateway.append_ok(id, event("p", producer_seq)).await;
        }
    }
    for (n, id) in ids.iter().enumerate() {
        let session: Value = gateway.session(id).await.json().await.unwrap();
        assert_eq!(session["id"], *id);
        assert_eq!(session["last_seq"], n as u64 + 1, "{id}");
        let mut tail = gateway.tail(id, 0).await;
        assert_eq!(
            tail.seqs(n + 1).await,
            (1..=n as u64 + 1).collect::<Vec<_>>(),
            "{id}"
        );
    }
}

#[tokio::test]
async fn the_served_spec_matches_the_committed_openapi_json() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let served: Value = gateway
        .request(Method::GET, "/openapi.json", None)
        .await
        .json()
        .await
        .unwrap();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi.json");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(&served).unwrap() + "\n").unwrap();
    }
    let committed: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(
        served == committed,
        "openapi.json is stale: run `make openapi` and commit it"
    );
    let operations = [
        ("post", "/v1/sessions"),
        ("get", "/v1/sessions"),
        ("get", "/v1/sessions/{id}"),
        ("patch", "/v1/sessions/{id}"),
        ("post", "/v1/sessions/{id}/append"),
        ("post", "/v1/sessions/{id}/archive"),
        ("post", "/v1/sessions/{id}/unarchive"),
        ("get", "/v1/sessions/{id}/events"),
        ("get", "/v1/sessions/{id}/tail"),
        ("get", "/v1/lifecycle"),
        ("get", "/health/live"),
        ("get", "/health/ready"),
    ];
    for (method, path) in operations {
        assert!(
            served["paths"][path][method].is_object(),
            "{method} {path} is not in the spec"
        );
    }
}

#[tokio::test]
async fn interactive_docs_are_served_without_any_cdn() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let response = gateway.request(Method::GET, "/docs", None).await;
    assert_eq!(response.status(), 200);
    let page = response.text().await.unwrap();
    assert!(page.contains("swagger"), "not the docs page");
    for attribute in ["src=\"http", "href=\"http", "src='http", "href='http"] {
        assert!(
            !page.contains(attribute),
            "the docs page loads an external asset ({attribute})"
        );
    }
}
