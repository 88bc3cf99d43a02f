//! Gateways hold only caches: two of them on one NATS stay gapless, and a restarted or fresh
//! gateway keeps every dedupe and `expected_seq` promise.

use std::time::Duration;

use serde_json::json;
use starcite_tests::{TestGateway, TestNats, event};

#[tokio::test]
async fn eight_producers_through_two_gateways_get_exactly_seqs_1_to_1600() {
    let nats = TestNats::start();
    let gateways = [
        TestGateway::start(&nats).await,
        TestGateway::start(&nats).await,
    ];
    let id = gateways[0].create_session().await;
    let mut tail = gateways[1].tail(&id, 0).await;
    let producers = (0..8).map(|producer| {
        let gateways = &gateways;
        let id = &id;
        async move {
            let mut seqs = Vec::new();
            for producer_seq in 1..=200u64 {
                // Alternate gateways per request so both race on the same session all along.
                let gateway = &gateways[(producer + producer_seq as usize) % 2];
                let reply = gateway
                    .append_ok(id, event(&format!("producer-{producer}"), producer_seq))
                    .await;
                assert_eq!(reply["deduped"], false);
                seqs.push(reply["seq"].as_u64().unwrap());
            }
            seqs
        }
    });
    let per_producer = futures::future::join_all(producers).await;
    for seqs in &per_producer {
        assert!(
            seqs.windows(2).all(|pair| pair[0] < pair[1]),
            "a producer's seqs must increase"
        );
    }
    let mut replies: Vec<u64> = per_producer.into_iter().flatten().collect();
    replies.sort_unstable();
    assert_eq!(replies, (1..=1600).collect::<Vec<_>>());
    assert_eq!(tail.seqs(1600).await, (1..=1600).collect::<Vec<_>>());
    tail.expect_no_event(Duration::from_millis(200)).await;
    assert_eq!(gateways[0].last_seq(&id).await, 1600);
}

/// Enough producers on one session that both gateways commit in atomic batches, built while
/// their requests arrive: a batch that loses the race to the other gateway is decided again,
/// and retries arriving mid-batch are answered as duplicates of the first answer.
#[tokio::test]
async fn hot_batches_from_two_gateways_stay_gapless_and_dedupe_retries() {
    let nats = TestNats::start();
    let gateways = [
        TestGateway::start(&nats).await,
        TestGateway::start(&nats).await,
    ];
    let id = gateways[0].create_session().await;
    let (producers, each) = (48usize, 30u64);
    let writers = (0..producers).map(|producer| {
        let (gateways, id) = (&gateways, &id);
        async move {
            let mut seqs = Vec::new();
            for producer_seq in 1..=each {
                // Each producer keeps to one gateway, so both gather batches, and retries
                // through the other.
                let body = event(&format!("producer-{producer}"), producer_seq);
                let reply = gateways[producer % 2].append_ok(id, body.clone()).await;
                assert_eq!(reply["deduped"], false);
                let seq = reply["seq"].as_u64().unwrap();
                if producer_seq % 10 == 0 {
                    let retry = gateways[(producer + 1) % 2].append_ok(id, body).await;
                    assert_eq!(retry["deduped"], true, "a retry is a duplicate: {retry}");
                    assert_eq!(retry["seq"], seq, "a retry gets the first answer's seq");
                }
                seqs.push(seq);
            }
            seqs
        }
    });
    let per_producer = futures::future::join_all(writers).await;
    for seqs in &per_producer {
        assert!(
            seqs.windows(2).all(|pair| pair[0] < pair[1]),
            "a producer's seqs must increase"
        );
    }
    let total = producers as u64 * each;
    let mut replies: Vec<u64> = per_producer.into_iter().flatten().collect();
    replies.sort_unstable();
    assert_eq!(replies, (1..=total).collect::<Vec<_>>());
    let mut tail = gateways[1].tail(&id, 0).await;
    assert_eq!(
        tail.seqs(total as usize).await,
        (1..=total).collect::<Vec<_>>()
    );
    tail.expect_no_event(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_retry_through_a_fresh_gateway_is_deduped() {
    // The first gateway stores the event and "crashes" before the client sees the reply; the
    // retry lands on a gateway that never saw the session.
    let nats = TestNats::start();
    let first = TestGateway::start(&nats).await;
    let id = first.create_session().await;
    first.append_ok(&id, event("p", 1)).await;
    first.append_ok(&id, event("p", 2)).await;
    drop(first);
    let second = TestGateway::start(&nats).await;
    let retry = second.append_ok(&id, event("p", 2)).await;
    assert_eq!(retry["deduped"], true);
    assert_eq!(retry["seq"], 2);
}

#[tokio::test]
async fn after_a_restart_dedupe_and_expected_seq_still_hold() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let id = gateway.create_session().await;
    for producer_seq in 1..=3 {
        gateway.append_ok(&id, event("p", producer_seq)).await;
    }
    gateway.stop().await;

    let gateway = TestGateway::start(&nats).await;
    let retry = gateway.append_ok(&id, event("p", 3)).await;
    assert_eq!(
        (retry["seq"].as_u64(), retry["deduped"].as_bool()),
        (Some(3), Some(true))
    );
    let old = gateway.append(&id, event("p", 1)).await;
    assert_eq!(old.status(), 409);
    let mut stale = event("p", 4);
    stale["expected_seq"] = json!(2);
    assert_eq!(gateway.append(&id, stale).await.status(), 409);
    let mut next = event("p", 4);
    next["expected_seq"] = json!(3);
    assert_eq!(gateway.append_ok(&id, next).await["seq"], 4);
    assert_eq!(gateway.append_ok(&id, event("q", 1)).await["seq"], 5);
    let mut tail = gateway.tail(&id, 0).await;
    assert_eq!(tail.seqs(5).await, vec![1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn a_stale_cache_never_gives_a_wrong_rejection_or_dedupe() {
    let nats = TestNats::start();
    let a = TestGateway::start(&nats).await;
    let b = TestGateway::start(&nats).await;
    let id = a.create_session().await;
    a.append_ok(&id, event("p", 1)).await;
    // b learns the session at seq 1, then a moves it on.
    b.append_ok(&id, event("q", 1)).await;
    a.append_ok(&id, event("p", 2)).await;
    // b's cache says last_seq 2 (from q) but p is at 2, not 1: a retry of p#2 through b is a
    // dedupe, and expected_seq 3 through b is right.
    let retry = b.append_ok(&id, event("p", 2)).await;
    assert_eq!(
        (retry["seq"].as_u64(), retry["deduped"].as_bool()),
        (Some(3), Some(true))
    );
    let mut expecting = event("q", 2);
    expecting["expected_seq"] = json!(3);
    assert_eq!(b.append_ok(&id, expecting).await["seq"], 4);
    // And a, stale in turn, accepts p#3 at seq 5.
    assert_eq!(a.append_ok(&id, event("p", 3)).await["seq"], 5);
}
