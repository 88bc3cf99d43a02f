//! A session's write state read from the stream: a snapshot when one describes the log the
//! stream holds, then a catch-up to the stream leader's head; and the snapshots saved as the
//! session grows.

use tracing::{Instrument, debug};

use super::Committer;
use crate::nats::{Head, Store, StoreError, StoredEvent};
use crate::sessions::error::AppendError;
use crate::sessions::model::SessionId;
use crate::sessions::state::{SessionState, Snapshot};
use crate::telemetry::TRACE_TARGET;

/// A snapshot of the write state is saved each time a session passes a multiple of this many
/// events, so a gateway new to it reads at most this many events to catch up.
const SNAPSHOT_EVERY: u64 = 1000;

/// Snapshots larger than this (sessions with thousands of producers) are not saved; those
/// sessions are rebuilt from the stream.
const MAX_SNAPSHOT_BYTES: usize = 512 * 1024;

impl Committer {
    /// The session's state, read from the stream; fails for a session that does not exist.
    pub(super) async fn load(&self) -> Result<SessionState, AppendError> {
        if self.store.session(&self.id).await?.is_none() {
            return Err(AppendError::SessionNotFound(self.id.clone()));
        }
        let mut state = self.snapshot().await?.unwrap_or_default();
        catch_up(&self.store, &self.id, &mut state).await?;
        Ok(state)
    }

    /// The saved snapshot, if it describes a prefix of the log the stream holds now: its last
    /// event is stored where it says, and is the event it says. (What retention dropped since
    /// is forgotten by the catch-up that follows, as a fresh fold would never have learnt it.)
    async fn snapshot(&self) -> Result<Option<SessionState>, StoreError> {
        let Some(saved) = self.store.snapshot(&self.id).await? else {
            return Ok(None);
        };
        let Ok(snapshot) = serde_json::from_slice::<Snapshot>(&saved) else {
            return Ok(None);
        };
        let Some(last) = self.store.event_at(&self.id, snapshot.stream_seq()).await? else {
            return Ok(None);
        };
        if !snapshot.describes(&last.record()?) {
            return Ok(None);
        }
        Ok(Some(SessionState::restore(snapshot)))
    }

    /// Saves the state in the background when the last publish crossed a snapshot point.
    pub(super) fn snapshot_if_due(&self, state: &SessionState, before: u64) {
        if !snapshot_due(before, state.last_seq()) {
            return;
        }
        let Ok(snapshot) = serde_json::to_vec(&state.snapshot()) else {
            return;
        };
        if snapshot.len() > MAX_SNAPSHOT_BYTES {
            return;
        }
        let (store, id) = (self.store.clone(), self.id.clone());
        tokio::spawn(async move {
            if let Err(err) = store.save_snapshot(&id, snapshot.into()).await {
                debug!(session.id = %id, "could not save a snapshot of {id}: {err}");
            }
        });
    }
}

/// Whether a session that went from seq `before` to `after` passed a snapshot point.
fn snapshot_due(before: u64, after: u64) -> bool {
    after / SNAPSHOT_EVERY != before / SNAPSHOT_EVERY
}

/// Brings the state to the stream leader's head of the session: afterwards it is exactly the
/// fold of the log the stream holds now, or the catch-up fails.
pub(super) async fn catch_up(
    store: &Store,
    id: &SessionId,
    state: &mut SessionState,
) -> Result<(), AppendError> {
    let span = tracing::info_span!(target: TRACE_TARGET, "jetstream catch-up");
    follow_the_stream(store, id, state).instrument(span).await
}

async fn follow_the_stream(
    store: &Store,
    id: &SessionId,
    state: &mut SessionState,
) -> Result<(), AppendError> {
    let newest = store.newest_event(id).await?;
    let head = newest.as_ref().map(StoredEvent::head);
    // With nothing new, the newest event must be the state's own: a stream created anew can
    // hold another event at the same position.
    let same_log = match &newest {
        Some(event) if event.stream_seq == state.stream_seq() => state.ends_with(&event.record()?),
        _ => true,
    };
    if !same_log || !fold_up_to(store, id, state, head).await? {
        // The state describes a log that no longer exists: retention dropped events it never
        // saw, the stream was deleted and created again, or the session was deleted (then
        // there is nothing to fold). Fold the one that does.
        if store.session(id).await?.is_none() {
            return Err(AppendError::SessionNotFound(id.clone()));
        }
        *state = SessionState::default();
        if !fold_up_to(store, id, state, head).await? {
            return Err(AppendError::Inconsistent(format!(
                "the events of session {id} do not lead to its head"
            )));
        }
    }
    if store.drops_events()
        && let Some(first) = store.first(id).await?
    {
        state.forget_producers_before(first.seq);
    }
    Ok(())
}

/// Folds the stream's events past the state's position into it, up to `head`; false when they
/// do not continue the state or do not end at `head`.
async fn fold_up_to(
    store: &Store,
    id: &SessionId,
    state: &mut SessionState,
    head: Option<Head>,
) -> Result<bool, StoreError> {
    let Some(head) = head else {
        return Ok(state.stream_seq() == 0);
    };
    if head.stream_seq < state.stream_seq() {
        return Ok(false);
    }
    for event in store
        .events_between(id, state.stream_seq(), state.last_seq(), head)
        .await?
    {
        if state.apply(event.record()?).is_err() {
            return Ok(false);
        }
    }
    Ok(state.stream_seq() == head.stream_seq && state.last_seq() == head.seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_is_due_each_time_a_multiple_of_the_interval_is_passed() {
        assert!(!snapshot_due(0, SNAPSHOT_EVERY - 1));
        assert!(snapshot_due(0, SNAPSHOT_EVERY));
        // A group commit may jump past the point without landing on it.
        assert!(snapshot_due(SNAPSHOT_EVERY - 3, SNAPSHOT_EVERY + 5));
        assert!(!snapshot_due(SNAPSHOT_EVERY, 2 * SNAPSHOT_EVERY - 1));
    }
}
