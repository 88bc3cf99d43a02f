//! The Durable Streams protocol: its official conformance suite and its official TypeScript
//! client (both from npm, installed in tests/durable-streams by `scripts/durable-streams.sh`,
//! which `make test` runs first) against a live gateway, and a Starcite tailer of the same
//! session.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use starcite_tests::{GatewayProcess, TailClient, TestGateway, TestNats};

/// How long a long-poll waits in these tests; the suite is told the same.
const LONG_POLL: Duration = Duration::from_secs(2);

fn project() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("durable-streams")
}

fn require_installed() {
    assert!(
        project().join("node_modules/.bin/vitest").exists(),
        "tests/durable-streams/node_modules is missing: run `make test` (or \
         scripts/durable-streams.sh) to install the suite and the client"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_durable_streams_conformance_suite_passes() {
    require_installed();
    let nats = TestNats::start();
    let mut config = TestGateway::config(&nats);
    config.limits.long_poll_timeout = LONG_POLL;
    let gateway = TestGateway::start_with(config).await;
    let results = tempfile::tempdir().unwrap();
    let report = results.path().join("results.json");
    let mut command = Command::new(project().join("node_modules/.bin/vitest"));
    command
        .current_dir(project())
        .args(["run", "--config", "vitest.config.ts", "conformance.test.ts"])
        .arg(format!("--outputFile.json={}", report.display()))
        .env("STARCITE_URL", &gateway.base_url)
        .env(
            "STARCITE_LONG_POLL_TIMEOUT_MS",
            LONG_POLL.as_millis().to_string(),
        );
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("cannot run vitest");
    let report: Value = match std::fs::read(&report) {
        Ok(report) => serde_json::from_slice(&report).unwrap(),
        Err(err) => panic!(
            "the suite wrote no report ({err}):\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    };
    let outcomes: Vec<(String, String)> = report["testResults"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|file| file["assertionResults"].as_array().unwrap())
        .map(|test| {
            let name = test["fullName"].as_str().unwrap().to_owned();
            (name, test["status"].as_str().unwrap().to_owned())
        })
        .collect();
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|(_, status)| status == "failed")
        .map(|(name, _)| name.as_str())
        .collect();
    assert!(failed.is_empty(), "failed: {failed:#?}");
    let passed = outcomes
        .iter()
        .filter(|(_, status)| status == "passed")
        .count();
    // The suite's 338 tests, less its optional subscriptions block (skipped unless asked for).
    assert_eq!(outcomes.len(), 338);
    assert_eq!(passed, 338 - 6, "{outcomes:#?}");
}

/// One run of tests/durable-streams/client.mjs: the offset its read ended at, and the values
/// it read.
async fn client_run(args: Vec<String>) -> (String, Vec<Value>) {
    let mut command = Command::new("node");
    command.current_dir(project()).arg("client.mjs").args(args);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("cannot run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: Value = serde_json::from_str(stdout.trim()).unwrap();
    let offset = printed["offset"].as_str().unwrap().to_owned();
    (offset, printed["values"].as_array().unwrap().clone())
}

fn numbered(range: std::ops::Range<u64>) -> Vec<Value> {
    range.map(|n| json!({ "n": n })).collect()
}

#[tokio::test]
async fn the_official_client_resumes_after_a_gateway_restart_and_a_tailer_reads_the_same_log() {
    require_installed();
    let nats = TestNats::start();
    let binary = Path::new(env!("CARGO_BIN_EXE_starcite-e2e"));
    let mut process = GatewayProcess::start(binary, &nats, &[]).await;
    let name = "client-stream";
    let (offset, values) = client_run(
        ["write", &process.base_url, name, "0", "5"]
            .map(str::to_owned)
            .to_vec(),
    )
    .await;
    assert_eq!(values, numbered(0..5));

    process.restart().await;
    let (end, values) = client_run(
        ["resume", &process.base_url, name, "5", "10", &offset]
            .map(str::to_owned)
            .to_vec(),
    )
    .await;
    assert_eq!(
        values,
        numbered(5..10),
        "read from {offset} after the restart"
    );

    // The session a tailer sees: the same messages, in events whose seqs are the offsets.
    let gateway = TestGateway::start(&nats).await;
    let last_seq = gateway.last_seq(name).await;
    assert_eq!(end, format!("{last_seq:020}"));
    let mut tail: TailClient = gateway.tail(name, 0).await;
    let mut messages = Vec::new();
    let mut offset_seen = None;
    for seq in 1..=last_seq {
        let event = tail.event().await;
        assert_eq!(event["seq"], seq);
        assert_eq!(event["type"], "data");
        assert_eq!(event["producer_id"], "writer");
        messages.extend(event["payload"]["json"].as_array().unwrap().clone());
        if format!("{seq:020}") == offset {
            offset_seen = Some(messages.len());
        }
    }
    assert_eq!(messages, numbered(0..10));
    assert_eq!(
        offset_seen,
        Some(5),
        "the first run's offset is the seq of its last write"
    );
}

/// A protocol request with a text body (`text/plain`), as a Durable Streams client sends it.
async fn stream_request(
    gateway: &TestGateway,
    method: reqwest::Method,
    name: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> reqwest::Response {
    let mut request = gateway
        .client
        .request(method, format!("{}/v1/stream/{name}", gateway.base_url))
        .header("content-type", "text/plain")
        .body(body.to_owned());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn a_stream_closed_through_one_gateway_refuses_appends_through_another() {
    let nats = TestNats::start();
    let (first, second) = (
        TestGateway::start(&nats).await,
        TestGateway::start(&nats).await,
    );
    let put = stream_request(&first, reqwest::Method::PUT, "closing", &[], "a").await;
    assert_eq!(put.status(), 201);
    // The second gateway holds the session's write state from before the close.
    let post = stream_request(&second, reqwest::Method::POST, "closing", &[], "b").await;
    assert_eq!(post.status(), 204);

    let close = [("stream-closed", "true")];
    let closed = stream_request(&first, reqwest::Method::POST, "closing", &close, "").await;
    assert_eq!(closed.status(), 204);
    assert_eq!(closed.headers()["stream-next-offset"], format!("{:020}", 3));

    let late = stream_request(&second, reqwest::Method::POST, "closing", &[], "c").await;
    assert_eq!(late.status(), 409);
    assert_eq!(late.headers()["stream-closed"], "true");
    // The session API refuses it too: closing is the log's, not the protocol's.
    let native = second
        .append(
            "closing",
            json!({"type": "m", "payload": {}, "actor": "a", "producer_id": "p", "producer_seq": 1}),
        )
        .await;
    assert_eq!(second.expect(native, 409).await["error"], "session_closed");
    let read = stream_request(&second, reqwest::Method::GET, "closing", &[], "").await;
    assert_eq!(read.headers()["stream-closed"], "true");
    assert_eq!(read.text().await.unwrap(), "ab");
}

#[tokio::test]
async fn a_source_retired_through_one_gateway_is_gone_for_appends_through_another() {
    let nats = TestNats::start();
    let (first, second) = (
        TestGateway::start(&nats).await,
        TestGateway::start(&nats).await,
    );
    let put = stream_request(&first, reqwest::Method::PUT, "source", &[], "a").await;
    assert_eq!(put.status(), 201);
    let fork = [("stream-forked-from", "/v1/stream/source")];
    let forked = stream_request(&first, reqwest::Method::PUT, "fork", &fork, "").await;
    assert_eq!(forked.status(), 201);
    // The second gateway has appended to the source, so it knows its header.
    let post = stream_request(&second, reqwest::Method::POST, "source", &[], "b").await;
    assert_eq!(post.status(), 204);

    let deleted = stream_request(&first, reqwest::Method::DELETE, "source", &[], "").await;
    assert_eq!(deleted.status(), 204);
    // Whether or not the second gateway's catalog has seen the delete yet, its append is gone.
    let late = stream_request(&second, reqwest::Method::POST, "source", &[], "c").await;
    assert_eq!(late.status(), 410);
    let read = stream_request(&second, reqwest::Method::GET, "fork", &[], "").await;
    assert_eq!(read.text().await.unwrap(), "a");
}

#[tokio::test]
async fn a_deleted_stream_created_again_starts_over_on_every_gateway() {
    let nats = TestNats::start();
    let (first, second) = (
        TestGateway::start(&nats).await,
        TestGateway::start(&nats).await,
    );
    let put = stream_request(&first, reqwest::Method::PUT, "again", &[], "old").await;
    assert_eq!(put.status(), 201);
    let post = stream_request(&second, reqwest::Method::POST, "again", &[], "er").await;
    assert_eq!(post.status(), 204);

    let deleted = stream_request(&first, reqwest::Method::DELETE, "again", &[], "").await;
    assert_eq!(deleted.status(), 204);
    let gone = stream_request(&second, reqwest::Method::GET, "again", &[], "").await;
    assert_eq!(gone.status(), 404);
    let listed: Value = second
        .request(reqwest::Method::GET, "/v1/sessions", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["sessions"], json!([]));

    let put = stream_request(&first, reqwest::Method::PUT, "again", &[], "new").await;
    assert_eq!(put.status(), 201);
    // The second gateway's cached state of the old log must not number the new one.
    let post = stream_request(&second, reqwest::Method::POST, "again", &[], "er").await;
    assert_eq!(post.status(), 204);
    assert_eq!(post.headers()["stream-next-offset"], format!("{:020}", 2));
    let read = stream_request(&first, reqwest::Method::GET, "again", &[], "").await;
    assert_eq!(read.text().await.unwrap(), "newer");
    let mut tail = first.tail("again", 0).await;
    assert_eq!(tail.seqs(2).await, vec![1, 2]);
}

#[tokio::test]
async fn the_protocol_applies_tokens_tenants_and_append_rates_like_the_api() {
    use starcite_tests::auth::{SigningKey, TestJwks, claims, mint};
    let nats = TestNats::start();
    let jwks = TestJwks::start().await;
    let mut config = jwks.config(&nats);
    config.limits.append_rate = Some(1);
    let gateway = TestGateway::start_with(config).await;
    let token = |tenant: &str, scope: &str| {
        mint(&claims(tenant, "service:backend", scope), SigningKey::Rsa)
    };
    let all = "session:create session:read session:append";
    let (acme, globex) = (token("acme", all), token("globex", all));
    let url = format!("{}/v1/stream/secret", gateway.base_url);
    let send = |method: reqwest::Method, token: Option<&str>, body: &str| {
        let mut request = gateway
            .client
            .request(method, &url)
            .header("content-type", "text/plain")
            .body(body.to_owned());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };

    assert_eq!(
        send(reqwest::Method::PUT, None, "").await.unwrap().status(),
        401
    );
    let reader = token("acme", "session:read");
    let refused = send(reqwest::Method::PUT, Some(&reader), "").await.unwrap();
    assert_eq!(refused.status(), 403);
    assert_eq!(
        send(reqwest::Method::PUT, Some(&acme), "")
            .await
            .unwrap()
            .status(),
        201
    );
    // Another tenant's stream is as missing as an unknown one, whatever the method.
    for method in [
        reqwest::Method::GET,
        reqwest::Method::HEAD,
        reqwest::Method::POST,
        reqwest::Method::DELETE,
        reqwest::Method::PUT,
    ] {
        let response = send(method.clone(), Some(&globex), "x").await.unwrap();
        assert_eq!(response.status(), 404, "{method}");
    }
    // The tenant's append rate counts protocol appends too.
    let first = send(reqwest::Method::POST, Some(&acme), "a").await.unwrap();
    assert_eq!(first.status(), 204);
    let second = send(reqwest::Method::POST, Some(&acme), "b").await.unwrap();
    assert_eq!(second.status(), 429);
    assert!(second.headers().contains_key("retry-after"));

    let events: Value = gateway
        .request_as(
            &acme,
            reqwest::Method::GET,
            "/v1/sessions/secret/events",
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(events["events"][0]["actor"], "service:backend");
    assert_eq!(events["events"][0]["payload"], json!({"text": "a"}));
}
