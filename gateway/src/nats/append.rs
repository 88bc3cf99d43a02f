//! Single conditional appends: one event, published only if nothing reached the session since
//! its decision, and deduplicated by JetStream when the same decision is retried.

use std::sync::atomic::{AtomicUsize, Ordering};

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishErrorKind;

use super::events::{PendingAppend, event_headers};
use super::{Store, StoreError, unavailable, within};
use crate::sessions::model::{EventContent, SessionId, sha256_hex};

#[derive(Debug, thiserror::Error)]
pub enum AppendFailure {
    /// The session moved on since the state the seq was decided on: catch up and decide again.
    #[error("the session changed since the decision")]
    Stale,
    /// JetStream already holds a message with this request's `Nats-Msg-Id`, at `stream_seq`.
    #[error("a message with this id is already stored")]
    Duplicate { stream_seq: u64 },
    #[error("the event is larger than NATS accepts")]
    TooLarge,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Store {
    /// Publishes with `Nats-Msg-Id` and `Nats-Expected-Last-Subject-Sequence`: the stream
    /// stores it only if nothing reached the session since the decision, so no two gateways
    /// can ever assign the same seq.
    pub async fn append(
        &self,
        id: &SessionId,
        append: &PendingAppend<'_>,
    ) -> Result<u64, AppendFailure> {
        self.require_usable()?;
        let _in_flight = InFlight::count(&self.appends_in_flight);
        let mut headers = event_headers(append);
        // Only a decision made on an empty log can meet one of a deleted incarnation of the
        // session (stream sequences are never reused): tell them apart by its creation.
        let created_at = match append.expected_stream_seq {
            0 => self
                .session(id)
                .await?
                .map(|revised| revised.record.session.created_at),
            _ => None,
        };
        let message_id = message_id(
            id,
            append.content,
            append.expected_stream_seq,
            created_at.as_deref(),
        );
        headers.insert("Nats-Msg-Id", message_id.as_str());
        expect_last(&mut headers, append);
        let subject = self.subject_of(id).await?;
        let send = self
            .jetstream
            .publish_with_headers(subject, headers, append.body.clone());
        let publish = within(self.timeout, "publishing an append", send)
            .await?
            .map_err(publish_failure)?;
        let ack = publish.await.map_err(publish_failure)?;
        if ack.duplicate {
            return Err(AppendFailure::Duplicate {
                stream_seq: ack.sequence,
            });
        }
        Ok(ack.sequence)
    }
}

/// Counts a single append while it is published, for `Store::batch_slot`.
struct InFlight<'a>(&'a AtomicUsize);

impl InFlight<'_> {
    fn count(appends: &AtomicUsize) -> InFlight<'_> {
        appends.fetch_add(1, Ordering::Relaxed);
        InFlight(appends)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Makes the publish conditional on the session's state the decision was made on.
pub(super) fn expect_last(headers: &mut HeaderMap, append: &PendingAppend<'_>) {
    headers.insert(
        "Nats-Expected-Last-Subject-Sequence",
        append.expected_stream_seq.to_string().as_str(),
    );
}

/// One request as decided on one state: session, producer, producer_seq (the window spans all
/// subjects) and the stream sequence the decision was made on. A retry decided on the same
/// state (after a timeout, or from another gateway just as stale) is deduplicated by
/// JetStream; one decided on a newer state finds the original in the catch-up instead. A
/// producer the log has forgotten (evicted, or its events expired) may then start again, as
/// docs/api.md says, without JetStream's memory of the old request refusing it.
/// Hashed because producer ids are unbounded client strings that a header cannot always hold.
/// A decision made on an empty log also names the session's `created_at`: a session deleted
/// and created again starts from an empty log too, within JetStream's memory of the first.
fn message_id(
    id: &SessionId,
    content: &EventContent,
    expected_stream_seq: u64,
    created_at: Option<&str>,
) -> String {
    // The JSON array `[session, producer_id, producer_seq, expected_stream_seq]` (and
    // `created_at`), written straight from the tuple; strings and integers always serialize.
    let key = (
        id.as_str(),
        &content.producer_id,
        content.producer_seq,
        expected_stream_seq,
    );
    let key = match created_at {
        None => serde_json::to_vec(&key),
        Some(created_at) => serde_json::to_vec(&(key.0, key.1, key.2, key.3, created_at)),
    };
    sha256_hex(&key.unwrap_or_default())
}

pub(super) fn publish_failure(err: async_nats::jetstream::context::PublishError) -> AppendFailure {
    match err.kind() {
        // 10164 on a replicated stream is a transient "wrong last sequence" reported as
        // `Other`; deciding again after a catch-up is right for it too.
        PublishErrorKind::WrongLastSequence | PublishErrorKind::Other => AppendFailure::Stale,
        PublishErrorKind::MaxPayloadExceeded => AppendFailure::TooLarge,
        PublishErrorKind::TimedOut => AppendFailure::Store(StoreError::Timeout(err.to_string())),
        // "No responders" while a clustered stream elects a leader: unavailable, not missing.
        PublishErrorKind::StreamNotFound
        | PublishErrorKind::BrokenPipe
        | PublishErrorKind::MaxAckPending
        | PublishErrorKind::WrongLastMessageId => AppendFailure::Store(unavailable(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The id is part of the stored data's format: gateways of different versions, running
    /// side by side in a rolling deploy, must give a retry decided on the same state the same
    /// id, or JetStream would store it twice.
    #[test]
    fn message_ids_keep_their_format() {
        let id = SessionId::parse("ses_1").unwrap();
        let content = EventContent {
            kind: "message".into(),
            payload: serde_json::Map::new(),
            actor: "agent:a".into(),
            producer_id: "p\"qé".into(),
            producer_seq: 7,
            source: None,
            metadata: serde_json::Map::new(),
            refs: serde_json::Map::new(),
            idempotency_key: None,
        };
        // sha256 of `["ses_1","p\"qé",7,42]`.
        assert_eq!(
            message_id(&id, &content, 42, None),
            "5b8ae3bfbb5f5ad2def0160d673e9e4109a9b5d2e0fd4d59481de91a6b6da67b"
        );
    }
}
