//! One live feed per session per gateway, shared by every local reader of that session.
//!
//! A feed exists while its session has readers here: the first reader starts it, and it ends
//! when the last one leaves. NATS serves one subscription per watched session, however many
//! sockets watch it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OnceCell, broadcast};
use tracing::debug;

use super::model::SessionId;
use super::{Backoff, lock};
use crate::nats::{Head, LiveEvents, Store, StoreError, StoredEvent};

/// Events a reader may fall behind a feed before it re-reads from the stream instead.
const FEED_CAPACITY: usize = 1024;

/// A session's live events for one reader, from just after `last` on.
pub struct Subscription {
    pub events: broadcast::Receiver<Arc<StoredEvent>>,
    /// Every event up to this one was sent before the subscription began.
    pub last: Head,
}

struct Feed {
    sender: broadcast::Sender<Arc<StoredEvent>>,
    /// The newest event sent; kept under the same lock as the send, so a new subscriber
    /// knows exactly where its receiver starts.
    last: Mutex<Head>,
}

/// A feed being started, or running.
#[derive(Default)]
struct Slot {
    feed: OnceCell<Arc<Feed>>,
}

pub struct Fanout {
    store: Arc<Store>,
    slots: Arc<Mutex<HashMap<SessionId, Arc<Slot>>>>,
}

impl Fanout {
    pub fn new(store: Arc<Store>) -> Fanout {
        Fanout {
            store,
            slots: Arc::default(),
        }
    }

    /// Joins the session's feed, starting it if this is its first reader here.
    pub async fn subscribe(&self, id: &SessionId) -> Result<Subscription, StoreError> {
        loop {
            let slot = lock(&self.slots).entry(id.clone()).or_default().clone();
            let feed = slot
                .feed
                .get_or_try_init(|| self.start(id, slot.clone()))
                .await?
                .clone();
            let slots = lock(&self.slots);
            // The feed may have ended between its start and now; then start another.
            if is_current(&slots, id, &slot) {
                let last = lock(&feed.last);
                return Ok(Subscription {
                    events: feed.sender.subscribe(),
                    last: *last,
                });
            }
        }
    }

    async fn start(&self, id: &SessionId, slot: Arc<Slot>) -> Result<Arc<Feed>, StoreError> {
        let live = self.store.live(id).await;
        let live = match live {
            Ok(live) => live,
            Err(err) => {
                forget(&mut lock(&self.slots), id, &slot);
                return Err(err);
            }
        };
        let (sender, _) = broadcast::channel(FEED_CAPACITY);
        let feed = Arc::new(Feed {
            sender,
            last: Mutex::new(live.last()),
        });
        let running = Running {
            id: id.clone(),
            store: self.store.clone(),
            slots: self.slots.clone(),
            slot,
            feed: feed.clone(),
        };
        tokio::spawn(running.run(live));
        Ok(feed)
    }
}

/// A feed's task: reads the session's commits and hands each to every subscriber.
struct Running {
    id: SessionId,
    store: Arc<Store>,
    slots: Arc<Mutex<HashMap<SessionId, Arc<Slot>>>>,
    slot: Arc<Slot>,
    feed: Arc<Feed>,
}

impl Running {
    async fn run(self, mut live: LiveEvents) {
        let mut backoff = Backoff::default();
        let mut incarnations = self.store.incarnations();
        loop {
            tokio::select! {
                // The stream was created anew: readers must not go on from positions in the
                // old one.
                _ = incarnations.changed() => {
                    debug!(session.id = %self.id, "live feed of {} ended with its stream", self.id);
                    forget(&mut lock(&self.slots), &self.id, &self.slot);
                    return;
                }
                event = live.next(&self.store) => match event {
                    Ok(event) => {
                        backoff = Backoff::default();
                        let mut last = lock(&self.feed.last);
                        *last = Head { stream_seq: event.stream_seq, seq: event.seq };
                        // No receivers is not an error: the last one may be leaving.
                        let _ = self.feed.sender.send(Arc::new(event));
                    }
                    // A leader election or a reconnect: readers wait, and the feed goes on
                    // from where it was once the stream answers again.
                    Err(err) if err.is_transient() && !live.ended() => {
                        debug!(session.id = %self.id, "live feed of {} interrupted: {err}", self.id);
                        backoff.wait().await;
                    }
                    Err(err) => {
                        // Dropping the sender ends every reader's stream; they resume from
                        // their cursors on a fresh feed.
                        debug!(session.id = %self.id, "live feed of {} ended: {err}", self.id);
                        forget(&mut lock(&self.slots), &self.id, &self.slot);
                        return;
                    }
                },
                () = self.feed.sender.closed() => {
                    // Readers join under this lock, so none can join a feed that is ending.
                    let mut slots = lock(&self.slots);
                    if self.feed.sender.receiver_count() == 0 {
                        forget(&mut slots, &self.id, &self.slot);
                        return;
                    }
                }
            }
        }
    }
}

/// Forgets `slot` if it is still the session's.
fn forget(slots: &mut HashMap<SessionId, Arc<Slot>>, id: &SessionId, slot: &Arc<Slot>) {
    if is_current(slots, id, slot) {
        slots.remove(id);
    }
}

fn is_current(slots: &HashMap<SessionId, Arc<Slot>>, id: &SessionId, slot: &Arc<Slot>) -> bool {
    slots
        .get(id)
        .is_some_and(|current| Arc::ptr_eq(current, slot))
}
