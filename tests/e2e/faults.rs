//! NATS going away: fast 503s, readiness, reconnection, and unknown-outcome publishes.

use std::time::{Duration, Instant};

use gateway::config::Config;
use reqwest::Method;
use serde_json::{Value, json};
use starcite_tests::{TailFrame, TcpProxy, TestGateway, TestNats, error_of, event, eventually};

#[tokio::test]
async fn nats_down_gives_fast_503s_and_the_gateway_recovers_by_itself() {
    let mut nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let id = gateway.create_session().await;
    gateway.append_ok(&id, event("p", 1)).await;

    nats.kill();
    // The claim is about a gateway that knows NATS is gone; noticing the dropped connection
    // takes its own time, which readiness reports.
    gateway.wait_for_readiness(|status, _| status == 503).await;
    let started = Instant::now();
    let response = gateway.append(&id, event("p", 2)).await;
    assert_eq!(error_of(response).await, (503, "nats_unavailable".into()));
    let response = gateway
        .request(Method::POST, "/v1/sessions", Some(json!({})))
        .await;
    assert_eq!(error_of(response).await, (503, "nats_unavailable".into()));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "503s took {:?}",
        started.elapsed()
    );
    assert_eq!(gateway.readiness().await.0, 503);
    let live = gateway.request(Method::GET, "/health/live", None).await;
    assert_eq!(live.status(), 200);

    nats.restart();
    gateway.wait_until_ready().await;
    assert_eq!(gateway.append_ok(&id, event("p", 2)).await["seq"], 2);
}

#[tokio::test]
async fn a_gateway_started_before_nats_becomes_ready_when_nats_arrives() {
    let mut nats = TestNats::start();
    let config = TestGateway::config(&nats);
    nats.kill();
    let gateway = TestGateway::spawn(config).await;
    let (status, body) = gateway.readiness().await;
    assert_eq!((status, &body["status"]), (503, &json!("starting")));
    nats.restart();
    gateway.wait_until_ready().await;
    let id = gateway.create_session().await;
    assert_eq!(gateway.append_ok(&id, event("p", 1)).await["seq"], 1);
}

#[tokio::test]
async fn a_timed_out_append_resolves_to_its_original_seq_on_retry() {
    let nats = TestNats::start();
    let mut config = TestGateway::config(&nats);
    config.nats.timeout = Duration::from_millis(500);
    let gateway = TestGateway::start_with(config).await;
    let id = gateway.create_session().await;
    gateway.append_ok(&id, event("p", 1)).await;

    // Frozen, the server cannot ack; the publish sits in its socket buffer and is stored once
    // the server runs again. The client cannot know: 503, and its retry must not duplicate.
    nats.pause();
    let response = gateway.append(&id, event("p", 2)).await;
    nats.resume();
    assert_eq!(error_of(response).await, (503, "nats_timeout".into()));

    let retry = eventually(Duration::from_secs(10), || async {
        let response = gateway.append(&id, event("p", 2)).await;
        match response.status().as_u16() {
            201 => Ok(response.json::<Value>().await.unwrap()),
            status => Err(format!("retry kept failing: {status}")),
        }
    })
    .await;
    assert_eq!(retry["seq"], 2);
    assert_eq!(retry["deduped"], true);
    assert_eq!(gateway.append_ok(&id, event("p", 3)).await["seq"], 3);
    let mut tail = gateway.tail(&id, 0).await;
    assert_eq!(tail.seqs(3).await, vec![1, 2, 3]);
    tail.expect_no_event(Duration::from_millis(200)).await;
}

/// A live tail rides out its gateway losing NATS: what was committed meanwhile (through
/// another gateway) is read back from the stream once it reconnects, so the reader misses
/// nothing and sees nothing twice.
#[tokio::test]
async fn a_live_tail_misses_nothing_while_its_gateway_is_cut_off() {
    let nats = TestNats::start();
    let proxy = TcpProxy::start(nats.url.trim_start_matches("nats://")).await;
    let mut config = TestGateway::config(&nats);
    config.nats.urls = vec![proxy.url.clone()];
    let reader = TestGateway::start_with(config).await;
    let writer = TestGateway::start(&nats).await;
    let id = writer.create_session().await;
    let mut tail = reader.tail(&id, 0).await;
    writer.append_ok(&id, event("p", 1)).await;
    assert_eq!(tail.seqs(1).await, vec![1]);

    proxy.cut();
    for producer_seq in 2..=4 {
        writer.append_ok(&id, event("p", producer_seq)).await;
    }
    proxy.heal();
    let mut seqs = Vec::new();
    // Generous: the client reconnects with a backoff of its own, which a busy machine stretches.
    let deadline = Instant::now() + Duration::from_secs(20);
    while seqs.len() < 3 {
        assert!(Instant::now() < deadline, "tail stalled at {seqs:?}");
        match tail.frame(Duration::from_secs(1)).await {
            TailFrame::Event(event) => seqs.push(event["seq"].as_u64().unwrap()),
            TailFrame::Closed(code) => panic!("the tail closed ({code:?})"),
            TailFrame::Failed(err) => panic!("the tail broke: {err}"),
            TailFrame::Ping | TailFrame::TimedOut => {}
        }
    }
    assert_eq!(seqs, vec![2, 3, 4]);
    writer.append_ok(&id, event("p", 5)).await;
    assert_eq!(tail.seqs(1).await, vec![5]);
}

/// A republished event that never reaches the gateway, with no reconnect or slow-consumer
/// event to tell: the next one names the stream sequence before it, so the live feed reads the
/// missing event back at once and the reader gets both, in order. The stream's republishing is
/// pointed elsewhere for one append to lose its copy.
#[tokio::test]
async fn a_lost_live_copy_is_read_back_when_the_next_one_arrives() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let id = gateway.create_session().await;
    let mut tail = gateway.tail(&id, 0).await;
    gateway.append_ok(&id, event("p", 1)).await;
    assert_eq!(tail.seqs(1).await, vec![1]);

    let jetstream = nats.jetstream().await;
    let name = Config::default().nats.stream;
    let mut stream = jetstream.get_stream(&name).await.unwrap();
    let live = stream.info().await.unwrap().config.clone();
    let mut elsewhere = live.clone();
    if let Some(republish) = elsewhere.republish.as_mut() {
        republish.destination = "nobody_listens.>".into();
    }
    jetstream.update_stream(elsewhere).await.unwrap();
    gateway.append_ok(&id, event("p", 2)).await;
    jetstream.update_stream(live).await.unwrap();
    tail.expect_no_event(Duration::from_millis(300)).await;

    let started = Instant::now();
    gateway.append_ok(&id, event("p", 3)).await;
    assert_eq!(tail.seqs(2).await, vec![2, 3]);
    // Well before the feed's idle check (10 s) would have found it.
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// Before: staging a batch sent into the NATS client's command queue without a deadline. With
/// the server frozen, its socket buffers fill, then that queue, and every committer sending
/// into it waited until the client gave the connection up (its pings time out after tens of
/// seconds) while holding its session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_sent_to_a_frozen_server_end_with_503_within_the_timeout() {
    let nats = TestNats::start();
    let timeout = Duration::from_secs(1);
    let mut config = TestGateway::config(&nats);
    config.nats.timeout = timeout;
    let gateway = TestGateway::start_with(config).await;
    let mut ids = Vec::new();
    for _ in 0..24 {
        let id = gateway.create_session().await;
        // The gateway caches the session's state, so the batch goes straight to staging.
        gateway.append_ok(&id, event("warm", 1)).await;
        ids.push(id);
    }
    // About 1 MiB per request, a thousand messages each: more than the kernel's socket
    // buffers and the client's queue hold together.
    let filler = "x".repeat(900);
    let batch = |producer: &str| {
        let events: Vec<Value> = (1..=1000u64)
            .map(|producer_seq| {
                let mut event = event(producer, producer_seq);
                event["payload"]["filler"] = json!(filler);
                event
            })
            .collect();
        json!({ "events": events })
    };
    nats.pause();
    let started = Instant::now();
    let requests = ids.iter().enumerate().map(|(index, id)| {
        let body = batch(&format!("bulk-{index}"));
        let gateway = &gateway;
        async move {
            let path = format!("/v1/sessions/{id}/append_batch");
            let response = gateway.request(Method::POST, &path, Some(body)).await;
            (response.status().as_u16(), started.elapsed())
        }
    });
    let answers =
        tokio::time::timeout(Duration::from_secs(18), futures::future::join_all(requests)).await;
    nats.resume();
    let answers = answers.expect("requests to a frozen server hung");
    // Reading and deciding 24 MiB of events takes a debug build seconds of its own, more on a
    // busy machine; a request waiting on the client's queue waited for its ping timeout (20 s
    // and more), so the bounds stay below that and leave the rest to a slow machine.
    for (status, elapsed) in answers {
        assert_eq!(status, 503);
        assert!(
            elapsed < timeout + Duration::from_secs(13),
            "a request to a frozen server took {elapsed:?}"
        );
    }
}
