//! What a producer socket refuses: callers without the right token, frames over the body
//! limit, appends over the tenant's rate; and how it closes: on token expiry, and never by
//! reading more than its window from a client that does not read its answers.

use std::time::Duration;

use serde_json::json;
use starcite_tests::auth::{SigningKey, TestJwks, claims, mint, now};
use starcite_tests::{
    ProducerFrame, TestGateway, TestNats, connect_producer, connect_producer_reading_slowly, event,
    eventually,
};

use super::produce_url;

const EVERY_SCOPE: &str = "session:create session:read session:append";

/// The status a refused upgrade got.
async fn refused_upgrade(url: &str) -> u16 {
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("expected an HTTP refusal, got {other:?}"),
        Ok(_) => panic!("the upgrade was accepted"),
    }
}

#[tokio::test]
async fn only_a_token_that_may_append_to_the_session_opens_a_socket() {
    let nats = TestNats::start();
    let jwks = TestJwks::start().await;
    let gateway = TestGateway::start_with(jwks.config(&nats)).await;
    let admin = mint(&claims("acme", "user:1", EVERY_SCOPE), SigningKey::Rsa);
    for id in ["mine", "other"] {
        let created = gateway.create_session_as(&admin, json!({"id": id})).await;
        assert_eq!(created.status(), 201);
    }
    let url = |session: &str, token: &str| {
        format!(
            "{}&access_token={token}",
            produce_url(&gateway.base_url, session, "p")
        )
    };
    assert_eq!(
        refused_upgrade(&produce_url(&gateway.base_url, "mine", "p")).await,
        401
    );
    let reader = mint(&claims("acme", "user:1", "session:read"), SigningKey::Rsa);
    assert_eq!(refused_upgrade(&url("mine", &reader)).await, 403);
    let mut pinned = claims("acme", "agent:1", "session:append");
    pinned["session_id"] = json!("mine");
    let pinned = mint(&pinned, SigningKey::Rsa);
    assert_eq!(refused_upgrade(&url("other", &pinned)).await, 403);
    let stranger = mint(&claims("globex", "user:2", EVERY_SCOPE), SigningKey::Rsa);
    assert_eq!(refused_upgrade(&url("mine", &stranger)).await, 404);

    let (mut sender, mut replies, _) = connect_producer(&url("mine", &pinned)).await;
    let mut appended = event("p", 1);
    appended.as_object_mut().unwrap().remove("actor");
    sender.send(&appended).await.unwrap();
    assert_eq!(replies.reply().await["seq"], 1);
    // The token's subject is the actor, as over HTTP.
    let mut impostor = event("p", 2);
    impostor["actor"] = json!("agent:someone-else");
    sender.send(&impostor).await.unwrap();
    let refusal = replies.reply().await;
    assert_eq!(refusal["error"], "invalid_event", "{refusal}");
    assert_eq!(refusal["producer_seq"], 2);
}

#[tokio::test]
async fn a_socket_closes_with_4001_when_its_token_expires() {
    let nats = TestNats::start();
    let jwks = TestJwks::start().await;
    let mut config = jwks.config(&nats);
    config.auth.leeway_seconds = 0;
    let gateway = TestGateway::start_with(config).await;
    let admin = mint(&claims("acme", "user:1", EVERY_SCOPE), SigningKey::Rsa);
    gateway.create_session_as(&admin, json!({"id": "s"})).await;
    let mut short = claims("acme", "agent:1", "session:append");
    short["exp"] = json!(now() + 2);
    let token = mint(&short, SigningKey::Rsa);
    let url = format!(
        "{}&access_token={token}",
        produce_url(&gateway.base_url, "s", "p")
    );
    let (mut sender, mut replies, _) = connect_producer(&url).await;
    let mut appended = event("p", 1);
    appended["actor"] = json!("agent:1");
    sender.send(&appended).await.unwrap();
    assert_eq!(replies.reply().await["seq"], 1);
    assert_eq!(
        replies.frame(Duration::from_secs(10)).await,
        ProducerFrame::Closed(Some(4001))
    );
}

#[tokio::test]
async fn a_frame_over_the_body_limit_closes_the_socket_with_1009_and_writes_nothing() {
    let nats = TestNats::start();
    let mut config = TestGateway::config(&nats);
    config.limits.max_body_bytes = 4096;
    let gateway = TestGateway::start_with(config).await;
    let id = gateway.create_session().await;
    let (mut sender, mut replies, _) =
        connect_producer(&produce_url(&gateway.base_url, &id, "p")).await;
    let mut big = event("p", 1);
    big["payload"]["text"] = json!("x".repeat(8 * 1024));
    // The gateway may close before it has read the whole frame.
    let _ = sender.send(&big).await;
    assert_eq!(
        replies.frame(Duration::from_secs(10)).await,
        ProducerFrame::Closed(Some(1009))
    );
    assert_eq!(gateway.last_seq(&id).await, 0);
}

#[tokio::test]
async fn the_tenants_append_rate_counts_every_event_and_a_refusal_says_when_to_retry() {
    let nats = TestNats::start();
    let mut config = TestGateway::config(&nats);
    config.limits.append_rate = Some(1);
    config.limits.append_burst = Some(3);
    let gateway = TestGateway::start_with(config).await;
    let id = gateway.create_session().await;
    let (mut sender, mut replies, _) =
        connect_producer(&produce_url(&gateway.base_url, &id, "p")).await;
    sender
        .send(&json!([event("p", 1), event("p", 2)]))
        .await
        .unwrap();
    sender.send(&event("p", 3)).await.unwrap();
    sender.send(&event("p", 4)).await.unwrap();
    assert_eq!(replies.reply().await["last_seq"], 2);
    assert_eq!(replies.reply().await["seq"], 3);
    let limited = replies.reply().await;
    assert_eq!(limited["error"], "rate_limited", "{limited}");
    assert_eq!(limited["producer_seq"], 4);
    assert!(
        limited["retry_after"]
            .as_u64()
            .is_some_and(|seconds| seconds >= 1)
    );
    assert_eq!(gateway.last_seq(&id).await, 3);
}

#[tokio::test]
async fn a_client_that_never_reads_its_answers_stops_being_read() {
    let nats = TestNats::start();
    let mut config = TestGateway::config(&nats);
    config.limits.produce_window = 8;
    let gateway = TestGateway::start_with(config).await;
    let id = gateway.create_session().await;
    // Long producer ids make long answers, so the gateway's socket buffer fills after a
    // couple of thousand of them; the client's receive buffer is kept small for the same end.
    let producer = "p".repeat(2048);
    let url = produce_url(&gateway.base_url, &id, &producer);
    let (mut sender, mut replies, _) = connect_producer_reading_slowly(&url).await;
    let total = 6_000;
    let sending = tokio::spawn(async move {
        for producer_seq in 1..=total {
            sender.send(&event(&producer, producer_seq)).await.unwrap();
        }
        sender
    });
    // The gateway takes requests only while it can answer them: it stalls well short of them
    // all and stays there.
    let stalled = eventually(Duration::from_secs(30), || async {
        let before = gateway.last_seq(&id).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = gateway.last_seq(&id).await;
        if before == after && after > 0 {
            Ok(after)
        } else {
            Err(format!("still taking requests: {before} then {after}"))
        }
    })
    .await;
    assert!(
        stalled < total,
        "all {total} requests were taken while no answer was read"
    );
    // Once the client reads, every request is answered, in order.
    let mut seqs = Vec::with_capacity(total as usize);
    while seqs.len() < total as usize {
        seqs.push(replies.reply().await["seq"].as_u64().unwrap());
    }
    assert_eq!(seqs, (1..=total).collect::<Vec<_>>());
    sending.await.unwrap().close().await;
    assert_eq!(gateway.last_seq(&id).await, total);
}
