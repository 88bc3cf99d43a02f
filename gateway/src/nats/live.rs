//! A session's newly committed events without a consumer: the stream republishes every stored
//! message to a core subject, and whatever core NATS dropped (a slow subscriber, a reconnect)
//! is read back from the stream, so the feed is continuous from where it started.
//!
//! Only stored messages are republished; a publish the stream refused (a losing CAS) never
//! reaches a reader.

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::Subscriber;
use futures::StreamExt;
use tokio::sync::watch;

use super::events::{Head, STREAM_SEQ_HEADER, StoredEvent, header_number};
use super::{Store, StoreError, subjects, unavailable, within};
use crate::sessions::model::SessionId;

/// The republished copy's header with the subject's previous stream sequence.
const PREVIOUS_SEQ_HEADER: &str = "Nats-Last-Sequence";

/// How long a feed waits without news before it checks the head itself: the safety net for a
/// last message lost with nothing after it to reveal the loss.
const IDLE_CHECK: Duration = Duration::from_secs(10);

/// The events of one session committed after `last`, in order, each once. An error leaves it
/// where it was: a storage hiccup (a leader election, a reconnect) costs a wait, not a hole.
pub struct LiveEvents {
    id: SessionId,
    subscriber: Subscriber,
    last: Head,
    /// Events read back from the stream, delivered before anything newer.
    backlog: VecDeque<StoredEvent>,
    /// Bumped when the connection may have lost republished messages.
    checks: watch::Receiver<u64>,
    /// Set while the feed may have missed something (a message lost by core NATS, or taken
    /// off the subscription by a call that then failed): the stream's head is checked first.
    unsure: bool,
    /// The subscription is gone; no call can deliver anything more.
    ended: bool,
}

impl Store {
    /// The core subject the session's shard's stream republishes its stored events to.
    async fn live_subject(&self, id: &SessionId) -> Result<String, StoreError> {
        let shard = self.shard_of(id).await?;
        Ok(format!(
            "{}.{}",
            self.topology.live_prefix(shard),
            subjects::token(id)
        ))
    }

    /// Follows the session's commits from its current head on. The subscription is in place
    /// on the server before the head is read, so nothing falls between the two.
    pub async fn live(&self, id: &SessionId) -> Result<LiveEvents, StoreError> {
        self.require_usable()?;
        let subscribe = self.client.subscribe(self.live_subject(id).await?);
        let subscriber = within(self.timeout, "subscribing to a session", subscribe)
            .await?
            .map_err(unavailable)?;
        within(
            self.timeout,
            "subscribing to a session",
            self.client.flush(),
        )
        .await?
        .map_err(unavailable)?;
        let last = self.head(id).await?.unwrap_or(Head {
            stream_seq: 0,
            seq: 0,
        });
        Ok(LiveEvents {
            id: id.clone(),
            subscriber,
            last,
            backlog: VecDeque::new(),
            checks: self.live_checks.subscribe(),
            unsure: false,
            ended: false,
        })
    }
}

impl LiveEvents {
    /// The newest event delivered (or the head the feed started at).
    pub fn last(&self) -> Head {
        self.last
    }

    /// Whether the subscription is gone for good; after any other error, calling `next`
    /// again continues exactly where the feed was.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// The next committed event.
    pub async fn next(&mut self, store: &Store) -> Result<StoredEvent, StoreError> {
        loop {
            if let Some(event) = self.backlog.pop_front() {
                if event.stream_seq > self.last.stream_seq {
                    self.last = Head {
                        stream_seq: event.stream_seq,
                        seq: event.seq,
                    };
                    return Ok(event);
                }
                continue;
            }
            if self.unsure {
                self.check_head(store).await?;
                self.unsure = false;
                continue;
            }
            tokio::select! {
                message = self.subscriber.next() => {
                    let Some(message) = message else {
                        self.ended = true;
                        return Err(StoreError::Unavailable("the live subscription ended".into()));
                    };
                    // Until the message is queued, a failure would lose it.
                    self.unsure = true;
                    self.take(store, message).await?;
                    self.unsure = false;
                }
                changed = self.checks.changed() => self.unsure |= changed.is_ok(),
                () = tokio::time::sleep(IDLE_CHECK) => self.unsure = true,
            }
        }
    }

    /// Queues a republished event, after reading back from the stream whatever this feed
    /// never saw before it.
    async fn take(
        &mut self,
        store: &Store,
        message: async_nats::Message,
    ) -> Result<(), StoreError> {
        let headers = message.headers.as_ref();
        let stream_seq = header_number(headers, STREAM_SEQ_HEADER).ok_or_else(|| {
            StoreError::Corrupt("a republished message has no stream sequence".into())
        })?;
        if stream_seq <= self.last.stream_seq {
            return Ok(());
        }
        let event = StoredEvent::parse(stream_seq, headers, message.payload)?;
        // The subject's previous message, exactly; without the header, a bound.
        let previous = header_number(headers, PREVIOUS_SEQ_HEADER).unwrap_or(stream_seq - 1);
        if previous > self.last.stream_seq {
            let before = Head {
                stream_seq: previous,
                seq: event.seq.saturating_sub(1),
            };
            self.read_back(store, before).await?;
        }
        self.backlog.push_back(event);
        Ok(())
    }

    /// Queues what the stream holds past the last delivered event.
    async fn check_head(&mut self, store: &Store) -> Result<(), StoreError> {
        if let Some(head) = store.head(&self.id).await?
            && head.stream_seq > self.last.stream_seq
        {
            self.read_back(store, head).await?;
        }
        Ok(())
    }

    /// Queues the session's stored events after the last delivered one, up to `until`.
    async fn read_back(&mut self, store: &Store, until: Head) -> Result<(), StoreError> {
        if until.stream_seq <= self.last.stream_seq {
            return Ok(());
        }
        // Seqs count the session's own events; after a session started over they cannot,
        // and the span of stream sequences bounds the read instead.
        let count = until
            .seq
            .checked_sub(self.last.seq)
            .filter(|&count| count > 0)
            .unwrap_or(until.stream_seq - self.last.stream_seq);
        let missing = store
            .read_events(&self.id, self.last.stream_seq + 1, until.stream_seq, count)
            .await?;
        self.backlog.extend(missing);
        Ok(())
    }
}
