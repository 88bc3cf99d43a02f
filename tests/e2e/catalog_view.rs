//! The catalog view on a gateway's disk: resumed after a restart without reading the bucket
//! again, built anew when deleted, unreadable or of another bucket, and lists answering
//! `503 catalog_loading` while it is being built, with appends served meanwhile; a build says
//! how far it has read, and one whose replay loses messages with its connection starts over
//! instead of leaving sessions out.
//! The catalogs the bench fills are stored as a gateway stores its own.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream::consumer::pull;
use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use starcite_tests::catalog::{BUCKET, fill_bucket, id, session};
use starcite_tests::{TcpProxy, TestGateway, TestNats, error_of, event, eventually};

use crate::admin::system_page;

/// The bucket's stream, as the default configuration names it.
const BUCKET_STREAM: &str = "KV_starcite_sessions";

async fn list(gateway: &TestGateway, query: &str) -> Vec<String> {
    let response = gateway
        .request(Method::GET, &format!("/v1/sessions{query}"), None)
        .await;
    let page = gateway.expect(response, 200).await;
    page["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|session| session["id"].as_str().unwrap().to_owned())
        .collect()
}

/// A value of `/metrics` without labels.
async fn metric(gateway: &TestGateway, name: &str) -> f64 {
    let response = gateway.request(Method::GET, "/metrics", None).await;
    let text = response.text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} is not in /metrics"))
        .trim()
        .parse()
        .unwrap()
}

async fn applied(gateway: &TestGateway) -> f64 {
    metric(gateway, "starcite_catalog_view_applied_total").await
}

async fn bucket_stream(nats: &TestNats) -> async_nats::jetstream::stream::Stream {
    nats.jetstream()
        .await
        .get_stream(BUCKET_STREAM)
        .await
        .unwrap()
}

/// Messages delivered by every consumer on the bucket's stream.
async fn delivered(bucket: &async_nats::jetstream::stream::Stream) -> u64 {
    let mut consumers = bucket.consumers();
    let mut delivered = 0;
    while let Some(info) = consumers.next().await {
        delivered += info.unwrap().delivered.consumer_sequence;
    }
    delivered
}

/// Creates `count` sessions `<prefix>-00`, `<prefix>-01`, …
async fn create(gateway: &TestGateway, prefix: &str, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for n in 0..count {
        let id = format!("{prefix}-{n:02}");
        gateway.create_session_with(json!({"id": id})).await;
        ids.push(id);
    }
    ids
}

fn view_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "redb")
        })
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn the_view_resumes_after_a_restart_without_reading_the_bucket_again() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let mut ids = create(&gateway, "kept", 30).await;
    gateway
        .request(Method::POST, "/v1/sessions/kept-03/archive", None)
        .await;
    assert_eq!(list(&gateway, "?limit=100").await.len(), 29);
    assert!(applied(&gateway).await >= 30.0);
    gateway.stop().await;

    let gateway = TestGateway::start(&nats).await;
    assert_eq!(list(&gateway, "?limit=100&archived=all").await, ids);
    assert_eq!(list(&gateway, "?archived=true").await, vec!["kept-03"]);
    assert_eq!(applied(&gateway).await, 0.0, "the bucket was read again");
    assert_eq!(metric(&gateway, "starcite_catalog_sessions").await, 30.0);
    assert_eq!(
        metric(&gateway, "starcite_catalog_view_build_seconds").await,
        0.0,
        "a view was built"
    );

    // Only what changed since is applied.
    ids.extend(create(&gateway, "later", 1).await);
    assert_eq!(list(&gateway, "?limit=100&archived=all").await, ids);
    assert_eq!(applied(&gateway).await, 1.0);
}

#[tokio::test]
async fn a_deleted_view_is_built_again_from_the_bucket() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let ids = create(&gateway, "s", 20).await;
    for _ in 0..3 {
        gateway
            .request(
                Method::PATCH,
                "/v1/sessions/s-05",
                Some(json!({"metadata": {"team": "blue"}})),
            )
            .await;
    }
    gateway.stop().await;
    std::fs::remove_dir_all(nats.catalog_dir()).unwrap();

    let gateway = TestGateway::start(&nats).await;
    assert_eq!(list(&gateway, "?limit=100").await, ids);
    assert_eq!(list(&gateway, "?metadata[team]=blue").await, vec!["s-05"]);
    // A rebuild replays the bucket's stream: every version, the three patches too.
    assert_eq!(applied(&gateway).await, 23.0);
    let built = metric(&gateway, "starcite_catalog_view_build_seconds").await;
    let replayed = metric(&gateway, "starcite_catalog_view_build_replay_seconds").await;
    assert!(
        0.0 < replayed && replayed <= built,
        "build {built} s, replay {replayed} s"
    );
}

#[tokio::test]
async fn an_unreadable_view_file_is_detected_and_built_again() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let ids = create(&gateway, "c", 10).await;
    gateway.stop().await;
    let files = view_files(&nats.catalog_dir());
    assert!(!files.is_empty(), "no view file was written");
    for file in &files {
        let length = std::fs::metadata(file).unwrap().len();
        std::fs::write(file, vec![0xa5; length as usize]).unwrap();
    }

    let gateway = TestGateway::start(&nats).await;
    assert_eq!(list(&gateway, "?limit=100").await, ids);
    assert_eq!(applied(&gateway).await, 10.0);
}

#[tokio::test]
async fn a_view_of_another_servers_bucket_is_detected_and_built_again() {
    let elsewhere = TestNats::start();
    let gateway = TestGateway::start(&elsewhere).await;
    create(&gateway, "foreign", 5).await;
    gateway.stop().await;
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let ids = create(&gateway, "own", 3).await;
    gateway.stop().await;
    // Another server's view, at a higher revision than this bucket has, in this one's place.
    let foreign = view_files(&elsewhere.catalog_dir());
    let own = view_files(&nats.catalog_dir());
    assert_eq!((foreign.len(), own.len()), (1, 1));
    std::fs::copy(&foreign[0], &own[0]).unwrap();

    let gateway = TestGateway::start(&nats).await;
    assert_eq!(list(&gateway, "?limit=100").await, ids);
    assert_eq!(applied(&gateway).await, 3.0);
    assert_eq!(metric(&gateway, "starcite_catalog_sessions").await, 3.0);
}

#[tokio::test]
async fn lists_answer_503_catalog_loading_while_the_view_is_built_and_appends_go_on() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let ids = create(&gateway, "b", 3).await;
    gateway.stop().await;
    // A view is built through a consumer on the bucket's stream: while the stream takes no
    // more consumers, the build cannot begin, however fast it would be.
    let jetstream = nats.jetstream().await;
    let stream = jetstream.get_stream(BUCKET_STREAM).await.unwrap();
    let mut fillers = Vec::new();
    for n in 0..2000 {
        let name = format!("filler-{n}");
        let config = pull::Config {
            durable_name: Some(name.clone()),
            ..Default::default()
        };
        if stream.create_consumer(config).await.is_err() {
            break;
        }
        fillers.push(name);
    }
    assert!(fillers.len() < 2000, "the stream took every consumer");

    let mut config = TestGateway::config(&nats);
    config.catalog.dir = nats.catalog_dir().join("fresh");
    config.catalog.loading_wait = Duration::ZERO;
    // Ready without its catalog: appends and tails are served at once.
    let gateway = TestGateway::start_with(config).await;
    let response = gateway.request(Method::GET, "/v1/sessions", None).await;
    let retry_after = response.headers().get("retry-after").cloned();
    assert_eq!(error_of(response).await, (503, "catalog_loading".into()));
    assert_eq!(retry_after.unwrap(), "1");
    assert_eq!(metric(&gateway, "starcite_catalog_loading").await, 1.0);
    assert_eq!(gateway.append_ok("b-01", event("p", 1)).await["seq"], 1);
    let console = gateway.request(Method::GET, "/admin/", None).await;
    assert_eq!(console.status(), 503);

    stream.delete_consumer(&fillers[0]).await.unwrap();
    let listed = eventually(Duration::from_secs(15), || async {
        let response = gateway.request(Method::GET, "/v1/sessions", None).await;
        match response.status().as_u16() {
            200 => Ok(response.json::<Value>().await.unwrap()),
            status => Err(format!("the list is still {status}")),
        }
    })
    .await;
    let listed: Vec<&str> = listed["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|session| session["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ids);
    assert_eq!(metric(&gateway, "starcite_catalog_loading").await, 0.0);
}

#[tokio::test]
async fn a_sessions_bucket_created_anew_gets_its_view_built_anew() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    create(&gateway, "old", 3).await;
    assert_eq!(list(&gateway, "").await.len(), 3);
    let jetstream = nats.jetstream().await;
    jetstream.delete_stream(BUCKET_STREAM).await.unwrap();

    // The gateway creates the bucket again; its view then holds the new bucket's sessions only.
    eventually(Duration::from_secs(30), || async {
        let response = gateway.request(Method::GET, "/v1/sessions", None).await;
        let status = response.status().as_u16();
        let page: Value = response.json().await.unwrap();
        match page["sessions"].as_array() {
            Some(sessions) if status == 200 && sessions.is_empty() => Ok(()),
            _ => Err(format!("the list is {status} {page}")),
        }
    })
    .await;
    let ids = create(&gateway, "new", 2).await;
    assert_eq!(list(&gateway, "").await, ids);
}

#[tokio::test]
async fn a_build_shows_how_far_it_has_read_and_one_losing_messages_starts_over_leaving_none_out() {
    const SESSIONS: usize = 60_000;
    let nats = TestNats::start();
    TestGateway::start(&nats).await.stop().await;
    fill_bucket(&nats, SESSIONS).await;
    let bucket = bucket_stream(&nats).await;
    let proxy = TcpProxy::start(nats.url.trim_start_matches("nats://")).await;
    let mut config = TestGateway::config(&nats);
    config.nats.urls = vec![proxy.url.clone()];
    config.catalog.dir = nats.catalog_dir().join("cut");
    let gateway = TestGateway::start_with(config).await;
    eventually(Duration::from_secs(30), || async {
        if applied(&gateway).await > 0.0 {
            Ok(())
        } else {
            Err("the replay has not begun".to_owned())
        }
    })
    .await;

    // The link stops carrying what the server sends, then drops: the gateway's next pull still
    // reaches the server, whose consumer counts its messages delivered, and they are lost.
    proxy.stop_replies();
    let applied_before_the_cut = applied(&gateway).await;
    // Stalled mid-replay, the build says how far it has read, on the console and in its
    // metrics: every version of the bucket read or still to read (a replay that has read it
    // all is merging, and says so instead).
    eventually(Duration::from_secs(30), || async {
        let shown = build_progress_shown(&system_page(&gateway).await);
        let pending = metric(&gateway, "starcite_catalog_view_build_pending").await;
        match shown {
            Some((read, to_go))
                if read > 0 && read + to_go == SESSIONS as u64 && to_go as f64 == pending =>
            {
                Ok(())
            }
            _ => Err(format!(
                "the console shows {shown:?} (read, to go), the metric {pending} pending"
            )),
        }
    })
    .await;
    let sent_before = delivered(&bucket).await;
    eventually(Duration::from_secs(30), || async {
        if delivered(&bucket).await > sent_before {
            Ok(())
        } else {
            Err("no message has been sent since".to_owned())
        }
    })
    .await;
    proxy.cut();
    proxy.heal();
    assert!(
        applied_before_the_cut < SESSIONS as f64,
        "the replay ended before its link was cut"
    );

    eventually(Duration::from_secs(120), || async {
        let response = gateway
            .request(Method::GET, "/v1/sessions?limit=1", None)
            .await;
        match response.status().as_u16() {
            200 => Ok(()),
            status => Err(format!("the list is still {status}")),
        }
    })
    .await;
    assert_eq!(
        metric(&gateway, "starcite_catalog_sessions").await,
        SESSIONS as f64
    );
    assert_eq!(
        metric(&gateway, "starcite_catalog_view_build_pending").await,
        0.0
    );
    let system = system_page(&gateway).await;
    let serving = format!("serving lists, applied through bucket revision {SESSIONS}");
    assert!(system.contains(&serving), "{system}");
    assert!(
        !system.contains("none since this gateway started"),
        "{system}"
    );
    // Read whole again after the replay cut short: one that went on past the loss would have
    // left the sessions it lost out of the view.
    assert!(applied(&gateway).await >= applied_before_the_cut + SESSIONS as f64);
    let mut ids: Vec<String> = (0..SESSIONS).map(id).collect();
    ids.sort();
    assert_eq!(list(&gateway, "?limit=100&archived=all").await, ids[..100]);
}

/// The (read, to go) figures of a build in progress, as the system page shows them.
fn build_progress_shown(system: &str) -> Option<(u64, u64)> {
    let (_, shown) = system.split_once("building: ")?;
    let (read, rest) = shown.split_once(" header versions read from the bucket, ")?;
    let (to_go, _) = rest.split_once(" to go")?;
    Some((read.parse().ok()?, to_go.parse().ok()?))
}

/// The header of `id` as the bucket stores it: the message's headers, name by name, and the
/// value's fields.
async fn stored_header(nats: &TestNats, id: &str) -> (Vec<(String, Vec<String>)>, Value) {
    let bucket = bucket_stream(nats).await;
    let id = gateway::sessions::model::SessionId::parse(id).unwrap();
    let subject = gateway::nats::subjects::bucket_key(BUCKET, &id);
    let message = bucket
        .get_last_raw_message_by_subject(&subject)
        .await
        .unwrap();
    let mut headers: Vec<_> = message
        .headers
        .iter()
        .map(|(name, values)| {
            let values = values.iter().map(|value| value.as_str().to_owned());
            (name.to_string(), values.collect())
        })
        .collect();
    headers.sort();
    (headers, serde_json::from_slice(&message.payload).unwrap())
}

/// The names of a JSON object's fields.
fn field_names(object: &Value) -> BTreeSet<&str> {
    object
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect()
}

#[tokio::test]
async fn the_benchs_fill_stores_each_header_as_a_gateways_create_does() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let filled = session(0);
    let created = gateway
        .create_session_with(json!({
            "title": filled.title,
            "metadata": filled.metadata,
        }))
        .await;
    fill_bucket(&nats, 1).await;

    let (created_headers, created_value) =
        stored_header(&nats, created["id"].as_str().unwrap()).await;
    let (filled_headers, filled_value) = stored_header(&nats, &id(0)).await;
    // A replay delivers the message's headers too, and what nats-server and the gateway do per
    // message depends on them (docs/performance.md).
    assert!(!created_headers.is_empty());
    assert_eq!(filled_headers, created_headers);
    assert_eq!(field_names(&filled_value), field_names(&created_value));
    assert_eq!(
        field_names(&filled_value["metadata"]),
        field_names(&created_value["metadata"])
    );
    gateway.stop().await;
}
