//! Catalogs of many sessions, written straight into the sessions bucket in the stored format:
//! a fresh view's build then has millions of headers to read without creating each.

use bytes::Bytes;
use gateway::sessions::model::{Change, Session, SessionId, SessionRecord};

use crate::TestNats;

/// The default bucket's name: the view's file is named after it.
pub const BUCKET: &str = "starcite_sessions";

/// Headers published before waiting for their acknowledgements.
const IN_FLIGHT: usize = 4096;

/// Ids in no particular order, as generated ids arrive: what a B-tree finds hardest.
pub fn id(n: usize) -> String {
    // splitmix64: a bijection, so ids never collide.
    let mut z = (n as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    format!("ses_{:016x}", z ^ (z >> 31))
}

/// A typical header: a generated-looking id, a title and two metadata strings; one in ten is
/// archived.
pub fn session(n: usize) -> Session {
    let mut metadata = serde_json::Map::new();
    metadata.insert("tenant".into(), format!("tenant-{}", n % 100).into());
    metadata.insert("agent".into(), "researcher".into());
    Session {
        id: SessionId::parse(&id(n)).unwrap(),
        tenant_id: None,
        title: Some(format!("Conversation {n}")),
        metadata,
        created_at: "2026-11-25T20:00:00.000000Z".into(),
        updated_at: "2026-11-25T20:00:00.000000Z".into(),
        version: 1,
        archived: n.is_multiple_of(10),
        shard: 0,
        content_type: None,
        expiry: None,
        forked_from: None,
        fork_count: 0,
        retired: false,
    }
}

/// Writes headers `session(0..count)` straight into the bucket, pipelined, each as a
/// gateway's create writes it: with the create's condition (no version of the key yet), a
/// message header the stream stores with the value and every replay delivers.
pub async fn fill_bucket(nats: &TestNats, count: usize) {
    let jetstream = nats.jetstream().await;
    let mut create = async_nats::HeaderMap::new();
    create.insert(async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, "0");
    let mut pending = std::collections::VecDeque::with_capacity(IN_FLIGHT);
    for n in 0..count {
        let record = SessionRecord {
            session: session(n),
            change: Change::Created,
        };
        let subject = gateway::nats::subjects::bucket_key(BUCKET, &record.session.id);
        let ack = jetstream
            .publish_with_headers(
                subject,
                create.clone(),
                Bytes::from(serde_json::to_vec(&record).unwrap()),
            )
            .await
            .unwrap();
        pending.push_back(ack);
        if pending.len() == IN_FLIGHT
            && let Some(ack) = pending.pop_front()
        {
            ack.await.unwrap();
        }
    }
    for ack in pending {
        ack.await.unwrap();
    }
}
