//! Catalog figures: memory per session in the index, and how long a gateway takes to load the
//! catalog (100k and 1M sessions) before it is ready.

use std::time::Instant;

use bytes::Bytes;
use gateway::catalog::index::{ArchivedFilter, CatalogIndex, ListQuery};
use gateway::sessions::model::{Change, Session, SessionId, SessionRecord};
use starcite_tests::{TestGateway, TestNats};

/// Resident memory of this process, in bytes.
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|pages| pages.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// A typical header: a generated-looking id, a title and two metadata strings.
fn session(n: usize) -> Session {
    let mut metadata = serde_json::Map::new();
    metadata.insert("tenant".into(), format!("tenant-{}", n % 100).into());
    metadata.insert("agent".into(), "researcher".into());
    Session {
        id: SessionId::parse(&format!("ses_{n:016}")).unwrap(),
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

fn index_memory(count: usize) {
    let before = resident_bytes();
    let started = Instant::now();
    let mut index = CatalogIndex::default();
    for n in 0..count {
        index.upsert(session(n));
    }
    let elapsed = started.elapsed();
    let grown = resident_bytes().saturating_sub(before);
    let query = ListQuery {
        limit: 100,
        after: Some(format!("ses_{:016}", count / 2)),
        metadata: vec![("tenant".into(), "tenant-7".into())],
        archived: ArchivedFilter::Active,
        tenant: None,
        only: None,
        search: None,
    };
    let paged = Instant::now();
    let pages = 1000;
    for _ in 0..pages {
        std::hint::black_box(index.page(&query));
    }
    println!(
        "{:<58} {:>7} sessions: {:>5} B/session, built in {:>6.0} ms, filtered page {:>5.1} µs",
        "catalog index in memory",
        count,
        grown / count as u64,
        elapsed.as_secs_f64() * 1000.0,
        paged.elapsed().as_secs_f64() * 1e6 / f64::from(pages)
    );
    drop(index);
}

/// Writes `count` headers straight into the bucket, pipelined, then times a fresh gateway's
/// start until `/health/ready` (which waits for the catalog to load).
async fn load_time(count: usize) {
    let nats = TestNats::start();
    // A gateway creates the stream and the bucket.
    TestGateway::start(&nats).await.stop().await;
    let jetstream = nats.jetstream().await;
    let mut pending = Vec::with_capacity(1024);
    for n in 0..count {
        let record = SessionRecord {
            session: session(n),
            change: Change::Created,
        };
        let subject = format!(
            "$KV.starcite_sessions.{}",
            gateway::nats::subjects::token(&record.session.id)
        );
        let ack = jetstream
            .publish(subject, Bytes::from(serde_json::to_vec(&record).unwrap()))
            .await
            .unwrap();
        pending.push(ack);
        if pending.len() == 1024 {
            for ack in pending.drain(..) {
                ack.await.unwrap();
            }
        }
    }
    for ack in pending {
        ack.await.unwrap();
    }
    let before = resident_bytes();
    let started = Instant::now();
    let gateway = TestGateway::start(&nats).await;
    let elapsed = started.elapsed();
    println!(
        "{:<58} {:>7} sessions: ready in {:>6.0} ms, process grew {:>5} B/session",
        "gateway start-up with a full catalog",
        count,
        elapsed.as_secs_f64() * 1000.0,
        resident_bytes().saturating_sub(before) / count as u64
    );
    gateway.stop().await;
}

pub async fn run() {
    // Each gateway here outlives its NATS server, and would log every reconnect attempt over
    // the figures; errors still show (the first subscriber installed wins).
    gateway::telemetry::init("error", gateway::telemetry::LogFormat::Text);
    for count in [100_000, 1_000_000] {
        index_memory(count);
    }
    for count in [100_000, 1_000_000] {
        load_time(count).await;
    }
}
