//! On a three-node cluster with replicated streams: every answer that decides (seq, dedupe,
//! `expected_seq`, existence, tail position) agrees with the stream leader, whichever node a
//! gateway talks to and however far behind that node's replica is.

use std::time::Duration;

use serde_json::json;
use starcite_tests::{StaleReplica, TcpProxy, TestCluster, TestGateway, event};

const EVENTS: &str = "STARCITE_EVENTS";
const SESSIONS: &str = "KV_starcite_sessions";

/// A gateway on a replicated topology, connected to `urls` only.
async fn gateway_on(urls: Vec<String>) -> TestGateway {
    TestGateway::start_with(TestGateway::replicated_config(urls)).await
}

/// Four nodes 10 ms apart, the streams on three of them. Gateway `a` is on every node;
/// gateway `b` is on the node that holds no replica of `stale_stream`, where a replica of it
/// that has not caught up answers every Direct Get first. `b`'s link to NATS can be cut.
struct StaleReads {
    _cluster: TestCluster,
    a: TestGateway,
    b: TestGateway,
    b_link: TcpProxy,
    _stale: StaleReplica,
}

impl StaleReads {
    async fn start(stale_stream: &str) -> StaleReads {
        let cluster = TestCluster::start_with(4, Duration::from_millis(10)).await;
        let a = gateway_on(cluster.urls()).await;
        let node = cluster.node_without(&[stale_stream]).await;
        let stale = StaleReplica::start(&cluster.url(node), stale_stream).await;
        let b_link = TcpProxy::start(cluster.url(node).trim_start_matches("nats://")).await;
        let b = gateway_on(vec![b_link.url.clone()]).await;
        StaleReads {
            _cluster: cluster,
            a,
            b,
            b_link,
            _stale: stale,
        }
    }
}

/// Before: `b` caught up from the stale replica, took its short read as complete and refused
/// `expected_seq: 6` with "current seq is 1".
#[tokio::test]
async fn expected_seq_through_another_gateway_sees_the_seq_just_answered() {
    let setup = StaleReads::start(EVENTS).await;
    let id = setup.a.create_session().await;
    // `b` caches the session's state at seq 1.
    setup.b.append_ok(&id, event("b", 1)).await;
    for producer_seq in 1..=5 {
        setup.a.append_ok(&id, event("a", producer_seq)).await;
    }
    let mut next = event("b", 2);
    next["expected_seq"] = json!(6);
    assert_eq!(setup.b.append_ok(&id, next).await["seq"], 7);
    // `b`'s own state now holds seq 7: a stale expectation is refused with the true seq.
    let mut older = event("a", 6);
    older["expected_seq"] = json!(6);
    let conflict = setup.b.append(&id, older).await;
    let body = setup.b.expect(conflict, 409).await;
    assert_eq!(body["error"], "expected_seq_conflict");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("current seq is 7"),
        "{body}"
    );
}

/// Before: the session lookup read the stale replica of the sessions bucket and answered 404.
#[tokio::test]
async fn a_session_created_through_one_gateway_exists_at_once_through_another() {
    let setup = StaleReads::start(SESSIONS).await;
    let id = setup.a.create_session().await;
    let session = setup.b.expect(setup.b.session(&id).await, 200).await;
    assert_eq!(session["id"], json!(id));
    assert_eq!(setup.b.append_ok(&id, event("b", 1)).await["seq"], 1);
    let mut tail = setup.b.tail(&id, 0).await;
    assert_eq!(tail.seqs(1).await, vec![1]);
    let unknown = setup.b.session("never-created").await;
    assert_eq!(unknown.status(), 404);
}

/// Before: finding where cursor 3 resumes probed the stale replica, found no event 4 and
/// failed the tail with a 500.
#[tokio::test]
async fn a_tail_from_a_cursor_starts_right_after_it() {
    let setup = StaleReads::start(EVENTS).await;
    let id = setup.a.create_session().await;
    for producer_seq in 1..=10 {
        setup.a.append_ok(&id, event("a", producer_seq)).await;
    }
    let mut tail = setup.b.tail(&id, 3).await;
    assert_eq!(tail.seqs(7).await, (4..=10).collect::<Vec<_>>());
    let page = setup
        .b
        .request(
            reqwest::Method::GET,
            &format!("/v1/sessions/{id}/events?cursor=8"),
            None,
        )
        .await;
    let page = setup.b.expect(page, 200).await;
    let seqs: Vec<u64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![9, 10]);
}

/// Before: the live feed read back what it missed during a reconnect from the stale replica,
/// found nothing and went on past a hole.
#[tokio::test]
async fn a_live_tail_across_a_reconnect_misses_nothing() {
    let setup = StaleReads::start(EVENTS).await;
    let id = setup.a.create_session().await;
    let mut tail = setup.b.tail(&id, 0).await;
    for producer_seq in 1..=3 {
        setup.a.append_ok(&id, event("a", producer_seq)).await;
    }
    assert_eq!(tail.seqs(3).await, vec![1, 2, 3]);
    setup.b_link.cut();
    for producer_seq in 4..=6 {
        setup.a.append_ok(&id, event("a", producer_seq)).await;
    }
    setup.b_link.heal();
    setup.b.wait_until_ready().await;
    setup.a.append_ok(&id, event("a", 7)).await;
    assert_eq!(tail.seqs(4).await, vec![4, 5, 6, 7]);
    tail.expect_no_event(Duration::from_millis(200)).await;
}
