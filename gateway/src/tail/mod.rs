//! Catch-up and live as one stream: entries after a cursor, in order, each once, in batches
//! of what is ready, with heartbeats while idle and a last item when the gateway shuts down.
//! Session tails and the lifecycle feed are both such streams.

use std::time::Duration;

use bytes::Bytes;
use futures::{FutureExt, Stream, StreamExt};

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
    /// The reader does not continue right after its cursor (a `gap` JSON object); first, if at all.
    Gap(Bytes),
    /// One to `batch_size` entries that were ready together, in order.
    Entries(Vec<Positioned>),
    /// Nothing happened for a ping interval: a chance to check the connection is alive.
    Heartbeat,
    /// The gateway is stopping; the reader should reconnect elsewhere with its cursor.
    ShuttingDown,
    /// The reader's token expired; it may reconnect with a fresh one.
    TokenExpired,
}

/// Where and how a reader follows a log.
pub struct Follow {
    /// Deliver entries after this position.
    pub cursor: u64,
    /// Announced before any entry.
    pub gap: Option<Bytes>,
    pub batch_size: usize,
    pub idle: Duration,
    /// When the reader's token expires, if it has one.
    pub expires_at: Option<tokio::time::Instant>,
    pub shutdown: Shutdown,
}

struct Follower<S> {
    entries: S,
    follow: Follow,
    finished: bool,
}

/// Follows `entries` (positioned at or before `cursor + 1`) and yields every entry after the
/// cursor. An error ends the stream: the reader resumes from its last position.
pub fn follow<S>(
    entries: S,
    follow: Follow,
) -> impl Stream<Item = Result<TailItem, StoreError>> + Send + 'static
where
    S: Stream<Item = Result<Positioned, StoreError>> + Send + Unpin + 'static,
{
    let mut follower = Follower {
        entries,
        follow,
        finished: false,
    };
    let gap = follower.follow.gap.take().map(|gap| Ok(TailItem::Gap(gap)));
    let items = futures::stream::unfold(follower, |mut follower| async move {
        if follower.finished {
            return None;
        }
        let item = follower.next_item().await;
        follower.finished = !matches!(item, Ok(TailItem::Entries(_) | TailItem::Heartbeat));
        Some((item, follower))
    });
    futures::stream::iter(gap).chain(items)
}

/// Resolves at `at`, or never.
async fn expiry(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl<S> Follower<S>
where
    S: Stream<Item = Result<Positioned, StoreError>> + Unpin,
{
    async fn next_item(&mut self) -> Result<TailItem, StoreError> {
        loop {
            tokio::select! {
                biased;
                () = self.follow.shutdown.wait() => return Ok(TailItem::ShuttingDown),
                () = expiry(self.follow.expires_at) => return Ok(TailItem::TokenExpired),
                entry = self.entries.next() => {
                    let Some(first) = self.accept(entry)? else { continue };
                    let mut batch = vec![first];
                    // Replay has many entries ready at once: take them without waiting.
                    while batch.len() < self.follow.batch_size {
                        let Some(ready) = self.entries.next().now_or_never() else { break };
                        if let Some(entry) = self.accept(ready)? {
                            batch.push(entry);
                        }
                    }
                    return Ok(TailItem::Entries(batch));
                }
                () = tokio::time::sleep(self.follow.idle) => return Ok(TailItem::Heartbeat),
            }
        }
    }

    /// The entry if it is new to the reader; the feed may start before the cursor (a reader
    /// ahead of the head waits for cursor + 1), and nothing is ever delivered twice.
    fn accept(
        &mut self,
        entry: Option<Result<Positioned, StoreError>>,
    ) -> Result<Option<Positioned>, StoreError> {
        let entry = entry.ok_or_else(|| StoreError::Unavailable("the feed ended".into()))??;
        if entry.position <= self.follow.cursor {
            return Ok(None);
        }
        self.follow.cursor = entry.position;
        Ok(Some(entry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(
        positions: &[u64],
    ) -> impl Stream<Item = Result<Positioned, StoreError>> + Send + Unpin + 'static {
        let items: Vec<_> = positions
            .iter()
            .map(|&position| {
                Ok(Positioned {
                    position,
                    json: Bytes::from(position.to_string()),
                })
            })
            .collect();
        futures::stream::iter(items).chain(futures::stream::pending())
    }

    fn follow_from(
        cursor: u64,
        batch_size: usize,
        gap: Option<&'static str>,
    ) -> (Follow, crate::shutdown::ShutdownTrigger) {
        let (trigger, shutdown) = Shutdown::new();
        let follow = Follow {
            cursor,
            gap: gap.map(|gap| Bytes::from_static(gap.as_bytes())),
            batch_size,
            idle: Duration::from_secs(3600),
            expires_at: None,
            shutdown,
        };
        (follow, trigger)
    }

    fn positions(item: &TailItem) -> Vec<u64> {
        match item {
            TailItem::Entries(entries) => entries.iter().map(|entry| entry.position).collect(),
            other => panic!("expected entries, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn ready_entries_are_batched_and_old_ones_skipped() {
        let (options, _trigger) = follow_from(2, 3, None);
        let mut items = Box::pin(follow(entries(&[1, 2, 3, 4, 5, 6, 7]), options));
        assert_eq!(
            positions(&items.next().await.unwrap().unwrap()),
            vec![3, 4, 5]
        );
        assert_eq!(positions(&items.next().await.unwrap().unwrap()), vec![6, 7]);
    }

    #[tokio::test]
    async fn the_gap_comes_first_and_shutdown_ends_the_stream() {
        let (options, trigger) = follow_from(0, 1, Some("{\"type\":\"gap\"}"));
        let mut items = Box::pin(follow(entries(&[1]), options));
        assert!(matches!(items.next().await, Some(Ok(TailItem::Gap(_)))));
        assert_eq!(positions(&items.next().await.unwrap().unwrap()), vec![1]);
        trigger.trigger();
        assert!(matches!(
            items.next().await,
            Some(Ok(TailItem::ShuttingDown))
        ));
        assert!(items.next().await.is_none());
    }
}
