//! The TypeScript SDK (`clients/typescript`): its test programs (`clients/typescript/test/`,
//! run with tsx against the committed build in `dist/`) recover from cut links, gateway
//! restarts and a silently dead connection, keep a producer's numbering across a restart,
//! refresh tokens and raise typed refusals; a page bundled from it tails through a restart in
//! headless Chromium; its unit tests pass; its committed types and build are current.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use poem::listener::TcpAcceptor;
use poem::web::Html;
use poem::{Response, Route, get};
use serde_json::{Value, json};
use starcite_tests::auth::{SigningKey, TestJwks, claims, mint, now};
use starcite_tests::{Browser, Fault, FaultyDeployment, GatewayProcess, event};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

fn package() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../clients/typescript")
}

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_starcite-e2e"))
}

/// `clients/typescript/test/<name>.ts` with `args`, run by Node with the package's tsx loaded:
/// one process, so dropping the command ends it.
fn program(name: &str, args: &[&str]) -> Command {
    let package = package();
    assert!(
        package.join("node_modules/tsx").exists(),
        "clients/typescript/node_modules is missing: run `make clients` (scripts/clients.sh) first"
    );
    let mut command = Command::new("node");
    command
        .current_dir(&package)
        .args(["--import", "tsx"])
        .arg(format!("test/{name}.ts"))
        .args(args);
    command
}

/// `{producer_seq: seq}` of what `producer` stored, asserting each producer_seq is stored once.
fn stored_by(events: &[Value], producer: &str) -> BTreeMap<u64, u64> {
    let mut seqs = BTreeMap::new();
    for event in events
        .iter()
        .filter(|event| event["producer_id"] == producer)
    {
        let producer_seq = event["producer_seq"].as_u64().unwrap();
        let previous = seqs.insert(producer_seq, event["seq"].as_u64().unwrap());
        assert!(
            previous.is_none(),
            "producer_seq {producer_seq} stored twice"
        );
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
    let events = deployment.stored_events(session).await;
    let stored = stored_by(&events, "writer");
    assert_eq!(stored.len(), 1_000, "each append stored once, no more");
    let acks = result["acks"].as_array().unwrap();
    assert_eq!(acks.len(), 1_000);
    for (position, ack) in acks.iter().enumerate() {
        let producer_seq = ack["producer_seq"].as_u64().unwrap();
        assert_eq!(producer_seq, position as u64 + 1, "numbered in call order");
        let seq = ack["seq"].as_u64().unwrap();
        assert_eq!(
            Some(&seq),
            stored.get(&producer_seq),
            "{ack} resolved with the seq it was stored at"
        );
        assert_eq!(
            events[seq as usize - 1]["payload"],
            ack["payload"],
            "its own event"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_producer_continues_from_its_saved_state_without_duplicates() {
    let mut deployment = FaultyDeployment::start(binary(), &[]).await;
    let session = "durable";
    create_session(&deployment.gateway.base_url, session).await;
    let state = tempfile::tempdir().unwrap();
    let state_file = state.path().join("producer.json");
    let state_file = state_file.to_str().unwrap();

    // The first process exits after half its acks, with appends still in flight.
    let first = deployment
        .run(
            program("durable", &[session, state_file, "first", "400"]),
            &[],
        )
        .await;
    let second = deployment
        .run(
            program("durable", &[session, state_file, "second", "300"]),
            &[(150, Fault::CutLinks)],
        )
        .await;

    let events = deployment.stored_events(session).await;
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
    assert_eq!(
        second.len(),
        300,
        "every append of the restarted producer resolved"
    );
    for ack in second {
        let producer_seq = ack["producer_seq"].as_u64().unwrap();
        assert_eq!(
            Some(&ack["seq"].as_u64().unwrap()),
            stored.get(&producer_seq)
        );
        let event = &events[ack["seq"].as_u64().unwrap() as usize - 1];
        assert_eq!(event["payload"]["text"], ack["payload"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_typed_errors_and_do_not_wedge_a_producer() {
    let mut deployment = FaultyDeployment::start(binary(), &[]).await;
    let result = deployment.run(program("refusals", &[]), &[]).await;
    let outcomes = &result["outcomes"];
    // Each case's class, code and status.
    let expected = json!({
        "expected_seq": ["ExpectedSeqConflict", "expected_seq_conflict", 409],
        "invalid_event": ["InvalidEvent", "invalid_event", 400],
        "invalid_refs": ["InvalidEvent", "invalid_refs", 400],
        "producer_seq": ["ProducerSeqConflict", "producer_seq_conflict", 409],
        "get_missing": ["NotFound", "session_not_found", 404],
        "append_missing": ["NotFound", "session_not_found", 404],
        "tail_missing": ["NotFound", "session_not_found", 404],
        "patch_version": ["ExpectedVersionConflict", "expected_version_conflict", 409],
        "session_exists": ["SessionExists", "session_exists", 409],
        "invalid_cursor": ["InvalidEvent", "invalid_cursor", 400],
    });
    for (case, wanted) in expected.as_object().unwrap() {
        let wanted = json!({"class": wanted[0], "code": wanted[1], "status": wanted[2]});
        assert_eq!(outcomes[case], wanted, "{case}");
    }
    assert_eq!(
        outcomes["deadline"], "TimeoutError",
        "retried until the deadline"
    );
    // Two appends, two by the rival, then the refused producer's next one.
    assert_eq!(result["after"]["seq"], 5);
    assert_eq!(result["after"]["producer_seq"], 5);
    let patched = json!({"title": "renamed", "version": 2, "archived": true});
    assert_eq!(result["patched"], patched);
    assert_eq!(
        result["listed"],
        json!([[true, true]]),
        "listed by metadata"
    );
    let changes = ["session.created", "session.updated", "session.archived"];
    assert_eq!(result["lifecycle"], json!(changes));
    assert_eq!(
        result["resumed"],
        json!(changes[1..]),
        "resumed after the first"
    );
}

/// Serves the browser test's page and its bundle (`test/browser-page.ts`, bundled by esbuild
/// for browsers, so through the package's `browser` entry) on a loopback port of its own: the
/// page's origin is not the gateway's, as for an app served from elsewhere.
async fn serve_page() -> (String, tokio::task::JoinHandle<()>) {
    let bundle = tempfile::tempdir().unwrap();
    let script = bundle.path().join("page.js");
    let outfile = format!("--outfile={}", script.display());
    let bundling = [
        "test/browser-page.ts",
        "--bundle",
        "--platform=browser",
        "--format=esm",
        &outfile,
    ];
    run_in_package("esbuild", &bundling).await;
    let script = std::fs::read_to_string(&script).unwrap();
    let page = "<!doctype html><title>tail</title><script type=module src=/page.js></script>";
    let app = Route::new()
        .at("/", get(poem::endpoint::make_sync(move |_| Html(page))))
        .at(
            "/page.js",
            get(poem::endpoint::make_sync(move |_| {
                Response::builder()
                    .content_type("text/javascript")
                    .body(script.clone())
            })),
        );
    serve(app).await
}

/// Serves `app` on a loopback port: its `http://host:port` and the task to abort.
async fn serve(app: Route) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let acceptor = TcpAcceptor::from_tokio(listener).unwrap();
    let server = tokio::spawn(async move {
        let _ = poem::Server::new_with_acceptor(acceptor).run(app).await;
    });
    (url, server)
}

/// POSTs `body` to the gateway at `base_url`, expecting 201.
async fn post_created(base_url: &str, path: &str, body: Value) {
    let response = reqwest::Client::new()
        .post(format!("{base_url}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{path}");
}

async fn create_session(base_url: &str, session: &str) {
    post_created(base_url, "/v1/sessions", json!({"id": session})).await;
}

async fn append(base_url: &str, session: &str, producer_seq: u64) {
    let path = format!("/v1/sessions/{session}/append");
    post_created(base_url, &path, event("http", producer_seq)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_tails_through_a_gateway_restart_in_a_real_browser() {
    let mut deployment = FaultyDeployment::start(binary(), &[]).await;
    create_session(&deployment.gateway.base_url, "browser").await;
    let (page, server) = serve_page().await;
    let browser = Browser::start().await;
    browser
        .goto(&format!(
            "{page}/?session=browser&gateway={}",
            deployment.url()
        ))
        .await;
    // Three events, a gateway restart, three more: the page shows each once.
    for (round, producer_seqs) in [1..=3, 4..=6].into_iter().enumerate() {
        if round == 1 {
            deployment.inject(Fault::RestartGateway).await;
        }
        let base_url = deployment.gateway.base_url.clone();
        for producer_seq in producer_seqs.clone() {
            append(&base_url, "browser", producer_seq).await;
        }
        let tailed: Vec<u64> = (1..=*producer_seqs.end()).collect();
        let check = format!(
            "return JSON.stringify(window.tailed) === '{}'",
            json!(tailed)
        );
        browser
            .wait_until(&check, &format!("the page tails {tailed:?}"))
            .await;
    }
    assert_eq!(browser.execute("return window.failures").await, json!([]));
    server.abort();
}

/// Every file under `dir`, by path relative to it.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut found = BTreeMap::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let relative = path.strip_prefix(dir).unwrap().to_owned();
                found.insert(relative, std::fs::read(&path).unwrap());
            }
        }
    }
    found
}

async fn run_in_package(command: &str, args: &[&str]) {
    let output = Command::new(package().join("node_modules/.bin").join(command))
        .current_dir(package())
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{command} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn the_sdk_unit_tests_pass() {
    run_in_package("tsx", &["--test", "test/units.test.ts"]).await;
}

#[tokio::test]
async fn the_committed_types_and_build_are_what_the_spec_and_sources_give() {
    let fresh = tempfile::tempdir().unwrap();
    let schema = fresh.path().join("schema.ts");
    run_in_package(
        "openapi-typescript",
        &["../../openapi.json", "-o", schema.to_str().unwrap()],
    )
    .await;
    assert!(
        std::fs::read(&schema).unwrap()
            == std::fs::read(package().join("src/generated/schema.ts")).unwrap(),
        "src/generated/schema.ts is stale: run `make clients` and commit it"
    );
    let dist = fresh.path().join("dist");
    run_in_package(
        "tsc",
        &[
            "-p",
            "tsconfig.build.json",
            "--outDir",
            dist.to_str().unwrap(),
        ],
    )
    .await;
    let (built, committed) = (files(&dist), files(&package().join("dist")));
    assert_eq!(
        built.keys().collect::<Vec<_>>(),
        committed.keys().collect::<Vec<_>>(),
        "dist/ holds other files than a build: run `make clients` and commit it"
    );
    for (path, content) in &built {
        assert!(
            &committed[path] == content,
            "dist/{} is stale: run `make clients` and commit it",
            path.display()
        );
    }
}

/// A token endpoint like an app's backend: `?scope=…` answers a token for that scope, valid for
/// two seconds.
async fn serve_tokens() -> (String, tokio::task::JoinHandle<()>) {
    let app = Route::new().at(
        "/token",
        get(poem::endpoint::make_sync(|request| {
            let url = reqwest::Url::parse(&format!("http://token{}", request.uri())).unwrap();
            let scope = url
                .query_pairs()
                .find_map(|(name, value)| (name == "scope").then(|| value.into_owned()))
                .unwrap_or_default();
            let mut short = claims("acme", "agent:sdk", &scope);
            short["exp"] = json!(now() + 2);
            mint(&short, SigningKey::Rsa)
        })),
    );
    let (url, server) = serve(app).await;
    (format!("{url}/token"), server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_outlives_its_tokens_and_refusals_of_a_token_are_typed() {
    let jwks = TestJwks::start().await;
    let env = [
        ("STARCITE_AUTH_MODE", "jwt"),
        ("STARCITE_AUTH_JWKS_URL", jwks.url.as_str()),
        ("STARCITE_AUTH_JWT_ISSUER", starcite_tests::auth::ISSUER),
        ("STARCITE_AUTH_JWT_AUDIENCE", starcite_tests::auth::AUDIENCE),
        ("STARCITE_AUTH_JWT_LEEWAY_SECONDS", "0"),
    ];
    let mut deployment = FaultyDeployment::start(binary(), &env).await;
    let (tokens, server) = serve_tokens().await;
    let result = deployment.run(program("tokens", &[&tokens]), &[]).await;
    let outcomes = &result["outcomes"];
    assert_eq!(
        outcomes["no_token"],
        json!({"class": "Unauthorized", "code": "unauthorized"})
    );
    assert_eq!(
        outcomes["create_without_scope"],
        json!({"class": "Forbidden", "code": "forbidden_scope"})
    );
    assert_eq!(
        outcomes["produce_without_scope"],
        json!({"class": "Forbidden", "code": "forbidden_scope"})
    );
    assert_eq!(
        result["tailed"],
        json!([1, 2]),
        "each event once, across expiries"
    );
    assert!(result["refreshes_by_tail"].as_u64().unwrap() >= 2);
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_on_a_silently_dead_connection_notices_and_moves_on() {
    // Pings every 300 ms keep a live connection from looking idle to a client that waits 2 s.
    let env = [("STARCITE_TAIL_PING_INTERVAL", "300ms")];
    let deployment = FaultyDeployment::start(binary(), &env).await;
    let standby = GatewayProcess::start(binary(), &deployment.nats, &env).await;
    create_session(&deployment.gateway.base_url, "quiet").await;
    append(&deployment.gateway.base_url, "quiet", 1).await;

    let mut tail = program("silence", &["quiet", "2000"]);
    tail.env("STARCITE_URL", deployment.url())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut tail = tail.spawn().unwrap();
    let mut lines = BufReader::new(tail.stdout.take().unwrap()).lines();
    while lines.next_line().await.unwrap().unwrap() != "progress 1" {}

    // The tail's gateway freezes with the connection open, as behind a dead NAT: no close, no
    // reset, no ping. New connections reach the standby gateway, which gets event 2.
    let frozen = std::process::Command::new("kill")
        .args(["-STOP", &deployment.gateway.pid().to_string()])
        .status()
        .unwrap();
    assert!(frozen.success());
    deployment.proxy.retarget(&standby.address);
    append(&standby.base_url, "quiet", 2).await;

    // Bounds a hang: a tail that never noticed would wait on the frozen gateway forever.
    let reading = async {
        let mut result = None;
        while let Some(line) = lines.next_line().await.unwrap() {
            result = result.or(line.strip_prefix("result ").map(str::to_owned));
        }
        result.expect("the tail gave no result")
    };
    let result = tokio::time::timeout(Duration::from_secs(60), reading)
        .await
        .expect("the tail never noticed its connection was dead");
    let result: Value = serde_json::from_str(&result).unwrap();
    assert_eq!(result["tailed"], json!([1, 2]));
}
