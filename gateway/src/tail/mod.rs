//! Catch-up and live as one stream: a session's events after a cursor, in order, each once,
//! with heartbeats while idle and a last item when the gateway shuts down.

use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::nats::{EventFeed, StoreError};
use crate::sessions::model::Seq;
use crate::shutdown::Shutdown;

#[derive(Debug, Clone, PartialEq)]
pub enum TailItem {
    /// One event: its seq and its JSON exactly as stored.
    Event { seq: Seq, json: Bytes },
    /// Nothing happened for a ping interval: a chance to check the connection is alive.
    Heartbeat,
    /// The gateway is stopping; the reader should reconnect elsewhere with its cursor.
    ShuttingDown,
}

struct Follower {
    feed: EventFeed,
    cursor: Seq,
    idle: Duration,
    shutdown: Shutdown,
    finished: bool,
}

/// Follows `feed` (positioned at or before event `cursor + 1`) and yields every event after
/// `cursor`. An error ends the stream: the reader resumes from its last seq.
pub fn follow(
    feed: EventFeed,
    cursor: Seq,
    idle: Duration,
    shutdown: Shutdown,
) -> impl Stream<Item = Result<TailItem, StoreError>> {
    let follower = Follower {
        feed,
        cursor,
        idle,
        shutdown,
        finished: false,
    };
    futures::stream::unfold(follower, |mut follower| async move {
        if follower.finished {
            return None;
        }
        let item = follower.next_item().await;
        follower.finished = !matches!(item, Ok(TailItem::Event { .. } | TailItem::Heartbeat));
        Some((item, follower))
    })
}

impl Follower {
    async fn next_item(&mut self) -> Result<TailItem, StoreError> {
        loop {
            tokio::select! {
                biased;
                () = self.shutdown.wait() => return Ok(TailItem::ShuttingDown),
                event = self.feed.next() => {
                    let event = event.ok_or_else(|| StoreError::Unavailable("the event feed ended".into()))??;
                    // The feed may start before the cursor (a reader ahead of the head waits
                    // for cursor + 1); never repeat what the reader already has.
                    if event.seq <= self.cursor {
                        continue;
                    }
                    self.cursor = event.seq;
                    return Ok(TailItem::Event { seq: event.seq, json: event.body });
                }
                () = tokio::time::sleep(self.idle) => return Ok(TailItem::Heartbeat),
            }
        }
    }
}
