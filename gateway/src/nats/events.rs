//! Session events on the stream: conditional appends, heads, catch-up reads and live feeds.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::stream::{
    DirectGetErrorKind, LastRawMessageErrorKind, RawMessageErrorKind,
};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::Deserialize;

use super::feed::{Feed, RawFeed};
use super::{Store, StoreError, subjects, unavailable, within};
use crate::sessions::model::{ContentHash, EventContent, EventRecord, Seq, SessionId, sha256_hex};

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

/// An atomic batch being sent: each staged event goes out at once, so JetStream prepares the
/// batch (on a single-replica file stream, a staging store of its own) while the rest are
/// still being decided; `commit` sends the last and stores them all, or none.
pub struct OpenBatch {
    client: async_nats::Client,
    jetstream: async_nats::jetstream::Context,
    subject: String,
    batch_id: String,
    staged: usize,
    timeout: Duration,
}

impl OpenBatch {
    /// Events sent so far, before the commit.
    pub fn staged(&self) -> usize {
        self.staged
    }

    /// Sends an event of the batch; the server holds it until the commit.
    pub async fn stage(&mut self, append: &PendingAppend<'_>) -> Result<(), AppendFailure> {
        let headers = self.headers(append);
        let send =
            self.client
                .publish_with_headers(self.subject.clone(), headers, append.body.clone());
        within(self.timeout, "staging a batch", send)
            .await?
            .map_err(|err| match err.kind() {
                async_nats::client::PublishErrorKind::MaxPayloadExceeded => AppendFailure::TooLarge,
                _ => AppendFailure::Store(unavailable(err)),
            })?;
        self.staged += 1;
        Ok(())
    }

    /// Sends the last event and commits the batch; returns the last event's stream sequence.
    pub async fn commit(self, last: &PendingAppend<'_>) -> Result<u64, AppendFailure> {
        let mut headers = self.headers(last);
        headers.insert("Nats-Batch-Commit", "1");
        let send =
            self.jetstream
                .publish_with_headers(self.subject.clone(), headers, last.body.clone());
        let publish = within(self.timeout, "committing a batch", send)
            .await?
            .map_err(publish_failure)?;
        let ack = publish.await.map_err(publish_failure)?;
        Ok(ack.sequence)
    }

    fn headers(&self, append: &PendingAppend<'_>) -> HeaderMap {
        let mut headers = event_headers(append);
        headers.insert("Nats-Batch-Id", self.batch_id.as_str());
        headers.insert(
            "Nats-Batch-Sequence",
            (self.staged + 1).to_string().as_str(),
        );
        if self.staged == 0 {
            expect_last(&mut headers, append);
        }
        headers
    }
}

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

/// The producer fields of a stored body; serde skips the rest.
#[derive(Deserialize)]
struct ProducerFields {
    producer_id: String,
    producer_seq: u64,
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
        })
    }
}

/// Catch-ups this much behind the head use a consumer instead of one Direct Get batch.
const DIRECT_READ_LIMIT: u64 = 64;

impl Store {
    fn subject(&self, id: &SessionId) -> String {
        subjects::events_subject(&self.topology.subject_prefix, id)
    }

    /// Publishes with `Nats-Msg-Id` and `Nats-Expected-Last-Subject-Sequence`: the stream
    /// stores it only if nothing reached the session since the decision, so no two gateways
    /// can ever assign the same seq.
    pub async fn append(
        &self,
        id: &SessionId,
        append: &PendingAppend<'_>,
    ) -> Result<u64, AppendFailure> {
        self.sessions_bucket()?;
        let mut headers = event_headers(append);
        let message_id = message_id(id, append.content, append.expected_stream_seq);
        headers.insert("Nats-Msg-Id", message_id.as_str());
        expect_last(&mut headers, append);
        let send =
            self.jetstream
                .publish_with_headers(self.subject(id), headers, append.body.clone());
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

    /// Publishes several events as one atomic batch: JetStream stores all of them, at
    /// consecutive stream sequences, or none. The first carries the expected last subject
    /// sequence, checked at commit, which makes the whole batch conditional like a single
    /// append. Returns the stream sequence of the last.
    pub async fn append_batch(
        &self,
        id: &SessionId,
        appends: &[PendingAppend<'_>],
    ) -> Result<u64, AppendFailure> {
        let Some((last, rest)) = appends.split_last() else {
            return Err(AppendFailure::Store(StoreError::Corrupt(
                "an empty batch was published".into(),
            )));
        };
        let mut batch = self.open_batch(id)?;
        for append in rest {
            batch.stage(append).await?;
        }
        batch.commit(last).await
    }

    /// Starts an atomic batch whose events are sent as they are decided.
    pub fn open_batch(&self, id: &SessionId) -> Result<OpenBatch, StoreError> {
        self.sessions_bucket()?;
        Ok(OpenBatch {
            client: self.client.clone(),
            jetstream: self.jetstream.clone(),
            subject: self.subject(id),
            batch_id: format!(
                "{:016x}{:016x}",
                rand::random::<u64>(),
                rand::random::<u64>()
            ),
            staged: 0,
            timeout: self.timeout,
        })
    }

    /// The position of the session's newest event, read from the stream leader so it is
    /// never behind.
    pub async fn head(&self, id: &SessionId) -> Result<Option<Head>, StoreError> {
        Ok(self.newest_event(id).await?.as_ref().map(StoredEvent::head))
    }

    /// The session's newest event, read from the stream leader.
    pub async fn newest_event(&self, id: &SessionId) -> Result<Option<StoredEvent>, StoreError> {
        self.sessions_bucket()?;
        match self
            .events
            .get_last_raw_message_by_subject(&self.subject(id))
            .await
        {
            Ok(message) => {
                StoredEvent::parse(message.sequence, Some(&message.headers), message.payload)
                    .map(Some)
            }
            Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(err) => Err(unavailable(err)),
        }
    }

    /// The stored event at `stream_seq`, if it is one of this session's.
    pub async fn event_at(
        &self,
        id: &SessionId,
        stream_seq: u64,
    ) -> Result<Option<StoredEvent>, StoreError> {
        match self.events.direct_get(stream_seq).await {
            Ok(message) if message.subject.as_str() == self.subject(id) => {
                StoredEvent::parse(message.sequence, Some(&message.headers), message.payload)
                    .map(Some)
            }
            Ok(_) => Ok(None),
            Err(err) if err.kind() == DirectGetErrorKind::NotFound => Ok(None),
            Err(err) if err.kind() == DirectGetErrorKind::TimedOut => {
                Err(StoreError::Timeout(err.to_string()))
            }
            Err(err) => Err(unavailable(err)),
        }
    }

    /// The session's oldest retained event, as the stream leader has it.
    pub async fn first(&self, id: &SessionId) -> Result<Option<Head>, StoreError> {
        let event = self.next_event(&self.subject(id), 1).await?;
        Ok(event.as_ref().map(StoredEvent::head))
    }

    /// Each session's newest seq (0 for none), read concurrently from any replica: figures for
    /// lists and pages, which may lag the leader by a moment, never for a decision.
    pub async fn last_seqs(&self, ids: &[SessionId]) -> Result<Vec<Seq>, StoreError> {
        self.sessions_bucket()?;
        let lookups: Vec<_> = ids.iter().map(|id| self.last_seq(id)).collect();
        futures::stream::iter(lookups)
            .buffered(32)
            .try_collect()
            .await
    }

    async fn last_seq(&self, id: &SessionId) -> Result<Seq, StoreError> {
        match self
            .events
            .direct_get_last_for_subject(self.subject(id))
            .await
        {
            Ok(message) => {
                StoredEvent::parse(message.sequence, Some(&message.headers), message.payload)
                    .map(|event| event.seq)
            }
            Err(err) if err.kind() == DirectGetErrorKind::NotFound => Ok(0),
            Err(err) if err.kind() == DirectGetErrorKind::TimedOut => {
                Err(StoreError::Timeout(err.to_string()))
            }
            Err(err) => Err(unavailable(err)),
        }
    }

    /// Every event of the session after `after_stream_seq`, up to and including `head`.
    pub async fn events_between(
        &self,
        id: &SessionId,
        after_stream_seq: u64,
        after_seq: Seq,
        head: Head,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        if head.stream_seq <= after_stream_seq {
            return Ok(Vec::new());
        }
        let count = head.seq.saturating_sub(after_seq);
        self.read_events(id, after_stream_seq + 1, head.stream_seq, count)
            .await
    }

    /// Up to `count` of the session's events from `from_stream_seq` to `until_stream_seq`:
    /// one Direct Get batch for a few, one consumer for many. Retention may have dropped some,
    /// so the read ends at `until_stream_seq` (or where the stream has nothing more), never by
    /// count.
    pub async fn read_events(
        &self,
        id: &SessionId,
        from_stream_seq: u64,
        until_stream_seq: u64,
        count: u64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut events = Vec::new();
        if count == 0 {
            return Ok(events);
        }
        if count > DIRECT_READ_LIMIT {
            let mut feed = self.follow(id, from_stream_seq).await?;
            while (events.len() as u64) < count {
                let next = tokio::time::timeout(self.timeout, feed.next())
                    .await
                    .map_err(|_| StoreError::Timeout("reading a session's events".into()))?;
                let Some(event) = next else { break };
                let event = event?;
                // A recreated ordered consumer may start over; what was read is skipped.
                if event.stream_seq < from_stream_seq {
                    continue;
                }
                if event.stream_seq > until_stream_seq {
                    break;
                }
                let last = event.stream_seq == until_stream_seq;
                events.push(event);
                if last {
                    break;
                }
            }
            return Ok(events);
        }
        let subject = self.subject(id);
        let mut events = self.read_batch(&subject, from_stream_seq, count).await?;
        events.retain(|event| event.stream_seq <= until_stream_seq);
        // Any replica answers a Direct Get, and a follower may not hold the newest events yet:
        // a short answer is never taken as complete, and what it lacks is read from the leader.
        while (events.len() as u64) < count
            && events
                .last()
                .is_none_or(|event| event.stream_seq < until_stream_seq)
        {
            let next = events
                .last()
                .map_or(from_stream_seq, |event| event.stream_seq + 1);
            match self.next_event(&subject, next).await? {
                Some(event) if event.stream_seq <= until_stream_seq => events.push(event),
                _ => break,
            }
        }
        Ok(events)
    }

    /// Up to `count` of the subject's messages from `from_stream_seq` on, in one Direct Get
    /// batch: one round trip, where a Direct Get per event would wait its turn behind whatever
    /// the stream is busy with (another gateway's batch commits) once per event. Whichever
    /// replica answers may be behind the leader.
    async fn read_batch(
        &self,
        subject: &str,
        from_stream_seq: u64,
        count: u64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let inbox = self.client.new_inbox();
        let mut replies = within(
            self.timeout,
            "reading events",
            self.client.subscribe(inbox.clone()),
        )
        .await?
        .map_err(unavailable)?;
        let request = serde_json::json!({
            "seq": from_stream_seq,
            "next_by_subj": subject,
            "batch": count,
        });
        let send = self.client.publish_with_reply(
            format!("$JS.API.DIRECT.GET.{}", self.topology.stream),
            inbox,
            request.to_string().into(),
        );
        within(self.timeout, "reading events", send)
            .await?
            .map_err(unavailable)?;
        let mut events = Vec::new();
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let reply = tokio::time::timeout_at(deadline, replies.next())
                .await
                .map_err(|_| StoreError::Timeout("reading a session's events".into()))?
                .ok_or_else(|| unavailable("the Direct Get replies ended"))?;
            match reply.status.map(|status| status.as_u16()) {
                None | Some(200) => {
                    let stream_seq = header_number(reply.headers.as_ref(), STREAM_SEQ_HEADER)
                        .ok_or_else(|| {
                            StoreError::Corrupt("a Direct Get reply without its sequence".into())
                        })?;
                    events.push(StoredEvent::parse(
                        stream_seq,
                        reply.headers.as_ref(),
                        reply.payload,
                    )?);
                }
                // The end of the batch, or nothing from there on.
                Some(204 | 404) => return Ok(events),
                Some(status) => {
                    let description = reply.description.unwrap_or_default();
                    return Err(unavailable(format!(
                        "a Direct Get batch was answered {status} {description}"
                    )));
                }
            }
        }
    }

    /// The session's first event at or after `stream_seq`, read from the stream leader so it
    /// is never behind.
    async fn next_event(
        &self,
        subject: &str,
        stream_seq: u64,
    ) -> Result<Option<StoredEvent>, StoreError> {
        match self
            .events
            .get_first_raw_message_by_subject(subject, stream_seq)
            .await
        {
            Ok(message) => {
                StoredEvent::parse(message.sequence, Some(&message.headers), message.payload)
                    .map(Some)
            }
            Err(err) if err.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
            Err(err) => Err(unavailable(err)),
        }
    }

    /// The stream sequence of the session's event `seq` (1 ≤ seq ≤ head.seq).
    ///
    /// Stream sequences grow by at least one per event of the session, which bounds where the
    /// event can be; each probe narrows the bounds, so dense sessions take one or two probes.
    pub async fn stream_seq_of(
        &self,
        id: &SessionId,
        seq: Seq,
        head: Head,
    ) -> Result<u64, StoreError> {
        let subject = self.subject(id);
        let missing = || StoreError::Corrupt(format!("event {seq} is missing from its subject"));
        let mut low = seq;
        let mut high = head.stream_seq.saturating_sub(head.seq.saturating_sub(seq));
        while low <= high {
            let probe = low + (high - low) / 2;
            let found = self
                .next_event(&subject, probe)
                .await?
                .ok_or_else(missing)?;
            if found.seq == seq {
                return Ok(found.stream_seq);
            }
            if found.seq < seq {
                low = found.stream_seq + (seq - found.seq);
            } else {
                // The event is before the probe, and before `found` by at least the seq gap.
                high = (probe - 1).min(found.stream_seq.saturating_sub(found.seq - seq));
            }
        }
        Err(missing())
    }

    /// The session's events from `from_stream_seq` on: what is stored, then live as it is
    /// committed, from one ordered consumer so there is no gap or repeat at the switch.
    pub async fn follow(
        &self,
        id: &SessionId,
        from_stream_seq: u64,
    ) -> Result<EventFeed, StoreError> {
        self.sessions_bucket()?;
        let config = pull::OrderedConfig {
            filter_subject: self.subject(id),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: from_stream_seq.max(1),
            },
            ..Default::default()
        };
        let RawFeed { messages, consumer } = self.ordered_feed(&self.events, config).await?;
        let events = messages.map(|message| {
            let message = message?;
            StoredEvent::parse(
                message.stream_seq,
                message.headers.as_ref(),
                message.payload,
            )
        });
        Ok(Feed::new(Box::pin(events), consumer))
    }
}

/// A header holding a number, such as the stream sequence JetStream puts on Direct Get replies
/// and republished copies.
pub(super) fn header_number(headers: Option<&HeaderMap>, name: &str) -> Option<u64> {
    headers?.get(name)?.as_str().parse().ok()
}

/// What every stored event carries beside its body: its seq and content hash.
fn event_headers(append: &PendingAppend<'_>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(SEQ_HEADER, append.seq.to_string().as_str());
    headers.insert(HASH_HEADER, append.hash.as_str());
    if let Some(trace) = append.trace {
        headers.insert(TRACE_HEADER, trace);
    }
    headers
}

/// Makes the publish conditional on the session's state the decision was made on.
fn expect_last(headers: &mut HeaderMap, append: &PendingAppend<'_>) {
    headers.insert(
        "Nats-Expected-Last-Subject-Sequence",
        append.expected_stream_seq.to_string().as_str(),
    );
}

/// A session's stored-then-live events.
pub type EventFeed = Feed<StoredEvent>;

/// One request as decided on one state: session, producer, producer_seq (the window spans all
/// subjects) and the stream sequence the decision was made on. A retry decided on the same
/// state (after a timeout, or from another gateway just as stale) is deduplicated by
/// JetStream; one decided on a newer state finds the original in the catch-up instead. A
/// producer the log has forgotten (evicted, or its events expired) may then start again, as
/// docs/api.md says, without JetStream's memory of the old request refusing it.
/// Hashed because producer ids are unbounded client strings that a header cannot always hold.
fn message_id(id: &SessionId, content: &EventContent, expected_stream_seq: u64) -> String {
    // The JSON array `[session, producer_id, producer_seq, expected_stream_seq]`, written
    // straight from the tuple; strings and integers always serialize.
    let key = (
        id.as_str(),
        &content.producer_id,
        content.producer_seq,
        expected_stream_seq,
    );
    sha256_hex(&serde_json::to_vec(&key).unwrap_or_default())
}

fn publish_failure(err: async_nats::jetstream::context::PublishError) -> AppendFailure {
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
            message_id(&id, &content, 42),
            "5b8ae3bfbb5f5ad2def0160d673e9e4109a9b5d2e0fd4d59481de91a6b6da67b"
        );
    }
}
