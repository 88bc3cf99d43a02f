//! Catch-up and live as one stream: entries after a cursor, in order, each once, with
//! heartbeats while idle and a last item when the gateway shuts down. Session tails and the
//! lifecycle feed are both such streams.

use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::nats::StoreError;
use crate::shutdown::Shutdown;

/// One entry of a log, as a reader receives it: its position (the cursor to resume after)
/// and its JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Positioned {
    pub position: u64,
    pub json: Bytes,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TailItem {
    Entry(Positioned),
    /// Nothing happened for a ping interval: a chance to check the connection is alive.
    Heartbeat,
    /// The gateway is stopping; the reader should reconnect elsewhere with its cursor.
    ShuttingDown,
}

struct Follower<S> {
    entries: S,
    cursor: u64,
    idle: Duration,
    shutdown: Shutdown,
    finished: bool,
}

/// Follows `entries` (positioned at or before `cursor + 1`) and yields every entry after
/// `cursor`. An error ends the stream: the reader resumes from its last position.
pub fn follow<S>(
    entries: S,
    cursor: u64,
    idle: Duration,
    shutdown: Shutdown,
) -> impl Stream<Item = Result<TailItem, StoreError>> + Send + 'static
where
    S: Stream<Item = Result<Positioned, StoreError>> + Send + Unpin + 'static,
{
    let follower = Follower {
        entries,
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
        follower.finished = !matches!(item, Ok(TailItem::Entry(_) | TailItem::Heartbeat));
        Some((item, follower))
    })
}

impl<S> Follower<S>
where
    S: Stream<Item = Result<Positioned, StoreError>> + Unpin,
{
    async fn next_item(&mut self) -> Result<TailItem, StoreError> {
        loop {
            tokio::select! {
                biased;
                () = self.shutdown.wait() => return Ok(TailItem::ShuttingDown),
                entry = self.entries.next() => {
                    let entry = entry.ok_or_else(|| StoreError::Unavailable("the feed ended".into()))??;
                    // The feed may start before the cursor (a reader ahead of the head waits
                    // for cursor + 1); never repeat what the reader already has.
                    if entry.position <= self.cursor {
                        continue;
                    }
                    self.cursor = entry.position;
                    return Ok(TailItem::Entry(entry));
                }
                () = tokio::time::sleep(self.idle) => return Ok(TailItem::Heartbeat),
            }
        }
    }
}
