//! Authentication and tenancy: tokens from a JWKS served on loopback, scopes, session pins,
//! tenant fences, the actor rule and token expiry on a live tail.

use std::time::Duration;

use gateway::config::Config;
use reqwest::{Method, Response};
use serde_json::{Value, json};
use starcite_tests::auth::{SigningKey, TestJwks, claims, mint, now};
use starcite_tests::{SseClient, TailClient, TestGateway, TestNats, error_of, event, eventually};

const MISSING: &str = r#"Bearer realm="starcite""#;
const MALFORMED: &str = r#"Bearer realm="starcite", error="invalid_request", error_description="Malformed bearer token""#;
const INVALID: &str = r#"Bearer realm="starcite", error="invalid_token""#;

fn everything(tenant: &str) -> String {
    mint(
        &claims(
            tenant,
            "service:backend",
            "session:create session:read session:append",
        ),
        SigningKey::Rsa,
    )
}

async fn challenge(response: Response) -> String {
    assert_eq!(response.status(), 401);
    let header = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": "unauthorized", "message": "Unauthorized"})
    );
    header
}

#[tokio::test]
async fn every_bad_token_gets_its_contract_answer_and_good_ones_pass() {
    let nats = TestNats::start();
    let jwks = TestJwks::start().await;
    let gateway = TestGateway::start_with(jwks.config(&nats)).await;
    let admin = everything("acme");
    assert_eq!(
        gateway
            .request_as(
                &admin,
                Method::POST,
                "/v1/sessions",
                Some(json!({"id": "s"}))
            )
            .await
            .status(),
        201
    );

    let gateway = &gateway;
    let get = |token: String| async move {
        gateway
            .request_as(&token, Method::GET, "/v1/sessions/s", None)
            .await
    };

    let anonymous = gateway.request(Method::GET, "/v1/sessions/s", None).await;
    assert_eq!(challenge(anonymous).await, MISSING);
    for header in ["Basic abc", "Bearer", "Bearer a b", "bearer"] {
        let response = gateway
            .client
            .get(format!("{}/v1/sessions/s", gateway.base_url))
            .header("authorization", header)
            .send()
            .await
            .unwrap();
        assert_eq!(challenge(response).await, MALFORMED, "{header}");
    }
    let doubled = gateway
        .client
        .get(format!("{}/v1/sessions/s", gateway.base_url))
        .header("authorization", format!("Bearer {admin}"))
        .header("authorization", format!("Bearer {admin}"))
        .send()
        .await
        .unwrap();
    assert_eq!(challenge(doubled).await, MALFORMED);

    let with = |change: &dyn Fn(&mut Value), key| {
        let mut claims = claims("acme", "user:42", "session:read");
        change(&mut claims);
        mint(&claims, key)
    };
    let refused = [
        (
            "expired",
            with(&|c| c["exp"] = json!(now() - 60), SigningKey::Rsa),
        ),
        (
            "not yet valid",
            with(&|c| c["nbf"] = json!(now() + 600), SigningKey::Rsa),
        ),
        (
            "wrong issuer",
            with(
                &|c| c["iss"] = json!("https://elsewhere.test"),
                SigningKey::Rsa,
            ),
        ),
        (
            "wrong audience",
            with(&|c| c["aud"] = json!("someone-else"), SigningKey::Rsa),
        ),
        ("wrong key", with(&|_| {}, SigningKey::Other)),
        (
            "no tenant",
            with(&|c| c["tenant_id"] = json!(""), SigningKey::Rsa),
        ),
        (
            "bad subject",
            with(&|c| c["sub"] = json!("42"), SigningKey::Rsa),
        ),
        (
            "no scope",
            with(
                &|c| {
                    c.as_object_mut().unwrap().remove("scope");
                },
                SigningKey::Rsa,
            ),
        ),
        ("not a jwt", "not.a.jwt".to_owned()),
    ];
    for (what, token) in refused {
        assert_eq!(challenge(get(token).await).await, INVALID, "{what}");
    }
    // `alg: none` with no signature at all.
    use base64::Engine as _;
    let encode =
        |value: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string());
    let unsigned = format!(
        "{}.{}.",
        encode(json!({"alg": "none", "typ": "JWT", "kid": "rsa-1"})),
        encode(claims("acme", "user:42", "session:read"))
    );
    assert_eq!(challenge(get(unsigned).await).await, INVALID, "alg none");

    for key in [SigningKey::Rsa, SigningKey::Ec, SigningKey::Ed] {
        let token = mint(&claims("acme", "user:42", "session:read"), key);
        assert_eq!(get(token).await.status(), 200, "{key:?}");
    }
    // Health is never authenticated.
    assert_eq!(
        gateway
            .request(Method::GET, "/health/ready", None)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn scopes_and_session_pins_limit_each_operation() {
    let nats = TestNats::start();
    let jwks = TestJwks::start().await;
    let gateway = TestGateway::start_with(jwks.config(&nats)).await;
    let admin = everything("acme");
    gateway
        .request_as(
            &admin,
            Method::POST,
            "/v1/sessions",
            Some(json!({"id": "s"})),
        )
        .await;

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
    let created = gateway
        .request_as(&pinned, Method::POST, "/v1/sessions", Some(json!({})))
        .await;
    let created: Value = created.json().await.unwrap();
    assert_eq!(
        created["id"], "mine",
        "a pinned token creates its own session"
    );
    let other = gateway
        .request_as(
            &pinned,
            Method::POST,
            "/v1/sessions",
            Some(json!({"id": "other"})),
        )
        .await;
    assert_eq!(error_of(other).await, (403, "forbidden_session".into()));
    let read_other = gateway
        .request_as(&pinned, Method::GET, "/v1/sessions/s", None)
        .await;
    assert_eq!(
        error_of(read_other).await,
        (403, "forbidden_session".into())
    );
    let listed: Value = gateway
        .request_as(&pinned, Method::GET, "/v1/sessions", None)
        .await
        .json()
        .await
        .unwrap();
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
        .request_as(
            &acme,
            Method::POST,
            "/v1/sessions",
            Some(json!({"id": "secret"})),
        )
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
    let listed: Value = gateway
        .request_as(&globex, Method::GET, "/v1/sessions?archived=all", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["sessions"], json!([]));
    let listed: Value = gateway
        .request_as(&acme, Method::GET, "/v1/sessions", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["sessions"][0]["id"], "secret");

    // globex's feed shows globex's own session, never acme's.
    gateway
        .request_as(
            &globex,
            Method::POST,
            "/v1/sessions",
            Some(json!({"id": "public"})),
        )
        .await;
    let (_, frame) = globex_feed.event().await;
    assert_eq!(frame["event"]["session_id"], "public");
    let session: Value = gateway
        .request_as(&acme, Method::GET, "/v1/sessions/secret", None)
        .await
        .json()
        .await
        .unwrap();
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
    gateway
        .request_as(
            &token,
            Method::POST,
            "/v1/sessions",
            Some(json!({"id": "s"})),
        )
        .await;
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
    let page: Value = gateway
        .request_as(&token, Method::GET, "/v1/sessions/s/events", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["events"][0]["actor"], "agent:drafter");
}

#[tokio::test]
async fn a_live_tail_closes_with_4001_when_its_token_expires() {
    let nats = TestNats::start();
    let jwks = TestJwks::start().await;
    let config = Config {
        auth_jwt_leeway_seconds: 0,
        ..jwks.config(&nats)
    };
    let gateway = TestGateway::start_with(config).await;
    let admin = everything("acme");
    gateway
        .request_as(
            &admin,
            Method::POST,
            "/v1/sessions",
            Some(json!({"id": "s"})),
        )
        .await;
    let mut short = claims("acme", "user:1", "session:read");
    short["exp"] = json!(now() + 2);
    let token = mint(&short, SigningKey::Rsa);
    // Browsers cannot set headers on a WebSocket: the token rides in the query.
    let mut tail =
        TailClient::connect(&gateway.ws_url(&format!("/v1/sessions/s/tail?access_token={token}")))
            .await;
    let (events, code) = tail.until_closed(Duration::from_secs(6)).await;
    assert_eq!((events, code), (vec![], Some(4001)));
    // The query token is accepted on live streams only.
    let page = gateway
        .client
        .get(format!(
            "{}/v1/sessions/s?access_token={}",
            gateway.base_url,
            everything("acme")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 401);
}

#[tokio::test]
async fn a_key_file_replaces_the_jwks() {
    let nats = TestNats::start();
    let key_file =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/keys/rsa.pub.pem");
    let config = Config {
        auth_mode: gateway::config::AuthMode::Jwt,
        auth_key_file: Some(key_file),
        auth_jwt_issuer: Some(starcite_tests::auth::ISSUER.into()),
        auth_jwt_audience: Some(starcite_tests::auth::AUDIENCE.into()),
        ..TestGateway::config(&nats)
    };
    let gateway = TestGateway::start_with(config).await;
    let good = everything("acme");
    assert_eq!(
        gateway
            .request_as(&good, Method::POST, "/v1/sessions", Some(json!({})))
            .await
            .status(),
        201
    );
    let other = mint(&claims("acme", "user:1", "session:create"), SigningKey::Ec);
    assert_eq!(
        gateway
            .request_as(&other, Method::POST, "/v1/sessions", Some(json!({})))
            .await
            .status(),
        401
    );
}

#[tokio::test]
async fn a_token_holds_a_bounded_number_of_live_streams() {
    let nats = TestNats::start();
    let jwks = TestJwks::start().await;
    let config = Config {
        tails_per_token: 2,
        ..jwks.config(&nats)
    };
    let gateway = TestGateway::start_with(config).await;
    let token = everything("acme");
    gateway
        .request_as(
            &token,
            Method::POST,
            "/v1/sessions",
            Some(json!({"id": "s"})),
        )
        .await;
    let url = gateway.ws_url(&format!("/v1/sessions/s/tail?access_token={token}"));
    let first = TailClient::connect(&url).await;
    let _second = TailClient::connect(&url).await;
    let refused = gateway.event_stream_as(&token, "/v1/sessions/s/tail").await;
    assert_eq!(error_of(refused).await, (429, "too_many_tails".into()));
    // Another holder has its own quota.
    let theirs = gateway.ws_url(&format!(
        "/v1/lifecycle?access_token={}",
        everything("globex")
    ));
    drop(TailClient::connect(&theirs).await);
    // A closed stream gives its place back.
    drop(first);
    eventually(Duration::from_secs(10), || async {
        let again = gateway.event_stream_as(&token, "/v1/sessions/s/tail").await;
        match again.status().as_u16() {
            200 => Ok(()),
            status => Err(format!(
                "a closed stream never gave its place back: {status}"
            )),
        }
    })
    .await;
}
