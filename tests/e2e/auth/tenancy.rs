//! What a credential reaches: scopes and session pins per operation, tenant fences, and the
//! actor rule.

use reqwest::Method;
use serde_json::{Value, json};
use starcite_tests::auth::{SigningKey, TestJwks, claims, mint, now};
use starcite_tests::{SseClient, TestGateway, TestNats, error_of, event};

use super::everything;

/// GETs `path` as the holder of `token`, asserting a 200, and returns the body.
async fn read_as(gateway: &TestGateway, token: &str, path: &str) -> Value {
    let response = gateway.request_as(token, Method::GET, path, None).await;
    gateway.expect(response, 200).await
}

#[tokio::test]
async fn scopes_and_session_pins_limit_each_operation() {
    let nats = TestNats::start();
    let jwks = TestJwks::start().await;
    let gateway = TestGateway::start_with(jwks.config(&nats)).await;
    let admin = everything("acme");
    gateway.create_session_as(&admin, json!({"id": "s"})).await;

    let token = |scope: &str| mint(&claims("acme", "service:worker", scope), SigningKey::Ec);
    let reader = token("session:read");
    let appender = token("session:append");
    let creator = token("session:create");
    let append_body =
        || Some(json!({"type": "m", "payload": {}, "producer_id": "w", "producer_seq": now()}));
    let cases: Vec<(&str, Method, &str, Option<Value>, u16)> = vec![
        (&reader, Method::GET, "/v1/sessions/s", None, 200),
        (&reader, Method::GET, "/v1/sessions", None, 200),
        (&reader, Method::GET, "/v1/sessions/s/events", None, 200),
        (&reader, Method::POST, "/v1/sessions", Some(json!({})), 403),
        (
            &reader,
            Method::POST,
            "/v1/sessions/s/append",
            append_body(),
            403,
        ),
        (
            &reader,
            Method::PATCH,
            "/v1/sessions/s",
            Some(json!({"title": "t"})),
            403,
        ),
        (&reader, Method::POST, "/v1/sessions/s/archive", None, 403),
        (
            &appender,
            Method::POST,
            "/v1/sessions/s/append",
            append_body(),
            201,
        ),
        (&appender, Method::GET, "/v1/sessions/s", None, 403),
        (&appender, Method::GET, "/v1/sessions", None, 403),
        (&creator, Method::POST, "/v1/sessions", Some(json!({})), 201),
        (
            &creator,
            Method::PATCH,
            "/v1/sessions/s",
            Some(json!({"title": "t"})),
            200,
        ),
        (
            &creator,
            Method::POST,
            "/v1/sessions/s/unarchive",
            None,
            200,
        ),
        (&creator, Method::GET, "/v1/sessions/s", None, 403),
        (
            &creator,
            Method::POST,
            "/v1/sessions/s/append",
            append_body(),
            403,
        ),
    ];
    for (token, method, path, body, expected) in cases {
        let response = gateway.request_as(token, method.clone(), path, body).await;
        if expected == 403 {
            let refused = error_of(response).await;
            assert_eq!(refused, (403, "forbidden_scope".into()), "{method} {path}");
        } else {
            assert_eq!(response.status(), expected, "{method} {path}");
        }
    }

    let mut pinned_claims = claims(
        "acme",
        "user:7",
        "session:create session:read session:append",
    );
    pinned_claims["session_id"] = json!("mine");
    let pinned = mint(&pinned_claims, SigningKey::Ed);
    let created = gateway.create_session_as(&pinned, json!({})).await;
    let created: Value = created.json().await.unwrap();
    assert_eq!(
        created["id"], "mine",
        "a pinned token creates its own session"
    );
    let other = gateway
        .create_session_as(&pinned, json!({"id": "other"}))
        .await;
    assert_eq!(error_of(other).await, (403, "forbidden_session".into()));
    let read_other = gateway
        .request_as(&pinned, Method::GET, "/v1/sessions/s", None)
        .await;
    assert_eq!(
        error_of(read_other).await,
        (403, "forbidden_session".into())
    );
    let listed = read_as(&gateway, &pinned, "/v1/sessions").await;
    let ids: Vec<&str> = listed["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["mine"]);
    let lifecycle = gateway.event_stream_as(&pinned, "/v1/lifecycle").await;
    assert_eq!(error_of(lifecycle).await, (403, "forbidden_session".into()));
}

#[tokio::test]
async fn a_tenant_never_reaches_another_tenants_sessions() {
    let nats = TestNats::start();
    let jwks = TestJwks::start().await;
    let gateway = TestGateway::start_with(jwks.config(&nats)).await;
    let acme = everything("acme");
    let globex = everything("globex");
    let mut globex_feed =
        SseClient::from_response(gateway.event_stream_as(&globex, "/v1/lifecycle").await);
    let created = gateway
        .create_session_as(&acme, json!({"id": "secret"}))
        .await;
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["tenant_id"], "acme");
    let mut append = event("w", 1);
    append["actor"] = json!("service:backend");
    assert_eq!(
        gateway
            .request_as(
                &acme,
                Method::POST,
                "/v1/sessions/secret/append",
                Some(append.clone())
            )
            .await
            .status(),
        201
    );

    for (method, path, body) in [
        (Method::GET, "/v1/sessions/secret", None),
        (Method::GET, "/v1/sessions/secret/events", None),
        (Method::POST, "/v1/sessions/secret/append", Some(append)),
        (
            Method::PATCH,
            "/v1/sessions/secret",
            Some(json!({"title": "mine now"})),
        ),
        (Method::POST, "/v1/sessions/secret/archive", None),
    ] {
        let response = gateway
            .request_as(&globex, method.clone(), path, body)
            .await;
        assert_eq!(
            error_of(response).await,
            (404, "session_not_found".into()),
            "{method} {path}"
        );
    }
    let tail = gateway
        .event_stream_as(&globex, "/v1/sessions/secret/tail")
        .await;
    assert_eq!(error_of(tail).await, (404, "session_not_found".into()));
    let listed = read_as(&gateway, &globex, "/v1/sessions?archived=all").await;
    assert_eq!(listed["sessions"], json!([]));
    let listed = read_as(&gateway, &acme, "/v1/sessions").await;
    assert_eq!(listed["sessions"][0]["id"], "secret");

    // globex's feed shows globex's own session, never acme's.
    gateway
        .create_session_as(&globex, json!({"id": "public"}))
        .await;
    let (_, frame) = globex_feed.event().await;
    assert_eq!(frame["event"]["session_id"], "public");
    let session = read_as(&gateway, &acme, "/v1/sessions/secret").await;
    assert_eq!(
        session["title"],
        Value::Null,
        "globex's patch changed nothing"
    );
}

#[tokio::test]
async fn the_actor_is_the_token_subject() {
    let nats = TestNats::start();
    let jwks = TestJwks::start().await;
    let gateway = TestGateway::start_with(jwks.config(&nats)).await;
    let token = mint(
        &claims(
            "acme",
            "agent:drafter",
            "session:create session:read session:append",
        ),
        SigningKey::Rsa,
    );
    gateway.create_session_as(&token, json!({"id": "s"})).await;
    let mut body = event("p", 1);
    body.as_object_mut().unwrap().remove("actor");
    assert_eq!(
        gateway
            .request_as(&token, Method::POST, "/v1/sessions/s/append", Some(body))
            .await
            .status(),
        201
    );
    let mut impostor = event("p", 2);
    impostor["actor"] = json!("agent:someone-else");
    let refused = gateway
        .request_as(
            &token,
            Method::POST,
            "/v1/sessions/s/append",
            Some(impostor),
        )
        .await;
    assert_eq!(error_of(refused).await, (400, "invalid_event".into()));
    let page = read_as(&gateway, &token, "/v1/sessions/s/events").await;
    assert_eq!(page["events"][0]["actor"], "agent:drafter");
}
