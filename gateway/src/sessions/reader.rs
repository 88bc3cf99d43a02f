//! One reader's events after its cursor: stored events from the stream up to where the
//! session's shared live feed took over, then the feed. A reader that falls too far behind
//! the feed goes back to the stream from where it stands, so it never misses an event.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::Instant;
use tracing::debug;

use super::Backoff;
use super::fanout::Fanout;
use super::model::SessionId;
use crate::nats::{EventFeed, Store, StoreError, StoredEvent};
use crate::tail::Positioned;

enum Phase {
    /// About to join the live feed (again).
    Joining,
    /// Reading stored events up to `until`, the stream sequence the feed starts after.
    Replaying {
        stored: Box<EventFeed>,
        until: u64,
        live: broadcast::Receiver<Arc<StoredEvent>>,
    },
    Live(broadcast::Receiver<Arc<StoredEvent>>),
    Ended,
}

/// How long a reader keeps starting over after storage errors (a leader election takes
/// seconds) before it gives up, and its client resumes from its cursor.
const REJOIN_PATIENCE: Duration = Duration::from_secs(30);

pub struct Reader {
    id: SessionId,
    store: Arc<Store>,
    fanout: Arc<Fanout>,
    /// The stream sequence the next event is at, or after.
    next_stream_seq: u64,
    phase: Phase,
    /// When the errors without an event in between began, and the wait before the next try.
    failing: Option<(Instant, Backoff)>,
    /// The store's incarnation the reader's position belongs to.
    incarnation: u64,
}

impl Reader {
    pub fn new(id: SessionId, store: Arc<Store>, fanout: Arc<Fanout>, start: u64) -> Reader {
        Reader {
            id,
            fanout,
            next_stream_seq: start,
            phase: Phase::Joining,
            failing: None,
            incarnation: store.incarnation(),
            store,
        }
    }

    /// The next event, in order and once; `None` after an error. Storage errors make it start
    /// over from where it stands, for up to `REJOIN_PATIENCE`.
    pub async fn next(&mut self) -> Option<Result<Positioned, StoreError>> {
        loop {
            let step = match std::mem::replace(&mut self.phase, Phase::Ended) {
                Phase::Ended => return None,
                Phase::Joining => self.join().await,
                Phase::Replaying {
                    mut stored,
                    until,
                    live,
                } => match stored.next().await {
                    Some(Ok(event)) => {
                        self.phase = if event.stream_seq >= until {
                            Phase::Live(live)
                        } else {
                            Phase::Replaying {
                                stored,
                                until,
                                live,
                            }
                        };
                        Ok(self.deliver(&event))
                    }
                    Some(Err(err)) => Err(err),
                    None => Err(StoreError::Unavailable("the stored feed ended".into())),
                },
                Phase::Live(mut live) => match live.recv().await {
                    Ok(event) => {
                        self.phase = Phase::Live(live);
                        Ok(self.deliver(&event))
                    }
                    // Too far behind the feed: back to the stream from here.
                    Err(RecvError::Lagged(_)) => {
                        self.phase = Phase::Joining;
                        Ok(None)
                    }
                    Err(RecvError::Closed) => {
                        Err(StoreError::Unavailable("the live feed ended".into()))
                    }
                },
            };
            match step {
                Ok(Some(entry)) => {
                    self.failing = None;
                    return Some(Ok(entry));
                }
                Ok(None) => {}
                Err(err) if err.is_transient() => {
                    let (since, backoff) = self
                        .failing
                        .get_or_insert_with(|| (Instant::now(), Backoff::default()));
                    if since.elapsed() >= REJOIN_PATIENCE {
                        return Some(Err(err));
                    }
                    debug!(session.id = %self.id, "reader of {} starts over: {err}", self.id);
                    backoff.wait().await;
                    self.phase = Phase::Joining;
                }
                Err(err) => return Some(Err(err)),
            }
        }
    }

    /// Subscribes to the live feed, then reads from the stream whatever the feed had already
    /// sent.
    async fn join(&mut self) -> Result<Option<Positioned>, StoreError> {
        // The reader's position is in a log that no longer exists; its client starts over.
        self.store.same_log_as(self.incarnation)?;
        let subscription = self.fanout.subscribe(&self.id).await?;
        self.phase = if subscription.last.stream_seq >= self.next_stream_seq {
            Phase::Replaying {
                stored: Box::new(self.store.follow(&self.id, self.next_stream_seq).await?),
                until: subscription.last.stream_seq,
                live: subscription.events,
            }
        } else {
            Phase::Live(subscription.events)
        };
        Ok(None)
    }

    /// The event as an entry, unless it was delivered already (a recreated ordered consumer,
    /// or the feed's copy of a replayed event).
    fn deliver(&mut self, event: &StoredEvent) -> Option<Positioned> {
        if event.stream_seq < self.next_stream_seq {
            return None;
        }
        self.next_stream_seq = event.stream_seq + 1;
        Some(Positioned {
            position: event.seq,
            json: event.body.clone(),
            trace: event.trace.clone(),
        })
    }
}
