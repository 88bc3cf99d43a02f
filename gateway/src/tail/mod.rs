//! Catch-up and live as one stream: entries after a cursor, in order, each once, in batches
//! of what is ready, with heartbeats while idle and a last item when the gateway shuts down.
//! Session tails and the lifecycle feed are both such streams.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{FutureExt, Stream, StreamExt};
use tokio::time::{Instant, Sleep};

use crate::nats::StoreError;
use crate::sessions::model::GapReason;
use crate::shutdown::Shutdown;

/// One entry of a log, as a reader receives it: its position (the cursor to resume after)
/// and its JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Positioned {
    pub position: u64,
    pub json: Bytes,
    /// The `traceparent` of the request that stored the entry, when it was traced.
    pub trace: Option<Arc<str>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TailItem {
    /// The reader does not continue right after its cursor: why, and the `gap` JSON object.
    Gap(GapReason, Bytes),
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
    /// Announced before any entry: why, and the `gap` JSON object.
    pub gap: Option<(GapReason, Bytes)>,
    /// Positions are consecutive (a session's seqs), so a jump means retention dropped
    /// entries the reader never got, and it is told with a `gap`. Lifecycle positions are
    /// sparse by nature.
    pub contiguous: bool,
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
    /// Armed once per idle period, not per entry: with a thousand readers on a session, a
    /// timer per reader per event costs more than the event.
    heartbeat: Pin<Box<Sleep>>,
    /// When the reader was last sent something.
    quiet_since: Instant,
    /// When the reader's token expires; no timer at all without one.
    expiry: Option<Pin<Box<Sleep>>>,
    /// Resolves when the gateway stops; made once, not per entry.
    stopping: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// An entry whose gap still has to be announced.
    before_gap: Option<Positioned>,
    /// An entry held back while the gap before it is announced.
    after_gap: Option<Positioned>,
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
    let quiet_since = Instant::now();
    let mut follower = Follower {
        heartbeat: Box::pin(tokio::time::sleep_until(quiet_since + follow.idle)),
        quiet_since,
        expiry: follow
            .expires_at
            .map(|at| Box::pin(tokio::time::sleep_until(at))),
        stopping: {
            let mut shutdown = follow.shutdown.clone();
            Box::pin(async move { shutdown.wait().await })
        },
        entries,
        follow,
        finished: false,
        before_gap: None,
        after_gap: None,
    };
    let gap = follower
        .follow
        .gap
        .take()
        .map(|(reason, gap)| Ok(TailItem::Gap(reason, gap)));
    let items = futures::stream::unfold(follower, |mut follower| async move {
        if follower.finished {
            return None;
        }
        let item = follower.next_item().await;
        follower.finished = !matches!(
            item,
            Ok(TailItem::Entries(_) | TailItem::Heartbeat | TailItem::Gap(..))
        );
        Some((item, follower))
    });
    futures::stream::iter(gap).chain(items)
}

impl<S> Follower<S>
where
    S: Stream<Item = Result<Positioned, StoreError>> + Unpin,
{
    async fn next_item(&mut self) -> Result<TailItem, StoreError> {
        if let Some(entry) = self.before_gap.take() {
            let gap = self.gap_before(&entry);
            self.after_gap = Some(entry);
            if let Some(gap) = gap {
                return Ok(TailItem::Gap(GapReason::CursorExpired, gap));
            }
        }
        if let Some(entry) = self.after_gap.take() {
            return self.batch_from(entry);
        }
        loop {
            tokio::select! {
                biased;
                () = &mut self.stopping => return Ok(TailItem::ShuttingDown),
                () = async {
                    if let Some(expiry) = self.expiry.as_mut() {
                        expiry.await;
                    }
                }, if self.expiry.is_some() => return Ok(TailItem::TokenExpired),
                entry = self.entries.next() => {
                    let Some(first) = self.accept(entry)? else { continue };
                    self.quiet_since = Instant::now();
                    if let Some(gap) = self.gap_before(&first) {
                        self.after_gap = Some(first);
                        return Ok(TailItem::Gap(GapReason::CursorExpired, gap));
                    }
                    return self.batch_from(first);
                }
                () = &mut self.heartbeat => {
                    let due = self.quiet_since + self.follow.idle;
                    if Instant::now() >= due {
                        self.quiet_since = Instant::now();
                        self.heartbeat.as_mut().reset(self.quiet_since + self.follow.idle);
                        return Ok(TailItem::Heartbeat);
                    }
                    self.heartbeat.as_mut().reset(due);
                }
            }
        }
    }

    /// `first` and what else is ready right away (replay has many), up to the batch size,
    /// stopping before a gap so it is announced in its place.
    fn batch_from(&mut self, first: Positioned) -> Result<TailItem, StoreError> {
        self.follow.cursor = first.position;
        let mut batch = vec![first];
        while batch.len() < self.follow.batch_size {
            let Some(ready) = self.entries.next().now_or_never() else {
                break;
            };
            let Some(entry) = self.accept(ready)? else {
                continue;
            };
            if self.gap_before(&entry).is_some() {
                self.before_gap = Some(entry);
                break;
            }
            self.follow.cursor = entry.position;
            batch.push(entry);
        }
        Ok(TailItem::Entries(batch))
    }

    /// The entry if it is new to the reader; the feed may start before the cursor (a reader
    /// ahead of the head waits for cursor + 1), and nothing is ever delivered twice.
    fn accept(
        &mut self,
        entry: Option<Result<Positioned, StoreError>>,
    ) -> Result<Option<Positioned>, StoreError> {
        let entry = entry.ok_or_else(|| StoreError::Unavailable("the feed ended".into()))??;
        Ok((entry.position > self.follow.cursor).then_some(entry))
    }

    /// A `cursor_expired` notice when entries between the cursor and `entry` are gone.
    fn gap_before(&self, entry: &Positioned) -> Option<Bytes> {
        let cursor = self.follow.cursor;
        if !self.follow.contiguous || entry.position <= cursor + 1 {
            return None;
        }
        let resume = entry.position - 1;
        let gap = serde_json::json!({
            "type": "gap", "reason": "cursor_expired", "from_cursor": cursor,
            "next_cursor": resume, "earliest_available_cursor": resume,
            "committed_cursor": entry.position,
        });
        Some(gap.to_string().into())
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
                    trace: None,
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
            gap: gap.map(|gap| {
                (
                    GapReason::ResumeInvalidated,
                    Bytes::from_static(gap.as_bytes()),
                )
            }),
            batch_size,
            contiguous: true,
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
    async fn a_jump_in_positions_is_announced_as_a_gap() {
        let (options, _trigger) = follow_from(0, 10, None);
        let mut items = Box::pin(follow(entries(&[1, 2, 6, 7]), options));
        assert_eq!(positions(&items.next().await.unwrap().unwrap()), vec![1, 2]);
        let Some(Ok(TailItem::Gap(GapReason::CursorExpired, gap))) = items.next().await else {
            panic!("expected a gap")
        };
        let gap: serde_json::Value = serde_json::from_slice(&gap).unwrap();
        assert_eq!(
            (gap["from_cursor"].as_u64(), gap["next_cursor"].as_u64()),
            (Some(2), Some(5))
        );
        assert_eq!(positions(&items.next().await.unwrap().unwrap()), vec![6, 7]);
    }

    #[tokio::test]
    async fn the_gap_comes_first_and_shutdown_ends_the_stream() {
        let (options, trigger) = follow_from(0, 1, Some("{\"type\":\"gap\"}"));
        let mut items = Box::pin(follow(entries(&[1]), options));
        assert!(matches!(items.next().await, Some(Ok(TailItem::Gap(..)))));
        assert_eq!(positions(&items.next().await.unwrap().unwrap()), vec![1]);
        trigger.trigger();
        assert!(matches!(
            items.next().await,
            Some(Ok(TailItem::ShuttingDown))
        ));
        assert!(items.next().await.is_none());
    }
}
