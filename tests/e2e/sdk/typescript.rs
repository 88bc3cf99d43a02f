//! The TypeScript SDK (`clients/typescript`): its test programs (`clients/typescript/test/`,
//! run with tsx against the committed build in `dist/`) recover from cut links and gateway
//! restarts, keep a producer's numbering across a restart, and raise typed refusals.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use starcite_tests::{Fault, FaultyDeployment};
use tokio::process::Command;

fn package() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../clients/typescript")
}

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_starcite-e2e"))
}

/// `clients/typescript/test/<name>.ts` with `args`, run by the package's own tsx.
fn program(name: &str, args: &[&str]) -> Command {
    let package = package();
    let tsx = package.join("node_modules/.bin/tsx");
    assert!(
        tsx.exists(),
        "{} is missing: run `make clients` (scripts/clients.sh) first",
        tsx.display()
    );
    let mut command = Command::new(tsx);
    command
        .current_dir(&package)
        .arg(format!("test/{name}.ts"))
        .args(args);
    command
}

/// Every event of `session`, read back over plain HTTP from the gateway itself.
async fn stored(base_url: &str, session: &str) -> Vec<Value> {
    let client = reqwest::Client::new();
    let mut events = Vec::new();
    let mut cursor = 0;
    loop {
        let page: Value = client
            .get(format!(
                "{base_url}/v1/sessions/{session}/events?cursor={cursor}&limit=1000"
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        events.extend(page["events"].as_array().unwrap().iter().cloned());
        cursor = page["next_cursor"].as_u64().unwrap();
        if page["caught_up"] == true {
            return events;
        }
    }
}

/// `{producer_seq: seq}` of what `producer` stored, asserting each producer_seq is stored once.
fn stored_by(events: &[Value], producer: &str) -> BTreeMap<u64, u64> {
    let mut seqs = BTreeMap::new();
    for event in events.iter().filter(|event| event["producer_id"] == producer) {
        let producer_seq = event["producer_seq"].as_u64().unwrap();
        let previous = seqs.insert(producer_seq, event["seq"].as_u64().unwrap());
        assert!(previous.is_none(), "producer_seq {producer_seq} stored twice");
    }
    seqs
}

fn seqs(values: &Value) -> Vec<u64> {
    values
        .as_array()
        .unwrap()
        .iter()
        .map(|seq| {
            seq.as_u64()
                .unwrap_or_else(|| panic!("not an event: {seq}"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_and_tails_survive_cut_links_and_a_gateway_restart() {
    let mut deployment = FaultyDeployment::start(binary(), &[]).await;
    let faults = [
        (250, Fault::CutLinks),
        (500, Fault::RestartGateway),
        (750, Fault::CutLinks),
    ];
    let result = deployment.run(program("recovery", &[]), &faults).await;

    let every_seq: Vec<u64> = (1..=1_000).collect();
    assert_eq!(seqs(&result["websocket"]), every_seq, "the WebSocket tail");
    assert_eq!(seqs(&result["sse"]), every_seq, "the SSE tail");

    let session = result["session"].as_str().unwrap();
    let events = stored(&deployment.gateway.base_url, session).await;
    let stored = stored_by(&events, "writer");
    assert_eq!(stored.len(), 1_000, "each append stored once, no more");
    let acks = result["acks"].as_array().unwrap();
    assert_eq!(acks.len(), 1_000);
    for (call, ack) in acks.iter().enumerate() {
        let producer_seq = ack["producer_seq"].as_u64().unwrap();
        assert_eq!(producer_seq, call as u64 + 1, "numbered in call order");
        assert_eq!(
            Some(&ack["seq"].as_u64().unwrap()),
            stored.get(&producer_seq),
            "call {call} resolved with the seq it was stored at"
        );
        let event = &events[ack["seq"].as_u64().unwrap() as usize - 1];
        assert_eq!(event["payload"]["call"], call, "call {call}'s own event");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_producer_continues_from_its_saved_state_without_duplicates() {
    let mut deployment = FaultyDeployment::start(binary(), &[]).await;
    let session = "durable";
    let created = reqwest::Client::new()
        .post(format!("{}/v1/sessions", deployment.gateway.base_url))
        .json(&serde_json::json!({"id": session}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let state = tempfile::tempdir().unwrap();
    let state_file = state.path().join("producer.json");
    let state_file = state_file.to_str().unwrap();

    // The first process exits after half its acks, with appends still in flight.
    let first = deployment
        .run(program("durable", &[session, state_file, "first", "400"]), &[])
        .await;
    let second = deployment
        .run(
            program("durable", &[session, state_file, "second", "300"]),
            &[(150, Fault::CutLinks)],
        )
        .await;

    let events = stored(&deployment.gateway.base_url, session).await;
    let stored = stored_by(&events, "agent");
    let last = *stored.keys().last().unwrap();
    assert_eq!(
        stored.keys().copied().collect::<Vec<_>>(),
        (1..=last).collect::<Vec<_>>(),
        "producer_seqs continue without a hole"
    );
    let mut payloads: Vec<&str> = events
        .iter()
        .map(|event| event["payload"]["text"].as_str().unwrap())
        .collect();
    payloads.sort_unstable();
    let before = payloads.len();
    payloads.dedup();
    assert_eq!(payloads.len(), before, "no event stored twice");
    assert_eq!(first["acks"].as_array().unwrap().len(), 200);
    let second = second["acks"].as_array().unwrap();
    assert_eq!(second.len(), 300, "every append of the restarted producer resolved");
    for ack in second {
        let producer_seq = ack["producer_seq"].as_u64().unwrap();
        assert_eq!(Some(&ack["seq"].as_u64().unwrap()), stored.get(&producer_seq));
        let event = &events[ack["seq"].as_u64().unwrap() as usize - 1];
        assert_eq!(event["payload"]["text"], ack["payload"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_typed_errors_and_do_not_wedge_a_producer() {
    let mut deployment = FaultyDeployment::start(binary(), &[]).await;
    let result = deployment.run(program("refusals", &[]), &[]).await;
    let outcomes = &result["outcomes"];
    let expect = |case: &str, class: &str, code: &str| {
        assert_eq!(outcomes[case]["class"], class, "{case}: {}", outcomes[case]);
        assert_eq!(outcomes[case]["code"], code, "{case}: {}", outcomes[case]);
    };
    expect("expected_seq", "ExpectedSeqConflict", "expected_seq_conflict");
    expect("invalid_event", "InvalidEvent", "invalid_event");
    expect("invalid_refs", "InvalidEvent", "invalid_refs");
    expect("producer_seq", "ProducerSeqConflict", "producer_seq_conflict");
    expect("get_missing", "NotFound", "session_not_found");
    expect("append_missing", "NotFound", "session_not_found");
    expect("tail_missing", "NotFound", "session_not_found");
    expect("patch_version", "StarciteError", "expected_version_conflict");
    expect("invalid_cursor", "InvalidEvent", "invalid_cursor");
    // One append, two by the rival, then the refused producer's next one.
    assert_eq!(result["after"]["seq"], 4);
    assert_eq!(result["after"]["producer_seq"], 4);
    assert_eq!(result["archived"], true);
}
