//! Test support: a private `nats-server`, in-process gateways, and a WebSocket tail client.
//! Everything binds to loopback and cleans up on drop.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

pub mod auth;
mod browser;
pub mod catalog;
mod client_program;
mod cluster;
mod error;
mod gateway;
mod nats;
mod otlp;
mod process;
mod producer;
mod prometheus;
mod proxy;
mod sse;
mod stale_replica;
mod tail;
mod wait;

pub use browser::Browser;
pub use client_program::{Fault, FaultyDeployment};
pub use cluster::TestCluster;
pub use error::error_of;
pub use gateway::{TestGateway, path_segment, stored_events};
pub use nats::{GcCycle, TestNats};
pub use otlp::{TestCollector, attribute as span_attribute};
pub use process::GatewayProcess;
pub use producer::{
    ProducerFrame, ProducerReplies, ProducerSender, connect_producer,
    connect_producer_reading_slowly,
};
pub use prometheus::{TestPrometheus, sample_value};
pub use proxy::TcpProxy;
pub use sse::{SseClient, SseFrame};
pub use stale_replica::StaleReplica;
pub use tail::{TailClient, TailFrame};
pub use wait::eventually;

use serde_json::{Value, json};

/// A valid append body for `producer_id` at `producer_seq`, with a payload naming both.
pub fn event(producer_id: &str, producer_seq: u64) -> Value {
    json!({
        "type": "message",
        "payload": {"text": format!("{producer_id} #{producer_seq}")},
        "actor": "agent:test",
        "producer_id": producer_id,
        "producer_seq": producer_seq,
    })
}

/// The first ids `prefix-0`, `prefix-1`, … that a gateway with `shards` places on `shard`.
pub fn ids_on(prefix: &str, shard: u32, shards: u32, count: usize) -> Vec<String> {
    (0..)
        .map(|n| format!("{prefix}-{n}"))
        .filter(|id| {
            let id = ::gateway::sessions::model::SessionId::parse(id).unwrap();
            ::gateway::nats::shard_for(&id, shards) == shard
        })
        .take(count)
        .collect()
}
