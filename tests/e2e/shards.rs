//! Sessions sharded over several event streams (`STARCITE_STREAM_SHARDS`): placement is fixed
//! at create and recorded in the header, a session on any shard behaves as on the first, and
//! changing the number of shards between restarts moves nothing and loses nothing.

use std::time::Duration;

use futures::StreamExt;
use gateway::config::Config;
use reqwest::Method;
use serde_json::{Value, json};
use starcite_tests::{
    TestCluster, TestGateway, TestNats, connect_producer, event, eventually, ids_on, path_segment,
};

const BUCKET: &str = "starcite_sessions";

fn sharded(nats: &TestNats, shards: u32) -> Config {
    let mut config = TestGateway::config(nats);
    config.nats.stream_shards = shards;
    config
}

/// The session's header as the sessions bucket stores it.
async fn stored_header(nats: &TestNats, id: &str) -> Value {
    let bucket = nats.jetstream().await.get_key_value(BUCKET).await.unwrap();
    let value = bucket.get(id).await.unwrap().unwrap();
    serde_json::from_slice(&value).unwrap()
}

/// How many messages the stream holds on `subject`.
async fn messages_on(nats: &TestNats, stream: &str, subject: &str) -> u64 {
    let stream = nats.jetstream().await.get_stream(stream).await.unwrap();
    let info = stream
        .info_with_subjects(subject)
        .await
        .unwrap()
        .next()
        .await;
    info.map_or(0, |entry| entry.unwrap().1 as u64)
}

async fn create(gateway: &TestGateway, id: &str) {
    gateway.create_session_with(json!({ "id": id })).await;
}

async fn page(gateway: &TestGateway, id: &str, cursor: u64) -> Value {
    let path = format!("/v1/sessions/{}/events?cursor={cursor}", path_segment(id));
    gateway
        .expect(gateway.request(Method::GET, &path, None).await, 200)
        .await
}

fn seqs(events: &Value) -> Vec<u64> {
    events
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["seq"].as_u64().unwrap())
        .collect()
}

/// Every event of the session, read back as a page from the start.
async fn all_seqs(gateway: &TestGateway, id: &str) -> Vec<u64> {
    seqs(&page(gateway, id, 0).await["events"])
}

/// The gateway's `/metrics` exposition as text.
async fn metrics_text(gateway: &TestGateway) -> Result<String, String> {
    let response = gateway
        .client
        .get(format!("{}/metrics", gateway.base_url))
        .send()
        .await
        .map_err(|err| err.to_string())?;
    response.text().await.map_err(|err| err.to_string())
}

#[tokio::test]
async fn placement_is_stable_and_recorded_in_the_header() {
    let nats = TestNats::start();
    let a = TestGateway::start_with(sharded(&nats, 4)).await;
    let b = TestGateway::start_with(sharded(&nats, 4)).await;
    let on_3 = ids_on("placed", 3, 4, 2);
    let on_0 = ids_on("placed", 0, 4, 1);
    // The same hash on every gateway: each id lands where `shard_for` says, whoever creates it.
    create(&a, &on_3[0]).await;
    create(&b, &on_3[1]).await;
    create(&a, &on_0[0]).await;
    for id in &on_3 {
        assert_eq!(stored_header(&nats, id).await["shard"], 3, "{id}");
        a.append_ok(id, event("p", 1)).await;
        b.append_ok(id, event("p", 2)).await;
        assert_eq!(
            messages_on(
                &nats,
                "STARCITE_EVENTS_3",
                &format!("starcite.events_3.{id}")
            )
            .await,
            2
        );
    }
    // Shard 0's header is written as before shards existed: no field at all.
    let header = stored_header(&nats, &on_0[0]).await;
    assert!(header.get("shard").is_none(), "{header}");
    a.append_ok(&on_0[0], event("p", 1)).await;
    assert_eq!(
        messages_on(
            &nats,
            "STARCITE_EVENTS",
            &format!("starcite.events.{}", on_0[0])
        )
        .await,
        1
    );
    // A restarted gateway finds every session where its header says.
    a.stop().await;
    b.stop().await;
    let again = TestGateway::start_with(sharded(&nats, 4)).await;
    for id in &on_3 {
        again.append_ok(id, event("p", 3)).await;
        assert_eq!(all_seqs(&again, id).await, vec![1, 2, 3]);
    }
}

#[tokio::test]
async fn a_session_on_a_later_shard_behaves_like_one_on_the_first() {
    let nats = TestNats::start();
    let gateway = TestGateway::start_with(sharded(&nats, 4)).await;
    let id = ids_on("far", 3, 4, 1).remove(0);
    create(&gateway, &id).await;
    let mut live = gateway.tail(&id, 0).await;

    // Single appends, a dedupe, a conflict, and a batch.
    gateway.append_ok(&id, event("p", 1)).await;
    let retry = gateway.append_ok(&id, event("p", 1)).await;
    assert_eq!(
        (retry["seq"].clone(), retry["deduped"].clone()),
        (json!(1), json!(true))
    );
    let mut stale = event("q", 1);
    stale["expected_seq"] = json!(0);
    let conflict = gateway.append(&id, stale).await;
    assert_eq!(conflict.status(), 409);
    let batch_path = format!("/v1/sessions/{}/append_batch", path_segment(&id));
    let batch = json!({ "events": [event("b", 1), event("b", 2)] });
    let reply = gateway
        .expect(
            gateway
                .request(Method::POST, &batch_path, Some(batch))
                .await,
            201,
        )
        .await;
    assert_eq!(reply["last_seq"], 3);

    // The producer socket.
    let url = format!(
        "{}/v1/sessions/{}/produce?producer_id=s",
        gateway.base_url.replacen("http", "ws", 1),
        path_segment(&id)
    );
    let (mut sender, mut replies, _) = connect_producer(&url).await;
    for producer_seq in 1..=3 {
        sender.send(&event("s", producer_seq)).await.unwrap();
    }
    for seq in 4..=6 {
        assert_eq!(replies.reply().await["seq"], seq);
    }
    sender.close().await;

    // A live tail saw every event once; a tail from a cursor and pages read them back.
    assert_eq!(live.seqs(6).await, vec![1, 2, 3, 4, 5, 6]);
    let mut from_cursor = gateway.tail(&id, 4).await;
    assert_eq!(from_cursor.seqs(2).await, vec![5, 6]);
    assert_eq!(all_seqs(&gateway, &id).await, vec![1, 2, 3, 4, 5, 6]);
    let later = page(&gateway, &id, 5).await;
    assert_eq!(seqs(&later["events"]), vec![6]);
    assert_eq!(later["last_seq"], 6);

    // The catalog lists it with its newest seq; editing and archiving keep its shard.
    let listed = gateway
        .expect(
            gateway.request(Method::GET, "/v1/sessions", None).await,
            200,
        )
        .await;
    assert_eq!(listed["sessions"][0]["last_seq"], 6, "{listed}");
    let session_path = format!("/v1/sessions/{}", path_segment(&id));
    let patch = json!({ "title": "renamed" });
    gateway
        .expect(
            gateway
                .request(Method::PATCH, &session_path, Some(patch))
                .await,
            200,
        )
        .await;
    let archive = format!("{session_path}/archive");
    gateway
        .expect(gateway.request(Method::POST, &archive, None).await, 200)
        .await;
    assert_eq!(stored_header(&nats, &id).await["shard"], 3);
    let fetched = gateway.expect(gateway.session(&id).await, 200).await;
    assert_eq!(fetched["last_seq"], 6);
    // A gateway new to the session (nothing cached) appends where the events are.
    let fresh = TestGateway::start_with(sharded(&nats, 4)).await;
    assert_eq!(fresh.append_ok(&id, event("p", 2)).await["seq"], 7);
    assert_eq!(live.seqs(1).await, vec![7]);
}

#[tokio::test]
async fn a_list_over_every_shard_carries_each_sessions_newest_seq() {
    let nats = TestNats::start();
    let gateway = TestGateway::start_with(sharded(&nats, 4)).await;
    let mut expected = Vec::new();
    for shard in 0..4 {
        for (n, id) in ids_on("listed", shard, 4, 3).into_iter().enumerate() {
            create(&gateway, &id).await;
            // No event at all lists 0.
            let events = (shard as u64 + n as u64) % 4;
            for producer_seq in 1..=events {
                gateway.append_ok(&id, event("p", producer_seq)).await;
            }
            expected.push((id, events));
        }
    }
    expected.sort();
    let listed = gateway
        .expect(
            gateway
                .request(Method::GET, "/v1/sessions?limit=100", None)
                .await,
            200,
        )
        .await;
    let newest: Vec<(String, u64)> = listed["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|session| {
            (
                session["id"].as_str().unwrap().to_owned(),
                session["last_seq"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(newest, expected);
}

#[tokio::test]
async fn changing_the_number_of_shards_keeps_every_session() {
    let nats = TestNats::start();
    let mut sessions: Vec<String> = Vec::new();
    let mut appended = std::collections::HashMap::<String, u64>::new();
    for (round, shards) in [1u32, 4, 2].into_iter().enumerate() {
        let gateway = TestGateway::start_with(sharded(&nats, shards)).await;
        // New sessions on every shard this configuration has.
        for shard in 0..shards {
            for id in ids_on(&format!("round{round}"), shard, shards, 1) {
                create(&gateway, &id).await;
                sessions.push(id);
            }
        }
        // Every session so far, wherever it was placed, takes two more events.
        for id in &sessions {
            for _ in 0..2 {
                let count = appended.entry(id.clone()).or_default();
                *count += 1;
                let reply = gateway.append_ok(id, event("p", *count)).await;
                assert_eq!(reply["seq"], *count, "{id} with {shards} shards");
            }
        }
        for id in &sessions {
            let expected: Vec<u64> = (1..=appended[id]).collect();
            assert_eq!(all_seqs(&gateway, id).await, expected, "{id}");
            let mut tail = gateway.tail(id, 0).await;
            assert_eq!(tail.seqs(expected.len()).await, expected, "{id}");
        }
        if shards == 2 {
            // Shards 2 and 3 came from the gateway with four: still kept and reported.
            let metrics = metrics_text(&gateway).await.unwrap();
            assert!(
                metrics.contains("starcite_stream_messages{stream=\"events_3\"}"),
                "{metrics}"
            );
        }
        gateway.stop().await;
    }
    // Shards 1..3 each got sessions in the round with four shards.
    for shard in 1..4 {
        let stream = format!("STARCITE_EVENTS_{shard}");
        let mut info = nats.jetstream().await.get_stream(&stream).await.unwrap();
        assert!(info.info().await.unwrap().state.messages > 0, "{stream}");
    }
}

/// A long session on a later shard keeps its write-state snapshot under its shard's key (shard
/// 0's key stays free), and a gateway new to the session still answers its producer exactly.
#[tokio::test]
async fn a_session_on_a_later_shard_is_snapshotted_under_its_shard() {
    let nats = TestNats::start();
    let gateway = TestGateway::start_with(sharded(&nats, 4)).await;
    let id = ids_on("long", 3, 4, 1).remove(0);
    create(&gateway, &id).await;
    let events: Vec<Value> = (1..=1000).map(|n| event("p", n)).collect();
    let path = format!("/v1/sessions/{}/append_batch", path_segment(&id));
    let reply = gateway
        .request(Method::POST, &path, Some(json!({ "events": events })))
        .await;
    assert_eq!(reply.status(), 201);
    let (snapshots, token) = nats.snapshots(&id).await;
    // Saved after the append is answered, in its own time.
    eventually(Duration::from_secs(15), || async {
        match snapshots.get(format!("3.{token}")).await.unwrap() {
            Some(saved) => {
                let saved: Value = serde_json::from_slice(&saved).unwrap();
                if saved["last_seq"] == 1000 {
                    Ok(())
                } else {
                    Err(format!("snapshot at {}", saved["last_seq"]))
                }
            }
            None => Err("no snapshot under shard 3's key".to_owned()),
        }
    })
    .await;
    assert!(
        snapshots.get(&token).await.unwrap().is_none(),
        "shard 0's key stays free"
    );
    let fresh = TestGateway::start_with(sharded(&nats, 4)).await;
    let retry = fresh.append_ok(&id, event("p", 1000)).await;
    assert_eq!(
        (retry["seq"].as_u64(), retry["deduped"].as_bool()),
        (Some(1000), Some(true))
    );
    assert_eq!(fresh.append_ok(&id, event("p", 1001)).await["seq"], 1001);
}

/// Three nodes, three shards: each shard is a replicated stream of its own, whose leader
/// JetStream places; `/metrics` reports each one's leader as the cluster does.
#[tokio::test]
async fn each_shard_on_a_cluster_has_a_leader_of_its_own() {
    let cluster = TestCluster::start().await;
    let mut config = TestGateway::replicated_config(cluster.urls());
    config.nats.stream_shards = 3;
    let gateway = TestGateway::start_with(config).await;
    for shard in 0..3 {
        let id = ids_on("clustered", shard, 3, 1).remove(0);
        create(&gateway, &id).await;
        gateway.append_ok(&id, event("p", 1)).await;
        assert_eq!(all_seqs(&gateway, &id).await, vec![1]);
    }
    let mut placement = Vec::new();
    for (shard, stream) in ["STARCITE_EVENTS", "STARCITE_EVENTS_1", "STARCITE_EVENTS_2"]
        .into_iter()
        .enumerate()
    {
        let leader = cluster.stream_leader(stream).await;
        assert_eq!(cluster.stream_nodes(stream).await.len(), 3, "{stream}");
        placement.push((shard, leader));
    }
    eprintln!("shard leaders (shard, node): {placement:?}");
    let label = |shard: usize| match shard {
        0 => "events".to_owned(),
        shard => format!("events_{shard}"),
    };
    eventually(Duration::from_secs(20), || async {
        let metrics = metrics_text(&gateway).await?;
        for &(shard, node) in &placement {
            let prefix = format!(
                "starcite_stream_leader{{stream=\"{}\",server=\"",
                label(shard)
            );
            let reported = metrics
                .lines()
                .find_map(|line| line.strip_prefix(&prefix)?.split('"').next())
                .ok_or_else(|| format!("no leader of shard {shard} in\n{metrics}"))?;
            if cluster.node_named(reported) != node {
                return Err(format!("shard {shard} led by {reported}, not node {node}"));
            }
        }
        Ok(())
    })
    .await;
}
