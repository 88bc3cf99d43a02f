//! The Python SDK: its scenarios (clients/python/tests/scenarios.py) run with the tools venv's
//! Python and the package from the repository (`PYTHONPATH`), its wire types regenerated and
//! compared with the committed ones.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use poem::listener::TcpAcceptor;
use poem::web::Query;
use poem::{Route, get, handler};
use serde_json::{Value, json};
use starcite_tests::auth::{self, AUDIENCE, ISSUER, SigningKey, TestJwks};
use starcite_tests::{Fault, FaultyDeployment};
use tokio::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `scenarios.py <name> <args>`, as the deployment runs it.
fn scenario(name: &str, args: &[&str]) -> Command {
    let root = root();
    let mut command = Command::new(root.join("tools/venv/bin/python"));
    command
        .arg(root.join("clients/python/tests/scenarios.py"))
        .arg(name)
        .args(args)
        .env("PYTHONPATH", root.join("clients/python"));
    command
}

async fn deployment(env: &[(&str, &str)]) -> FaultyDeployment {
    FaultyDeployment::start(Path::new(env!("CARGO_BIN_EXE_starcite-e2e")), env).await
}

fn acks(result: &Value) -> Vec<Value> {
    result["acks"].as_array().unwrap().clone()
}

/// Asserts that `ack` (`{seq, producer_seq}`) names a stored event with `payload`.
fn assert_stored_at(stored: &[Value], ack: &Value, payload: &Value) {
    let seq = ack["seq"].as_u64().unwrap();
    let event = &stored[usize::try_from(seq).unwrap() - 1];
    assert_eq!(event["seq"], seq);
    assert_eq!(event["producer_seq"], ack["producer_seq"], "{event}");
    assert_eq!(&event["payload"], payload, "{event}");
}

/// Asserts that the session of a `chaos` run holds `count` events, the one of call `n` (payload
/// `{"n": n}`) with producer seq `n + 1` at the seq the call answered.
async fn assert_each_call_stored_once_in_call_order(
    deployment: &FaultyDeployment,
    result: &Value,
    count: usize,
) {
    let stored = deployment
        .stored_events(result["session"].as_str().unwrap())
        .await;
    assert_eq!(stored.len(), count);
    for (call, ack) in acks(result).iter().enumerate() {
        assert_eq!(ack["producer_seq"], call + 1, "call {call} answered {ack}");
        assert_stored_at(&stored, ack, &json!({ "n": call }));
    }
}

#[tokio::test]
async fn python_appends_and_tails_exactly_once_through_cut_and_frozen_links_and_a_gateway_restart()
{
    let mut deployment = deployment(&[]).await;
    let faults = [
        (200, Fault::CutLinks),
        (400, Fault::RestartGateway),
        (600, Fault::FreezeLinks),
        (800, Fault::CutLinks),
    ];
    let result = deployment.run(scenario("chaos", &["1000"]), &faults).await;
    let tailed: Vec<u64> = result["tail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|seq| seq.as_u64().unwrap_or_else(|| panic!("not a seq: {seq}")))
        .collect();
    assert_eq!(tailed, (1..=1000).collect::<Vec<u64>>());
    assert_each_call_stored_once_in_call_order(&deployment, &result, 1000).await;
}

#[tokio::test]
async fn python_waits_out_rate_limits_and_stores_each_append_once() {
    // 300 appends at 100 a second: two thirds are first refused 429 with `retry_after`.
    let mut deployment = deployment(&[("STARCITE_APPEND_RATE", "100")]).await;
    let result = deployment.run(scenario("chaos", &["300"]), &[]).await;
    assert_each_call_stored_once_in_call_order(&deployment, &result, 300).await;
}

#[tokio::test]
async fn a_python_producer_restarted_from_its_state_file_goes_on_without_duplicates() {
    let mut deployment = deployment(&[]).await;
    let state_dir = tempfile::tempdir().unwrap();
    let state = state_dir.path().join("producer.json");
    let state = state.to_str().unwrap();
    let session = "python-durable";
    // The first process dies with 200 appends answered and up to 64 more in flight.
    let first = deployment
        .run(
            scenario("durable", &[session, state, "first", "300", "200"]),
            &[],
        )
        .await;
    let second = deployment
        .run(
            scenario("durable", &[session, state, "second", "200", "0"]),
            &[],
        )
        .await;
    let stored = deployment.stored_events(session).await;
    let producer_seqs: Vec<u64> = stored
        .iter()
        .map(|event| event["producer_seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        producer_seqs,
        (1..=stored.len() as u64).collect::<Vec<u64>>()
    );
    let first_acks = acks(&first);
    let answered_first: Vec<(usize, &Value)> = first_acks
        .iter()
        .enumerate()
        .filter(|(_, ack)| ack.get("seq").is_some())
        .collect();
    assert!(answered_first.len() >= 200, "{first}");
    for (n, ack) in answered_first {
        assert_stored_at(&stored, ack, &json!({"run": "first", "n": n}));
    }
    let second_acks = acks(&second);
    assert_eq!(second_acks.len(), 200);
    for (n, ack) in second_acks.iter().enumerate() {
        assert_stored_at(&stored, ack, &json!({"run": "second", "n": n}));
    }
    let mut payloads: Vec<String> = stored.iter().map(|e| e["payload"].to_string()).collect();
    payloads.sort();
    payloads.dedup();
    assert_eq!(payloads.len(), stored.len(), "an event was stored twice");
}

#[tokio::test]
async fn python_raises_a_typed_error_for_each_refusal_and_goes_on_after_it() {
    let mut deployment = deployment(&[]).await;
    let result = deployment.run(scenario("refusals", &[]), &[]).await;
    assert_eq!(
        result["errors"],
        json!({
            "missing_session": "NotFound:session_not_found:404",
            "append_to_missing_session": "NotFound:session_not_found:404",
            "session_exists": "SessionExists:session_exists:409",
            "invalid_limit": "InvalidEvent:invalid_limit:400",
            "expected_version": "ExpectedVersionConflict:expected_version_conflict:409",
            "expected_seq": "ExpectedSeqConflict:expected_seq_conflict:409",
            "producer_seq": "ProducerSeqConflict:producer_seq_conflict:409",
        })
    );
    // The refused second append freed its number for the three behind it.
    assert_eq!(
        result["pipelined"],
        json!([1, "InvalidEvent:invalid_event", 2, 3, 4])
    );
    let stored = deployment
        .stored_events(result["session"].as_str().unwrap())
        .await;
    let payloads: Vec<&Value> = stored.iter().map(|event| &event["payload"]).collect();
    assert_eq!(
        payloads,
        [
            &json!({"n": 0}),
            &json!({"n": 2}),
            &json!({"n": 3}),
            &json!({"n": 4}),
            &json!({"before": true}),
            &json!({"foreign": true}),
            &json!({"after": true}),
        ]
    );
    assert_stored_at(&stored, &result["after_conflict"], &json!({"after": true}));
}

#[tokio::test]
async fn python_reads_pages_lists_gaps_headers_and_a_lifecycle_feed_that_resumes_after_a_cut() {
    let mut deployment = deployment(&[]).await;
    let result = deployment
        .run(scenario("catalog", &[]), &[(2, Fault::CutLinks)])
        .await;
    assert_eq!(
        result["page"],
        json!({"seqs": [2], "next_cursor": 2, "last_seq": 3})
    );
    let listed = result["listed"].as_array().unwrap();
    assert_eq!(listed.len(), 3, "{result}");
    assert_eq!(result["first_page"]["ids"], json!(listed[..2]));
    assert_eq!(result["first_page"]["next_cursor"], listed[1]);
    assert_eq!(
        result["gap"],
        json!({"is_gap": true, "reason": "resume_invalidated", "next_cursor": 3})
    );
    assert_eq!(result["after_gap"], json!({"is_event": true, "seq": 4}));
    assert_eq!(result["patched"], json!({"title": "renamed", "version": 2}));
    assert_eq!(result["archived"], json!([true, false]));
    let kinds: Vec<&Value> = result["feed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| &entry["kind"])
        .collect();
    assert_eq!(
        kinds,
        [
            "session.created",
            "session.updated",
            "session.archived",
            "session.unarchived"
        ]
    );
}

/// Tokens for the SDK's callback, minted with the fixture key and valid for two seconds.
#[handler]
fn short_lived_token(Query(params): Query<HashMap<String, String>>) -> String {
    let scope = params
        .get("scope")
        .map_or("session:create session:read session:append", String::as_str);
    let mut claims = auth::claims("python", "agent:python", scope);
    claims["exp"] = json!(auth::now() + 2);
    auth::mint(&claims, SigningKey::Rsa)
}

#[tokio::test]
async fn python_refreshes_its_token_when_a_stream_closes_with_4001_or_a_request_gets_401() {
    let jwks = TestJwks::start().await;
    let mut deployment = deployment(&[
        ("STARCITE_AUTH_MODE", "jwt"),
        ("STARCITE_AUTH_JWKS_URL", &jwks.url),
        ("STARCITE_AUTH_JWT_ISSUER", ISSUER),
        ("STARCITE_AUTH_JWT_AUDIENCE", AUDIENCE),
    ])
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let token_url = format!("http://{}/token", listener.local_addr().unwrap());
    let acceptor = TcpAcceptor::from_tokio(listener).unwrap();
    let minting = tokio::spawn(async move {
        let app = Route::new().at("/token", get(short_lived_token));
        let _ = poem::Server::new_with_acceptor(acceptor).run(app).await;
    });
    let result = deployment.run(scenario("tokens", &[&token_url]), &[]).await;
    minting.abort();
    assert_eq!(
        result["errors"],
        json!({"unauthorized": "unauthorized", "forbidden": "forbidden_scope"})
    );
    // Each event was appended after the token before had expired, and tailed on.
    assert_eq!(result["tail"], json!([1, 2, 3]));
    assert!(result["tokens_minted"].as_u64().unwrap() >= 4, "{result}");
}

#[tokio::test]
async fn the_committed_python_wire_types_match_openapi_json() {
    let generated = tempfile::tempdir().unwrap();
    let output = generated.path().join("models.py");
    let status = Command::new(root().join("clients/python/generate.sh"))
        .arg(&output)
        .status()
        .await
        .unwrap();
    assert!(status.success(), "clients/python/generate.sh failed");
    let committed =
        std::fs::read_to_string(root().join("clients/python/starcite/models.py")).unwrap();
    assert!(
        std::fs::read_to_string(&output).unwrap() == committed,
        "clients/python/starcite/models.py is stale: run `make clients` and commit it"
    );
}
