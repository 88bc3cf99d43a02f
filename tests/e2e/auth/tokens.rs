//! What a credential is worth: every bad token's answer, a key file instead of a JWKS, a
//! token expiring under a live tail, and the live streams one token may hold.

use std::time::Duration;

use reqwest::{Method, Response};
use serde_json::{Value, json};
use starcite_tests::auth::{SigningKey, TestJwks, claims, mint, now};
use starcite_tests::{TailClient, TestGateway, TestNats, error_of, eventually};

use super::everything;

const MISSING: &str = r#"Bearer realm="starcite""#;
const MALFORMED: &str = r#"Bearer realm="starcite", error="invalid_request", error_description="Malformed bearer token""#;
const INVALID: &str = r#"Bearer realm="starcite", error="invalid_token""#;

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
async fn every_bad_token_gets_its_401_challenge_and_good_ones_pass() {
    let nats = TestNats::start();
    let jwks = TestJwks::start().await;
    let gateway = TestGateway::start_with(jwks.config(&nats)).await;
    let admin = everything("acme");
    assert_eq!(
        gateway
            .create_session_as(&admin, json!({"id": "s"}))
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
async fn a_live_tail_closes_with_4001_when_its_token_expires() {
    let nats = TestNats::start();
    let jwks = TestJwks::start().await;
    let mut config = jwks.config(&nats);
    config.auth.leeway_seconds = 0;
    let gateway = TestGateway::start_with(config).await;
    let admin = everything("acme");
    gateway.create_session_as(&admin, json!({"id": "s"})).await;
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
    let query_token = format!("/v1/sessions/s?access_token={}", everything("acme"));
    let page = gateway.request(Method::GET, &query_token, None).await;
    assert_eq!(page.status(), 401);
}

#[tokio::test]
async fn a_key_file_replaces_the_jwks() {
    let nats = TestNats::start();
    let key_file =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/keys/rsa.pub.pem");
    let mut config = TestGateway::config(&nats);
    config.auth.mode = gateway::config::AuthMode::Jwt;
    config.auth.key_file = Some(key_file);
    config.auth.issuer = Some(starcite_tests::auth::ISSUER.into());
    config.auth.audience = Some(starcite_tests::auth::AUDIENCE.into());
    let gateway = TestGateway::start_with(config).await;
    let good = everything("acme");
    assert_eq!(
        gateway.create_session_as(&good, json!({})).await.status(),
        201
    );
    let other = mint(&claims("acme", "user:1", "session:create"), SigningKey::Ec);
    assert_eq!(
        gateway.create_session_as(&other, json!({})).await.status(),
        401
    );
}

#[tokio::test]
async fn a_token_holds_a_bounded_number_of_live_streams() {
    let nats = TestNats::start();
    let jwks = TestJwks::start().await;
    let mut config = jwks.config(&nats);
    config.tail.tails_per_token = 2;
    let gateway = TestGateway::start_with(config).await;
    let token = everything("acme");
    gateway.create_session_as(&token, json!({"id": "s"})).await;
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
