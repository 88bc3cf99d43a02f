//! Batch appends and group commits: several events in one atomic JetStream batch, each still
//! answered as if appended alone.

use std::collections::HashMap;

use reqwest::Method;
use serde_json::{Value, json};
use starcite_tests::{TestGateway, TestNats, event, eventually, path_segment};

async fn append_batch(gateway: &TestGateway, id: &str, events: Vec<Value>) -> (u16, Value) {
    let path = format!("/v1/sessions/{}/append_batch", path_segment(id));
    let response = gateway
        .request(Method::POST, &path, Some(json!({ "events": events })))
        .await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn seqs(reply: &Value) -> Vec<u64> {
    reply["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["seq"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn a_batch_gets_consecutive_seqs_and_tails_see_each_event() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let id = gateway.create_session().await;
    gateway.append_ok(&id, event("a", 1)).await;
    let events = (1..=3).map(|seq| event("b", seq)).collect();
    let (status, reply) = append_batch(&gateway, &id, events).await;
    assert_eq!(status, 201, "{reply}");
    assert_eq!(seqs(&reply), vec![2, 3, 4]);
    assert_eq!(reply["last_seq"], 4);
    assert!(
        reply["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|event| event["deduped"] == false && event["last_seq"] == 4)
    );
    let mut tail = gateway.tail(&id, 0).await;
    assert_eq!(tail.seqs(4).await, vec![1, 2, 3, 4]);
    // The next single append continues right after the batch.
    assert_eq!(gateway.append_ok(&id, event("a", 2)).await["seq"], 5);
}

#[tokio::test]
async fn one_bad_event_rejects_the_whole_batch_and_nothing_is_written() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let id = gateway.create_session().await;
    gateway.append_ok(&id, event("p", 1)).await;

    // A producer_seq that skips ahead, in the middle of the batch.
    let (status, reply) = append_batch(
        &gateway,
        &id,
        vec![event("p", 2), event("p", 4), event("q", 1)],
    )
    .await;
    assert_eq!(
        (status, reply["error"].as_str()),
        (409, Some("producer_seq_conflict"))
    );

    // A stale expected_seq on the first event.
    let mut stale = event("p", 2);
    stale["expected_seq"] = json!(0);
    let (status, reply) = append_batch(&gateway, &id, vec![stale, event("p", 3)]).await;
    assert_eq!(
        (status, reply["error"].as_str()),
        (409, Some("expected_seq_conflict"))
    );

    // An invalid event is refused before anything is tried, and named by its index.
    let mut invalid = event("p", 3);
    invalid["type"] = json!("");
    let (status, reply) = append_batch(&gateway, &id, vec![event("p", 2), invalid]).await;
    assert_eq!(
        (status, reply["error"].as_str()),
        (400, Some("invalid_event"))
    );
    assert!(
        reply["message"].as_str().unwrap().contains("events[1]"),
        "{reply}"
    );

    assert_eq!(gateway.last_seq(&id).await, 1);
    // expected_seq inside a batch is checked against the events before it.
    let mut second = event("p", 3);
    second["expected_seq"] = json!(2);
    let (status, reply) = append_batch(&gateway, &id, vec![event("p", 2), second]).await;
    assert_eq!(status, 201, "{reply}");
    assert_eq!(seqs(&reply), vec![2, 3]);
}

#[tokio::test]
async fn a_retried_batch_is_answered_with_the_original_seqs() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let other = TestGateway::start(&nats).await;
    let id = gateway.create_session().await;
    let events: Vec<Value> = (1..=5).map(|seq| event("p", seq)).collect();
    let (status, first) = append_batch(&gateway, &id, events.clone()).await;
    assert_eq!(status, 201);
    // Another gateway, with no cached state, sees the same retry.
    let (status, retry) = append_batch(&other, &id, events[3..].to_vec()).await;
    assert_eq!(
        status, 409,
        "only the producer's latest request is retry-safe: {retry}"
    );
    let (status, retry) = append_batch(&other, &id, events[4..].to_vec()).await;
    assert_eq!(status, 201, "{retry}");
    assert_eq!(seqs(&retry), vec![5]);
    assert_eq!(retry["events"][0]["deduped"], true);
    assert_eq!(seqs(&first), vec![1, 2, 3, 4, 5]);
    assert_eq!(gateway.last_seq(&id).await, 5);
}

#[tokio::test]
async fn batch_limits_are_enforced_with_json_errors() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let id = gateway.create_session().await;
    let (status, reply) = append_batch(&gateway, &id, Vec::new()).await;
    assert_eq!(
        (status, reply["error"].as_str()),
        (400, Some("invalid_event"))
    );
    let too_many = (1..=1001).map(|seq| event("p", seq)).collect();
    let (status, reply) = append_batch(&gateway, &id, too_many).await;
    assert_eq!(
        (status, reply["error"].as_str()),
        (400, Some("invalid_event"))
    );
    let mut large = event("p", 1);
    large["payload"] = json!({"text": "x".repeat(600 * 1024)});
    let mut larger = event("p", 2);
    larger["payload"] = json!({"text": "y".repeat(600 * 1024)});
    let (status, reply) = append_batch(&gateway, &id, vec![large, larger]).await;
    assert_eq!(status, 413, "{reply}");
    let (status, _) = append_batch(&gateway, "no-such-session", vec![event("p", 1)]).await;
    assert_eq!(status, 404);
    assert_eq!(gateway.last_seq(&id).await, 0);
}

/// Many producers on one session through one gateway: their appends are grouped into batches,
/// yet every request gets its own seq, the log is gapless, and each producer's events keep
/// their order.
#[tokio::test]
async fn concurrent_producers_on_one_session_are_group_committed_in_order() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let id = gateway.create_session().await;
    let (producers, each) = (32u64, 25u64);
    let writers = (0..producers).map(|producer| {
        let (gateway, id) = (&gateway, &id);
        async move {
            let mut got = Vec::new();
            for producer_seq in 1..=each {
                let reply = gateway
                    .append_ok(id, event(&format!("p{producer}"), producer_seq))
                    .await;
                got.push(reply["seq"].as_u64().unwrap());
            }
            got
        }
    });
    let replies = futures::future::join_all(writers).await;
    let mut all: Vec<u64> = replies.iter().flatten().copied().collect();
    all.sort_unstable();
    assert_eq!(all, (1..=producers * each).collect::<Vec<_>>());
    let mut tail = gateway.tail(&id, 0).await;
    let mut last_of: HashMap<String, u64> = HashMap::new();
    for expected in 1..=producers * each {
        let frame = tail.event().await;
        assert_eq!(frame["seq"], expected);
        let producer = frame["producer_id"].as_str().unwrap().to_owned();
        let producer_seq = frame["producer_seq"].as_u64().unwrap();
        let previous = last_of.insert(producer, producer_seq).unwrap_or(0);
        assert_eq!(
            producer_seq,
            previous + 1,
            "a producer's events keep their order"
        );
    }
}

/// A long session's write state is snapshotted; a gateway that has never seen the session
/// starts from the snapshot and still dedupes and checks producers exactly. A snapshot that
/// does not match the stream is ignored.
#[tokio::test]
async fn a_gateway_new_to_a_long_session_starts_from_a_valid_snapshot_only() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let id = gateway.create_session().await;
    for chunk in 0..3u64 {
        let events = (1..=1000).map(|n| event("p", chunk * 1000 + n)).collect();
        assert_eq!(append_batch(&gateway, &id, events).await.0, 201);
    }
    let (snapshots, key) = nats.snapshots(&id).await;
    // The snapshot is saved after the append is answered, in its own time.
    let saved = eventually(std::time::Duration::from_secs(15), || async {
        let saved = snapshots.get(&key).await.unwrap();
        let saved: Option<Value> = saved.map(|saved| serde_json::from_slice(&saved).unwrap());
        match saved {
            Some(saved) if saved["last_seq"] == 3000 => Ok(saved),
            other => Err(format!("no snapshot at 3000: {other:?}")),
        }
    })
    .await;
    assert_eq!(saved["producers"][0][0], "p");

    let fresh = TestGateway::start(&nats).await;
    let retry = fresh.append_ok(&id, event("p", 3000)).await;
    assert_eq!(
        (retry["seq"].as_u64(), retry["deduped"].as_bool()),
        (Some(3000), Some(true))
    );
    let (status, _) = (
        fresh.append(&id, event("p", 3002)).await.status().as_u16(),
        (),
    );
    assert_eq!(status, 409, "producer p must continue at 3001");

    // A snapshot claiming a different log (here: one event further) is not believed.
    let mut lying = saved.clone();
    lying["last_seq"] = json!(2999);
    snapshots
        .put(&key, serde_json::to_vec(&lying).unwrap().into())
        .await
        .unwrap();
    let third = TestGateway::start(&nats).await;
    assert_eq!(third.append_ok(&id, event("p", 3001)).await["seq"], 3001);
    assert_eq!(third.append_ok(&id, event("q", 1)).await["seq"], 3002);
}

/// A hundred hot sessions at once, each with atomic batches open on the one stream: every
/// append is still committed, and each session is gapless.
#[tokio::test]
async fn many_hot_sessions_at_once_all_commit() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let (producers, each) = (16, 3);
    for (id, mut seqs) in hot_sessions(&gateway, 100, producers, each).await {
        seqs.sort_unstable();
        let total = producers as u64 * each;
        assert_eq!(seqs, (1..=total).collect::<Vec<_>>(), "one seq per request");
        assert_eq!(gateway.last_seq(&id).await, total);
    }
}

/// `sessions` new sessions, each with `producers` concurrent producers appending `each` events
/// apiece (all answered 201, none a dedupe): the seqs each session's appends got.
async fn hot_sessions(
    gateway: &TestGateway,
    sessions: usize,
    producers: usize,
    each: u64,
) -> HashMap<String, Vec<u64>> {
    let mut ids = Vec::new();
    for _ in 0..sessions {
        ids.push(gateway.create_session().await);
    }
    let writers = ids.iter().flat_map(|id| {
        (0..producers).map(move |producer| async move {
            let mut seqs = Vec::new();
            for producer_seq in 1..=each {
                let reply = gateway
                    .append_ok(id, event(&format!("p{producer}"), producer_seq))
                    .await;
                assert_eq!(reply["deduped"], false, "{reply}");
                seqs.push(reply["seq"].as_u64().unwrap());
            }
            (id, seqs)
        })
    });
    let mut per_session: HashMap<String, Vec<u64>> = HashMap::new();
    for (id, seqs) in futures::future::join_all(writers).await {
        per_session.entry(id.clone()).or_default().extend(seqs);
    }
    per_session
}

/// JetStream holds only so many atomic batches open per stream (50 by default; one here), and
/// refuses the rest while nothing changed on their sessions: those group commits are retried,
/// and every request still gets exactly one seq. (When written, a run saw about a dozen
/// refusals; answering them instead of retrying fails the test.)
#[tokio::test]
async fn batches_refused_while_others_are_open_are_retried() {
    let nats = TestNats::start_with_config(
        "jetstream { limits { batch { max_inflight_per_stream: 1 } } }",
    );
    refuses_a_second_open_batch(&nats).await;
    let gateway = TestGateway::start(&nats).await;
    let (producers, each) = (24, 4);
    let total = producers as u64 * each;
    for (id, mut seqs) in hot_sessions(&gateway, 6, producers, each).await {
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=total).collect::<Vec<_>>(), "one seq per request");
        let mut tail = gateway.tail(&id, 0).await;
        assert_eq!(
            tail.seqs(total as usize).await,
            (1..=total).collect::<Vec<_>>()
        );
    }
}

/// The server's limit holds: while one batch is open on a stream, another is refused.
async fn refuses_a_second_open_batch(nats: &TestNats) {
    let jetstream = nats.jetstream().await;
    jetstream
        .create_stream(async_nats::jetstream::stream::Config {
            name: "LIMIT_CHECK".into(),
            subjects: vec!["limit_check.>".into()],
            allow_atomic_publish: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let batch_headers = |id: &str| {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Batch-Id", id);
        headers.insert("Nats-Batch-Sequence", "1");
        headers
    };
    // Opened and never committed: it stays open until the server's batch timeout.
    let client = jetstream.client();
    client
        .publish_with_headers("limit_check.open", batch_headers("open"), "1".into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    let mut second = batch_headers("second");
    second.insert("Nats-Batch-Commit", "1");
    let refused = jetstream
        .publish_with_headers("limit_check.second", second, "1".into())
        .await
        .unwrap()
        .await;
    assert!(refused.is_err(), "a second open batch was accepted");
}

/// An event within the HTTP body limit that NATS refuses once stored (its body and headers
/// pass `max_payload`) fails alone: the requests committed in the same group still succeed.
#[tokio::test]
async fn an_event_too_large_for_nats_fails_alone() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let id = gateway.create_session().await;
    let mut big = event("big", 1);
    let filler = 1024 * 1024 - big.to_string().len() - 64;
    big["payload"]["text"] = json!("x".repeat(filler));
    let (producers, each) = (31u64, 3u64);
    let small = (0..producers).map(|producer| {
        let (gateway, id) = (&gateway, &id);
        async move {
            for producer_seq in 1..=each {
                gateway
                    .append_ok(id, event(&format!("p{producer}"), producer_seq))
                    .await;
            }
        }
    });
    let oversized = async {
        let response = gateway.append(&id, big).await;
        let status = response.status().as_u16();
        let reply: Value = response.json().await.unwrap();
        (status, reply)
    };
    let ((status, reply), _) = tokio::join!(oversized, futures::future::join_all(small));
    assert_eq!(status, 413, "{reply}");
    assert_eq!(reply["error"], "event_too_large");
    assert_eq!(gateway.last_seq(&id).await, producers * each);
}
