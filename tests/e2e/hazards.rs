//! The hazards of issue 13, one deterministic test each; every one failed with the code before
//! e0cc2bf (at a86f05d) and passes since.
//!
//! - A streamed batch whose commit times out but is stored all the same must not answer its
//!   requests `deduped: true`: each was sent once. Before, the committer put the failed batch
//!   back in its queue and decided it again on a state caught up with the stream, which by
//!   then held the batch, so every request in it was a "duplicate" of itself.
//! - Retention: a gateway that folded a producer's events and one that folds the retained log
//!   afresh decide the same request alike. Before, the warm gateway kept remembering a
//!   producer after retention had dropped every one of its events, while a fresh gateway had
//!   never learnt of it: a request the fresh one appended, the warm one refused (409) or
//!   answered as a dedupe of an event that is gone.
//! - A leader change (a step-down, or the leader node crashing while the gateway reconnects)
//!   must not close live tails. Before, any storage error in a session's live feed (the head
//!   check after a reconnect, while no node led the stream) ended the feed and closed every
//!   tail on it with 1011.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use gateway::config::Config;
use reqwest::Method;
use serde_json::{Value, json};
use starcite_tests::{TailClient, TailFrame, TcpProxy, TestCluster, TestGateway, TestNats, event};

const EVENTS: &str = "STARCITE_EVENTS";

/// Enough concurrent producers on one session that its committer streams atomic batches (it
/// does from 16 requests a round on).
const PRODUCERS: usize = 48;

/// How many times NATS freezes under that load. One freeze that catches a streamed batch in
/// flight (rather than a commit of another kind) is enough; three make that near certain.
const FREEZES: usize = 3;

/// What one append was answered.
#[derive(Debug)]
enum Reply {
    Stored { seq: u64, deduped: bool },
    Refused { status: u16, body: Value },
}

/// Appends events 1, 2, … to `id` as producer `p<number>.0`, each exactly once and never
/// again: the first non-201 ends that producer, and a new one (`p<number>.<generation>`)
/// takes its place, so the load stays. Stops once `stop` is set.
async fn produce(
    gateway: &TestGateway,
    id: &str,
    number: usize,
    stop: &tokio::sync::watch::Receiver<bool>,
    acks: &tokio::sync::watch::Sender<usize>,
) -> Vec<(String, u64, Reply)> {
    let mut replies = Vec::new();
    for generation in 0.. {
        let producer = format!("p{number}.{generation}");
        for producer_seq in 1.. {
            if *stop.borrow() {
                return replies;
            }
            let response = gateway.append(id, event(&producer, producer_seq)).await;
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            if status != 201 {
                replies.push((
                    producer.clone(),
                    producer_seq,
                    Reply::Refused { status, body },
                ));
                break;
            }
            let reply = Reply::Stored {
                seq: body["seq"].as_u64().unwrap(),
                deduped: body["deduped"].as_bool().unwrap(),
            };
            replies.push((producer.clone(), producer_seq, reply));
            acks.send_modify(|acks| *acks += 1);
        }
    }
    replies
}

/// The session's whole stored log, page by page: `(seq, producer_id, producer_seq)`.
async fn stored_log(gateway: &TestGateway, id: &str) -> Vec<(u64, String, u64)> {
    let mut log = Vec::new();
    let mut cursor = 0;
    loop {
        let path = format!("/v1/sessions/{id}/events?cursor={cursor}&limit=1000");
        let page = gateway
            .expect(gateway.request(Method::GET, &path, None).await, 200)
            .await;
        assert!(page.get("gap").is_none(), "{page}");
        for event in page["events"].as_array().unwrap() {
            log.push((
                event["seq"].as_u64().unwrap(),
                event["producer_id"].as_str().unwrap().to_owned(),
                event["producer_seq"].as_u64().unwrap(),
            ));
        }
        cursor = page["next_cursor"].as_u64().unwrap();
        if page["caught_up"] == true {
            return log;
        }
    }
}

/// Before e0cc2bf: the batch in flight when NATS froze timed out, was stored once NATS ran
/// again, and its requests, decided again on the caught-up state, were all answered
/// `deduped: true`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_batch_that_timed_out_never_answers_a_first_attempt_deduped() {
    let nats = TestNats::start();
    let nats_timeout = Duration::from_millis(500);
    let mut config = TestGateway::config(&nats);
    config.nats.timeout = nats_timeout;
    let gateway = TestGateway::start_with(config).await;
    let id = gateway.create_session().await;
    let (stop_sender, stop) = tokio::sync::watch::channel(false);
    let (acks, acked) = tokio::sync::watch::channel(0usize);
    let producers = (0..PRODUCERS).map(|number| produce(&gateway, &id, number, &stop, &acks));
    // Waits until every producer has been answered several times more: streaming batches.
    let busy = || async {
        let mut acked = acked.clone();
        let from = *acked.borrow_and_update();
        let streaming = acked.wait_for(|&acks| acks >= from + 8 * PRODUCERS);
        let reached = tokio::time::timeout(Duration::from_secs(10), streaming).await;
        assert!(reached.is_ok(), "appends stalled");
    };
    let freezes = async {
        for _ in 0..FREEZES {
            busy().await;
            // Longer than a commit may take, shorter than that and the catch-up after it:
            // the batch in flight times out, and is stored once NATS runs again.
            nats.pause();
            tokio::time::sleep(nats_timeout * 3 / 2).await;
            nats.resume();
        }
        busy().await;
        stop_sender.send(true).unwrap();
    };
    let (replies, ()) = tokio::join!(futures::future::join_all(producers), freezes);
    let replies: Vec<(String, u64, Reply)> = replies.into_iter().flatten().collect();

    let deduped: Vec<_> = replies
        .iter()
        .filter(|(_, _, reply)| matches!(reply, Reply::Stored { deduped: true, .. }))
        .collect();
    assert!(
        deduped.is_empty(),
        "{} first attempts were answered as duplicates, e.g. {:?}",
        deduped.len(),
        &deduped[..deduped.len().min(3)]
    );
    let refused: Vec<_> = replies
        .iter()
        .filter_map(|(producer, producer_seq, reply)| match reply {
            Reply::Refused { status, body } => Some((producer, producer_seq, status, body)),
            Reply::Stored { .. } => None,
        })
        .collect();
    assert!(
        refused.iter().all(|(_, _, status, _)| **status == 503),
        "only an unknown outcome may fail an append: {refused:?}"
    );
    assert!(
        !refused.is_empty(),
        "the freeze outlasted no commit: the test did not test anything"
    );

    let acknowledged: HashMap<(String, u64), u64> = replies
        .iter()
        .filter_map(|(producer, producer_seq, reply)| match reply {
            Reply::Stored { seq, .. } => Some(((producer.clone(), *producer_seq), *seq)),
            Reply::Refused { .. } => None,
        })
        .collect();
    let seqs: HashSet<u64> = acknowledged.values().copied().collect();
    assert_eq!(seqs.len(), acknowledged.len(), "a seq was answered twice");

    let log = stored_log(&gateway, &id).await;
    let log_seqs: Vec<u64> = log.iter().map(|(seq, _, _)| *seq).collect();
    assert_eq!(log_seqs, (1..=log.len() as u64).collect::<Vec<_>>());
    let mut stored: HashMap<(String, u64), u64> = HashMap::new();
    for (seq, producer, producer_seq) in log {
        let earlier = stored.insert((producer.clone(), producer_seq), seq);
        assert_eq!(
            earlier, None,
            "{producer} #{producer_seq} is stored twice: at {earlier:?} and {seq}"
        );
    }
    for (request, seq) in &acknowledged {
        assert_eq!(
            stored.get(request),
            Some(seq),
            "{request:?} was answered seq {seq}"
        );
    }
}

/// Appends `body` through `gateway`, returning `(status, seq, deduped, error code)`.
async fn decision(gateway: &TestGateway, id: &str, body: Value) -> (u16, Value, Value, Value) {
    let response = gateway.append(id, body).await;
    let status = response.status().as_u16();
    let reply: Value = response.json().await.unwrap();
    (
        status,
        reply["seq"].clone(),
        reply["deduped"].clone(),
        reply["error"].clone(),
    )
}

/// Before e0cc2bf: the warm gateway still knew producer `p` at producer_seq 3 after retention
/// had dropped all of `p`'s events, so it refused `p`'s producer_seq 10 with a 409
/// `producer_seq_conflict` and answered `p`'s replayed producer_seq 3 as a dedupe of seq 3
/// (an event no longer stored), where the fresh gateway appended both as seq 8.
#[tokio::test]
async fn a_warm_and_a_fresh_gateway_decide_alike_once_retention_dropped_a_producer() {
    let nats = TestNats::start();
    let mut config = TestGateway::config(&nats);
    config.nats.retention_max_events_per_session = Some(4);
    let warm = TestGateway::start_with(config.clone()).await;
    let fresh = TestGateway::start_with(config).await;
    // Four sessions alike, all written through `warm`: p's three events, then four of q's,
    // which leave none of p's in the log.
    let mut sessions = Vec::new();
    for _ in 0..4 {
        let id = warm.create_session().await;
        for producer_seq in 1..=3 {
            warm.append_ok(&id, event("p", producer_seq)).await;
        }
        for producer_seq in 1..=4 {
            warm.append_ok(&id, event("q", producer_seq)).await;
        }
        sessions.push(id);
    }
    for id in &sessions {
        let path = format!("/v1/sessions/{id}/events?cursor=3");
        let page = fresh
            .expect(fresh.request(Method::GET, &path, None).await, 200)
            .await;
        let producers: Vec<&str> = page["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|event| event["producer_id"].as_str().unwrap())
            .collect();
        assert_eq!(producers, ["q"; 4], "retention kept other events: {page}");
        assert_eq!(page["events"][0]["seq"], 4);
    }

    // The same request to the same log, once through each gateway: p is unknown to the log,
    // and an unknown producer may start at any producer_seq (as after an LRU eviction; see
    // docs/api.md).
    let far_ahead = event("p", 10);
    let replayed = event("p", 3);
    for (request, [through_warm, through_fresh]) in [
        (&far_ahead, [&sessions[0], &sessions[1]]),
        (&replayed, [&sessions[2], &sessions[3]]),
    ] {
        let warm_decision = decision(&warm, through_warm, request.clone()).await;
        let fresh_decision = decision(&fresh, through_fresh, request.clone()).await;
        assert_eq!(
            warm_decision, fresh_decision,
            "{request}: the warm gateway and the fresh one disagree"
        );
        assert_eq!(
            fresh_decision,
            (201, json!(8), json!(false), Value::Null),
            "{request}"
        );
        // The request is now p's latest on both logs, retry-safe through either gateway.
        for (gateway, id) in [(&fresh, through_warm), (&warm, through_fresh)] {
            assert_eq!(
                decision(gateway, id, request.clone()).await,
                (201, json!(8), json!(true), Value::Null),
                "a retry of {request}"
            );
        }
    }
}

/// Appends `p`'s producer_seq through `gateway` until it is answered (a 503 while NATS elects
/// a leader is retried: the retry of a request that landed is its dedupe); returns the seq.
async fn append_until_answered(gateway: &TestGateway, id: &str, producer_seq: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let response = gateway.append(id, event("p", producer_seq)).await;
        let status = response.status().as_u16();
        let reply: Value = response.json().await.unwrap();
        match status {
            201 => return reply["seq"].as_u64().unwrap(),
            503 => {
                assert!(
                    Instant::now() < deadline,
                    "p #{producer_seq} still unanswered: {reply}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            _ => panic!("p #{producer_seq}: {status} {reply}"),
        }
    }
}

/// Appends `p`'s producer_seqs `seqs`, each answered as the same seq.
async fn append_all(gateway: &TestGateway, id: &str, seqs: std::ops::RangeInclusive<u64>) {
    for producer_seq in seqs {
        assert_eq!(
            append_until_answered(gateway, id, producer_seq).await,
            producer_seq
        );
    }
}

/// The tail's next events are exactly `seqs`, on the same open socket.
async fn expect_seqs(tail: &mut TailClient, seqs: std::ops::RangeInclusive<u64>) {
    let expected: Vec<u64> = seqs.collect();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while seen.len() < expected.len() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tail.frame(left).await {
            TailFrame::Event(event) => seen.push(event["seq"].as_u64().unwrap()),
            TailFrame::Ping => {}
            TailFrame::Closed(code) => {
                panic!("the tail was closed ({code:?}) after {seen:?}, expecting {expected:?}")
            }
            TailFrame::Failed(err) => {
                panic!("the tail broke ({err}) after {seen:?}, expecting {expected:?}")
            }
            TailFrame::TimedOut => panic!("the tail stalled at {seen:?}, expecting {expected:?}"),
        }
    }
    assert_eq!(seen, expected);
}

/// Before e0cc2bf: after the crash, the gateway reconnected while no node led the events
/// stream; the live feed's head check failed, which ended the feed and closed the tail with
/// 1011.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_change_never_closes_a_live_tail() {
    let mut cluster = TestCluster::start().await;
    // The gateway reaches every node through a link of its own, so the test can make it
    // reconnect at a chosen moment.
    let mut links = Vec::new();
    for url in cluster.urls() {
        links.push(TcpProxy::start(url.trim_start_matches("nats://")).await);
    }
    let mut config = Config::default();
    config.nats.urls = links.iter().map(|link| link.url.clone()).collect();
    config.nats.stream_replicas = 3;
    config.nats.timeout = Duration::from_secs(2);
    let gateway = TestGateway::start_with(config).await;
    let id = gateway.create_session().await;
    let mut tail = gateway.tail(&id, 0).await;
    append_all(&gateway, &id, 1..=3).await;
    expect_seqs(&mut tail, 1..=3).await;

    // A clean hand-over.
    cluster.step_down(EVENTS).await;
    append_all(&gateway, &id, 4..=6).await;
    expect_seqs(&mut tail, 4..=6).await;

    // A crash: until the others elect a leader nothing answers for the stream, and the gateway
    // reconnects meanwhile, so its live feed checks the stream's head then.
    let leader = cluster.stream_leader(EVENTS).await;
    cluster.kill(leader);
    for link in &links {
        link.cut();
    }
    for link in &links {
        link.heal();
    }
    append_all(&gateway, &id, 7..=9).await;
    cluster.restart(leader);
    append_all(&gateway, &id, 10..=12).await;
    expect_seqs(&mut tail, 7..=12).await;
    tail.expect_no_event(Duration::from_millis(200)).await;
}
