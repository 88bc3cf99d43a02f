//! The bounded queue between a live stream's producer and its reader's connection: items go
//! in as frames while there is room, and a reader that leaves it full too long is cut off.

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;

use super::gap_reason;
use crate::metrics::{Disconnect, LiveStream};
use crate::nats::StoreError;
use crate::tail::TailItem;
use crate::telemetry;

/// What one tail item becomes on the wire (each frame with the number of events it carries),
/// and whether it is the last.
pub(super) struct Frames<F> {
    pub(super) frames: Vec<(F, usize)>,
    pub(super) last: bool,
}

impl<F> Frames<F> {
    pub(super) fn one(frame: F, last: bool) -> Frames<F> {
        Frames {
            frames: vec![(frame, 0)],
            last,
        }
    }
}

/// What the queue asks a transport to frame: the stream's next item, or the news that the
/// reader was too slow.
pub(super) enum Outcome {
    Item(Result<TailItem, StoreError>),
    TooSlow,
}

/// Moves items into the reader's queue until the stream ends, waiting while it is full. A reader
/// that leaves it full for `stall_timeout` is too slow: the last frame tells it so. A normal
/// frame needs two free slots, so the slot for that last frame is always there.
pub(super) async fn produce<S, F>(
    items: S,
    queue: mpsc::Sender<(F, usize)>,
    stall_timeout: std::time::Duration,
    render: impl Fn(Outcome) -> Frames<F>,
    stream: &LiveStream,
) where
    S: Stream<Item = Result<TailItem, StoreError>>,
{
    let mut items = std::pin::pin!(items);
    loop {
        // A reader that is gone frees its place at once, not at the next item.
        let item = tokio::select! {
            item = items.next() => item,
            () = queue.closed() => return,
        };
        let Some(item) = item else { return };
        match &item {
            Ok(TailItem::Gap(reason, _)) => stream.gap(gap_reason(*reason)),
            Ok(TailItem::TokenExpired) => stream.ends(Disconnect::TokenExpired),
            Ok(TailItem::ShuttingDown) => stream.ends(Disconnect::Shutdown),
            Err(_) => stream.ends(Disconnect::StorageError),
            Ok(TailItem::Entries(entries)) => {
                for entry in entries {
                    // Closed at once: what it records is the hand-over and its link.
                    drop(telemetry::delivery_span(entry.trace.as_deref()));
                }
            }
            Ok(TailItem::Heartbeat) => {}
        }
        let rendered = render(Outcome::Item(item));
        for frame in rendered.frames {
            // A queue with room takes the frame at once, without arming the stall timer.
            let reserved = match queue.try_reserve_many(2) {
                Ok(permits) => Ok(Ok(permits)),
                Err(mpsc::error::TrySendError::Closed(())) => return,
                Err(mpsc::error::TrySendError::Full(())) => {
                    tokio::time::timeout(stall_timeout, queue.reserve_many(2)).await
                }
            };
            match reserved {
                Ok(Ok(mut permits)) => {
                    if let Some(permit) = permits.next() {
                        permit.send(frame);
                    }
                }
                Ok(Err(_)) => return, // The reader is gone.
                Err(_) => {
                    stream.ends(Disconnect::SlowReader);
                    for overflow in render(Outcome::TooSlow).frames {
                        let _ = queue.try_send(overflow);
                    }
                    return;
                }
            }
        }
        if rendered.last {
            return;
        }
    }
}
