//! Reading a session's stored events: heads and first events from the stream leader, ranges
//! up to a position the leader named with one Direct Get batch (completed from the leader when
//! a replica answers short) or, far behind, with a consumer.

use async_nats::jetstream::stream::{
    DirectGetErrorKind, LastRawMessageErrorKind, RawMessageErrorKind,
};
use std::collections::{BTreeMap, HashMap};

use futures::StreamExt;

use super::events::{Head, StoredEvent};
use super::shards::Placement;
use super::{Store, StoreError, unavailable, within};
use crate::sessions::model::{Seq, Session, SessionId};

/// The header JetStream names a Direct Get reply's subject in.
const SUBJECT_HEADER: &str = "Nats-Subject";

/// Catch-ups this much behind the head use a consumer instead of one Direct Get batch.
const DIRECT_READ_LIMIT: u64 = 64;

impl Store {
    /// The position of the session's newest event, read from the stream leader so it is
    /// never behind.
    pub async fn head(&self, id: &SessionId) -> Result<Option<Head>, StoreError> {
        Ok(self.newest_event(id).await?.as_ref().map(StoredEvent::head))
    }

    /// The session's newest event, read from the stream leader.
    pub async fn newest_event(&self, id: &SessionId) -> Result<Option<StoredEvent>, StoreError> {
        self.require_usable()?;
        let placement = self.placement(id).await?;
        match placement
            .stream
            .get_last_raw_message_by_subject(&placement.subject)
            .await
        {
            Ok(message) => StoredEvent::from_stream(message).map(Some),
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
        let placement = self.placement(id).await?;
        match placement.stream.direct_get(stream_seq).await {
            Ok(message) if message.subject.as_str() == placement.subject => {
                StoredEvent::from_stream(message).map(Some)
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
        let event = self.next_event(&self.placement(id).await?, 1).await?;
        Ok(event.as_ref().map(StoredEvent::head))
    }

    /// Each session's newest seq (0 for none), read from any replica: figures for lists and
    /// pages, which may lag the leader by a moment, never for a decision. The headers name the
    /// shards, and one Direct Get batch per shard asks for all of its sessions' newest
    /// messages: a page costs a round trip, not one per session.
    pub async fn last_seqs(&self, sessions: &[Session]) -> Result<Vec<Seq>, StoreError> {
        self.require_usable()?;
        let subjects: Vec<String> = sessions
            .iter()
            .map(|session| self.subject_on(&session.id, session.shard))
            .collect();
        let mut by_shard: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
        for (session, subject) in sessions.iter().zip(&subjects) {
            by_shard.entry(session.shard).or_default().push(subject);
        }
        let lookups = by_shard.into_iter().map(|(shard, subjects)| async move {
            let request = serde_json::json!({"multi_last": subjects, "batch": subjects.len()});
            let stream_name = self.topology.stream_name(shard);
            let replies = self
                .direct_get_batch(&stream_name, request, "reading the newest events")
                .await?;
            replies
                .into_iter()
                .map(|reply| {
                    let subject = reply
                        .headers
                        .as_ref()
                        .and_then(|headers| headers.get(SUBJECT_HEADER))
                        .map(|subject| subject.as_str().to_owned())
                        .ok_or_else(|| {
                            StoreError::Corrupt("a Direct Get reply without its subject".into())
                        })?;
                    Ok((subject, StoredEvent::from_direct_reply(reply)?.seq))
                })
                .collect::<Result<Vec<(String, Seq)>, StoreError>>()
        });
        let newest: HashMap<String, Seq> = futures::future::try_join_all(lookups)
            .await?
            .into_iter()
            .flatten()
            .collect();
        Ok(subjects
            .iter()
            .map(|subject| newest.get(subject).copied().unwrap_or(0))
            .collect())
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
        let placement = self.placement(id).await?;
        let mut events = self.read_batch(&placement, from_stream_seq, count).await?;
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
            match self.next_event(&placement, next).await? {
                Some(event) if event.stream_seq <= until_stream_seq => events.push(event),
                _ => break,
            }
        }
        Ok(events)
    }

    /// Up to `count` of the session's messages from `from_stream_seq` on, in one Direct Get
    /// batch: one round trip, where a Direct Get per event would wait its turn behind whatever
    /// the stream is busy with (another gateway's batch commits) once per event. Whichever
    /// replica answers may be behind the leader.
    async fn read_batch(
        &self,
        placement: &Placement,
        from_stream_seq: u64,
        count: u64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let request = serde_json::json!({
            "seq": from_stream_seq,
            "next_by_subj": placement.subject,
            "batch": count,
        });
        self.direct_get_batch(&placement.stream_name, request, "reading events")
            .await?
            .into_iter()
            .map(StoredEvent::from_direct_reply)
            .collect()
    }

    /// The messages a Direct Get batch `request` on `stream_name` answers, up to the end of
    /// the batch, in one round trip.
    async fn direct_get_batch(
        &self,
        stream_name: &str,
        request: serde_json::Value,
        reading: &str,
    ) -> Result<Vec<async_nats::Message>, StoreError> {
        let inbox = self.client.new_inbox();
        let mut replies = within(self.timeout, reading, self.client.subscribe(inbox.clone()))
            .await?
            .map_err(unavailable)?;
        let send = self.client.publish_with_reply(
            format!("$JS.API.DIRECT.GET.{stream_name}"),
            inbox,
            request.to_string().into(),
        );
        within(self.timeout, reading, send)
            .await?
            .map_err(unavailable)?;
        let mut messages = Vec::new();
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let reply = tokio::time::timeout_at(deadline, replies.next())
                .await
                .map_err(|_| StoreError::Timeout(format!("{reading} took too long")))?
                .ok_or_else(|| unavailable("the Direct Get replies ended"))?;
            match reply.status.map(|status| status.as_u16()) {
                None | Some(200) => messages.push(reply),
                // The end of the batch, or nothing matched.
                Some(204 | 404) => return Ok(messages),
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
    pub(super) async fn next_event(
        &self,
        placement: &Placement,
        stream_seq: u64,
    ) -> Result<Option<StoredEvent>, StoreError> {
        match placement
            .stream
            .get_first_raw_message_by_subject(&placement.subject, stream_seq)
            .await
        {
            Ok(message) => StoredEvent::from_stream(message).map(Some),
            Err(err) if err.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
            Err(err) => Err(unavailable(err)),
        }
    }
}
