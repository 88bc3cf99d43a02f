//! The stored event's format: what an append writes beside the body (seq, content hash, trace
//! context) and how a stored message is read back, so every other file speaks in events.

use std::sync::Arc;

use async_nats::HeaderMap;
use async_nats::jetstream::message::StreamMessage;
use bytes::Bytes;
use serde::Deserialize;

use super::StoreError;
use crate::sessions::model::{CLOSE_EVENT_TYPE, ContentHash, EventContent, EventRecord, Seq};

/// The session seq of a stored event, so heads and searches need not parse bodies.
const SEQ_HEADER: &str = "Starcite-Seq";
/// The event's content hash, so a gateway rebuilding producer cursors need not recompute it.
const HASH_HEADER: &str = "Starcite-Content-Hash";
/// The W3C trace context of the request that stored the event, when it was traced.
const TRACE_HEADER: &str = "traceparent";
/// The header with a message's stream sequence, on Direct Get replies and republished copies.
pub(super) const STREAM_SEQ_HEADER: &str = "Nats-Sequence";

/// The newest event of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub stream_seq: u64,
    pub seq: Seq,
}

/// An event ready to publish: its seq was decided against the state at `expected_stream_seq`.
pub struct PendingAppend<'a> {
    pub seq: Seq,
    pub expected_stream_seq: u64,
    pub content: &'a EventContent,
    pub hash: &'a ContentHash,
    /// The event JSON exactly as tailers will receive it.
    pub body: Bytes,
    /// The storing request's `traceparent`, when it is traced.
    pub trace: Option<&'a str>,
}

/// One stored event as read back from the stream.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub stream_seq: u64,
    pub seq: Seq,
    hash: ContentHash,
    /// The event JSON, byte for byte as stored.
    pub body: Bytes,
    /// The `traceparent` of the request that stored it, if it was traced.
    pub trace: Option<Arc<str>>,
}

/// The fields of a stored body the write state folds; serde skips the rest.
#[derive(Deserialize)]
struct ProducerFields {
    producer_id: String,
    producer_seq: u64,
    #[serde(rename = "type")]
    kind: String,
}

impl StoredEvent {
    pub(super) fn parse(
        stream_seq: u64,
        headers: Option<&HeaderMap>,
        body: Bytes,
    ) -> Result<StoredEvent, StoreError> {
        let header = |name: &str| {
            headers
                .and_then(|headers| headers.get(name))
                .map(|value| value.as_str())
                .ok_or_else(|| {
                    StoreError::Corrupt(format!("stream message {stream_seq} has no {name} header"))
                })
        };
        let seq = header(SEQ_HEADER)?.parse().map_err(|_| {
            StoreError::Corrupt(format!(
                "stream message {stream_seq} has a bad {SEQ_HEADER}"
            ))
        })?;
        let hash = ContentHash::from_hex(header(HASH_HEADER)?);
        let trace = headers
            .and_then(|headers| headers.get(TRACE_HEADER))
            .map(|value| Arc::from(value.as_str()));
        Ok(StoredEvent {
            stream_seq,
            seq,
            hash,
            body,
            trace,
        })
    }

    /// A message read from the stream by sequence or by subject.
    pub(super) fn from_stream(message: StreamMessage) -> Result<StoredEvent, StoreError> {
        StoredEvent::parse(message.sequence, Some(&message.headers), message.payload)
    }

    /// An event as a Direct Get batch answers it, its sequence in a header.
    pub(super) fn from_direct_reply(reply: async_nats::Message) -> Result<StoredEvent, StoreError> {
        let stream_seq = header_number(reply.headers.as_ref(), STREAM_SEQ_HEADER)
            .ok_or_else(|| StoreError::Corrupt("a Direct Get reply without its sequence".into()))?;
        StoredEvent::parse(stream_seq, reply.headers.as_ref(), reply.payload)
    }

    /// Where this event is.
    pub fn head(&self) -> Head {
        Head {
            stream_seq: self.stream_seq,
            seq: self.seq,
        }
    }

    /// What the session state needs of this event.
    pub fn record(&self) -> Result<EventRecord, StoreError> {
        let producer: ProducerFields = serde_json::from_slice(&self.body).map_err(|err| {
            StoreError::Corrupt(format!("stream message {}: {err}", self.stream_seq))
        })?;
        Ok(EventRecord {
            stream_seq: self.stream_seq,
            seq: self.seq,
            producer_id: producer.producer_id,
            producer_seq: producer.producer_seq,
            hash: self.hash.clone(),
            closes: producer.kind == CLOSE_EVENT_TYPE,
        })
    }
}

/// A header holding a number, such as the stream sequence JetStream puts on Direct Get replies
/// and republished copies.
pub(super) fn header_number(headers: Option<&HeaderMap>, name: &str) -> Option<u64> {
    headers?.get(name)?.as_str().parse().ok()
}

/// What every stored event carries beside its body: its seq and content hash.
pub(super) fn event_headers(append: &PendingAppend<'_>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(SEQ_HEADER, append.seq.to_string().as_str());
    headers.insert(HASH_HEADER, append.hash.as_str());
    if let Some(trace) = append.trace {
        headers.insert(TRACE_HEADER, trace);
    }
    headers
}
