//! Publishing a decided group to JetStream, on the condition that the stream is still at the
//! state it was decided on; a refused group is decided again on a state caught up with the
//! stream, and a streamed batch whose outcome is unknown is answered as such.
//! The file is long for its tests of the refusal rules, which are pure.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{Instrument, debug, warn};

use super::catch_up::catch_up;
use super::group::{
    BATCH_PAYS_FROM, Decided, Gathering, Stale, appended, decide_group, fold, requeue,
    skip_abandoned, take_appends,
};
use super::{Committer, Request};
use crate::metrics::Retry;
use crate::nats::{AppendFailure, OpenBatch, PendingAppend};
use crate::sessions::error::AppendError;
use crate::sessions::lock;
use crate::sessions::model::{self, Event, SessionId};
use crate::sessions::state::{Overlay, SessionState};
use crate::telemetry::TRACE_TARGET;

/// How long one group keeps re-deciding after lost races before giving up with a 503. A
/// bound in time, not in tries: a gateway pipelining into a session commits every
/// millisecond or so, and another gateway's appends to it may lose many races in a row
/// before getting through.
const MAX_CONTENTION: Duration = Duration::from_secs(10);

/// A streamed batch sends its appends to JetStream once this many have gathered.
const STAGE_CHUNK: usize = 16;

/// Why a group was not stored.
enum NotStored {
    /// JetStream refused it, or did not answer.
    Refused(AppendFailure),
    /// Its appends could not be built: the gateway broke a rule of its own.
    Unbuilt(AppendError),
}

impl From<AppendFailure> for NotStored {
    fn from(failure: AppendFailure) -> NotStored {
        NotStored::Refused(failure)
    }
}

impl From<AppendError> for NotStored {
    fn from(err: AppendError) -> NotStored {
        NotStored::Unbuilt(err)
    }
}

/// What a commit does next after JetStream refused its group.
#[derive(Debug, PartialEq, Eq)]
enum Refused {
    /// A group holds an event too large for NATS: what is left goes as single appends, so
    /// only the request too large is refused.
    Split,
    /// The request alone is too large for NATS: it is refused.
    TooLarge,
    /// The stream moved on, or holds this very decision: catch up and decide again.
    CatchUp,
}

impl Committer {
    /// Commits one atomic batch built while its requests arrive. Each single-event append is
    /// decided as it is taken off the queue and sent to JetStream at once (all but the newest,
    /// which may have to commit the batch), so JetStream prepares the batch while the callers
    /// just answered come back. The batch commits when the expected requests are in, after
    /// the patience, or when the next request needs more than an append decided on this
    /// provisional state; that one stays queued. A failed commit puts its requests back at the
    /// front of the queue, to be decided again on a state caught up with the stream.
    pub(super) async fn commit_streamed(
        &self,
        state: &mut SessionState,
        gathering: Gathering,
    ) -> Gathering {
        let deadline = Instant::now() + gathering.patience;
        let expected_stream_seq = state.stream_seq();
        let mut batch = match self.store.open_batch(&self.id).await {
            Ok(batch) => batch,
            Err(err) => {
                debug!(session.id = %self.id, "cannot batch appends to {}: {err}", self.id);
                return Gathering::default();
            }
        };
        let mut group: Vec<Decided> = Vec::new();
        let mut overlay = Overlay::new(state);
        let mut staging: Result<(), NotStored> = Ok(());
        loop {
            // Made before the queue is read, so an arrival in between still wakes it.
            let arrival = self.writer.arrivals.notified();
            let gathered = {
                let mut queue = lock(&self.writer.queue);
                take_appends(&mut queue.requests, &mut overlay, &mut group, gathering)
            };
            // The first append opens the batch at once, since JetStream's preparation is the
            // slow part; the rest go in chunks, which saves the NATS client a send each.
            let unstaged = group.len().saturating_sub(batch.staged() + 1);
            if staging.is_ok() && (batch.staged() == 0 || unstaged >= STAGE_CHUNK) {
                staging = stage_all_but_newest(&mut batch, &group, expected_stream_seq).await;
            }
            if gathered || staging.is_err() {
                break;
            }
            if tokio::time::timeout_at(deadline, arrival).await.is_err() {
                break;
            }
        }
        drop(overlay);
        if staging.is_ok() {
            staging = stage_all_but_newest(&mut batch, &group, expected_stream_seq).await;
        }
        let Some(newest) = group.last() else {
            return Gathering::default();
        };
        let committing = Instant::now();
        let span = commit_span(&group, group.len());
        let committed = async {
            staging?;
            let inserted_at = model::timestamp_now();
            let append = append_of(newest, expected_stream_seq, &inserted_at)?;
            // One request alone is cheaper as a single conditional append.
            let last_stream_seq = if batch.staged() == 0 {
                self.store.append(&self.id, &append).await?
            } else {
                batch.commit(&append).await?
            };
            Ok::<u64, NotStored>(last_stream_seq)
        }
        .instrument(span)
        .await;
        let unknown = match committed {
            Ok(last_stream_seq) => {
                let answered = group.len();
                let events = group.iter().flat_map(appended).count();
                self.metrics.committed(events, committing.elapsed());
                let waiting = self.committed(state, last_stream_seq, group);
                return Gathering::after(answered, waiting, committing.elapsed());
            }
            Err(NotStored::Refused(AppendFailure::Store(err))) => AppendError::from(err),
            Err(NotStored::Unbuilt(err)) => err,
            Err(NotStored::Refused(failure)) => {
                debug!(session.id = %self.id, "a streamed batch to {} failed: {failure}", self.id);
                requeue(group, &mut lock(&self.writer.queue).requests);
                let before = state.stream_seq();
                if let Err(err) = catch_up(&self.store, &self.id, state).await {
                    debug!(session.id = %self.id, "could not catch up with {}: {err}", self.id);
                }
                self.metrics
                    .retried(retry_reason(&failure, before, state.stream_seq()));
                return Gathering::default();
            }
        };
        // The batch may have been stored: decided again on a state caught up with it, its
        // requests would be answered `deduped` though each was sent once. Their outcome is
        // unknown; a retry is answered from the stream.
        debug!(session.id = %self.id, "a streamed batch to {} failed: {unknown}", self.id);
        for decided in group {
            let _ = decided.request.reply.send(Err(unknown.clone()));
        }
        if let Err(err) = catch_up(&self.store, &self.id, state).await {
            debug!(session.id = %self.id, "could not catch up with {}: {err}", self.id);
        }
        Gathering::default()
    }

    /// Answers every request of `pending`, and tells how many others were queued when the last
    /// of them were answered; or fails with the ones left unanswered.
    pub(super) async fn commit(
        &self,
        state: &mut Option<SessionState>,
        mut pending: VecDeque<Request>,
    ) -> Result<usize, (AppendError, VecDeque<Request>)> {
        let mut waiting = 0;
        let mut fresh = false;
        let state = match state {
            Some(state) => state,
            None => match self.load().await {
                Ok(loaded) => {
                    fresh = true;
                    state.insert(loaded)
                }
                Err(err) => return Err((err, pending)),
            },
        };
        let mut attempt = 0;
        let mut first_try = Instant::now();
        // Set when a batch failed for something other than a lost race: what is left goes as
        // single appends, each answered on its own.
        let mut singly = false;
        while !pending.is_empty() {
            // Grouping single appends into a batch needs one of the store's few places for
            // such batches; without one they go one by one.
            let slot = (!singly && pending.len() >= BATCH_PAYS_FROM)
                .then(|| self.store.batch_slot())
                .flatten();
            let group = match decide_group(state, &mut pending, fresh, singly || slot.is_none()) {
                Ok(group) => group,
                Err(Stale) => {
                    if let Err(err) = catch_up(&self.store, &self.id, state).await {
                        return Err((err, pending));
                    }
                    fresh = true;
                    continue;
                }
            };
            if group.is_empty() {
                continue;
            }
            let failure = match self.publish(state, &group).await {
                Ok(last_stream_seq) => {
                    fresh = false;
                    (attempt, first_try) = (0, Instant::now());
                    waiting = self.committed(state, last_stream_seq, group);
                    continue;
                }
                Err(NotStored::Unbuilt(err)) => {
                    requeue(group, &mut pending);
                    return Err((err, pending));
                }
                Err(NotStored::Refused(failure)) => failure,
            };
            let grouped = group.len() > 1;
            requeue(group, &mut pending);
            // Decided again: only for callers still waiting.
            skip_abandoned(&mut pending);
            attempt += 1;
            let before = state.stream_seq();
            let contended = Contention {
                attempts: attempt,
                lasted: first_try.elapsed(),
            };
            match after_refusal(&failure, grouped, contended, &self.id) {
                Err(err) => return Err((err, pending)),
                Ok(Refused::Split) => {
                    self.metrics.retried(Retry::TooLarge);
                    singly = true;
                    continue;
                }
                Ok(Refused::TooLarge) => {
                    if let Some(request) = pending.pop_front() {
                        let _ = request.reply.send(Err(AppendError::EventTooLarge));
                    }
                    continue;
                }
                Ok(Refused::CatchUp) => {}
            }
            if let Err(err) = catch_up(&self.store, &self.id, state).await {
                return Err((err, pending));
            }
            fresh = true;
            self.metrics
                .retried(retry_reason(&failure, before, state.stream_seq()));
            if state.stream_seq() == before {
                // Nothing new: not a lost race but a transient refusal (a replica behind, or
                // JetStream holding too many open batches on the stream).
                singly |= grouped;
                tokio::time::sleep(Duration::from_millis(u64::from(attempt))).await;
            }
        }
        Ok(waiting)
    }

    /// Publishes the group's appends on the condition that the stream is still at `state`;
    /// returns the last one's stream sequence.
    async fn publish(&self, state: &SessionState, group: &[Decided]) -> Result<u64, NotStored> {
        let inserted_at = model::timestamp_now();
        let mut appends = Vec::new();
        for decided in group {
            for append in appends_of(decided, state.stream_seq(), &inserted_at) {
                appends.push(append?);
            }
        }
        let sending = Instant::now();
        let span = commit_span(group, appends.len());
        let last_stream_seq = match appends.as_slice() {
            // A duplicate means this very decision was stored before (a retry after a
            // timeout): the catch-up that follows finds it and answers from it.
            [single] => self.store.append(&self.id, single).instrument(span).await?,
            batch => {
                self.store
                    .append_batch(&self.id, batch)
                    .instrument(span)
                    .await?
            }
        };
        let count = appends.len();
        self.metrics.committed(count, sending.elapsed());
        debug!(session.id = %self.id, events = count, "appended {count} events to session {}", self.id);
        Ok(last_stream_seq)
    }

    /// Folds a group just stored (its last append at `last_stream_seq`) into the state and
    /// answers its requests; tells how many others are queued by then.
    fn committed(
        &self,
        state: &mut SessionState,
        last_stream_seq: u64,
        group: Vec<Decided>,
    ) -> usize {
        let before = state.last_seq();
        match fold(state, last_stream_seq, &group) {
            Ok(()) => self.snapshot_if_due(state, before),
            Err(err) => {
                // Cannot happen while seqs are decided on this state; if it does, the next
                // catch-up folds the stream from its start instead of trusting this state.
                warn!(session.id = %self.id, "the state of session {} is reset: {err}", self.id);
                *state = SessionState::default();
            }
        }
        let waiting = lock(&self.writer.queue).requests.len();
        for decided in group {
            let _ = decided.request.reply.send(Ok(decided.answers));
        }
        waiting
    }
}

/// How long one group has been refused.
#[derive(Debug, Clone, Copy)]
struct Contention {
    attempts: u32,
    /// Since its first try.
    lasted: Duration,
}

/// What a commit does after JetStream refused its group (`grouped`: of several requests), or
/// the error that answers what is left of it.
fn after_refusal(
    failure: &AppendFailure,
    grouped: bool,
    contended: Contention,
    id: &SessionId,
) -> Result<Refused, AppendError> {
    match failure {
        AppendFailure::TooLarge if grouped => Ok(Refused::Split),
        AppendFailure::TooLarge => Ok(Refused::TooLarge),
        AppendFailure::Stale | AppendFailure::Duplicate { .. }
            if contended.lasted < MAX_CONTENTION =>
        {
            Ok(Refused::CatchUp)
        }
        AppendFailure::Stale | AppendFailure::Duplicate { .. } => Err(AppendError::Contended {
            id: id.clone(),
            attempts: contended.attempts,
        }),
        AppendFailure::Store(err) => Err(err.clone().into()),
    }
}

/// Why a commit refused with `failure` is decided again, given the state's stream sequence
/// before and after the catch-up that followed.
fn retry_reason(failure: &AppendFailure, before: u64, after: u64) -> Retry {
    match failure {
        AppendFailure::TooLarge => Retry::TooLarge,
        AppendFailure::Duplicate { .. } => Retry::Timeout,
        AppendFailure::Stale | AppendFailure::Store(_) if after != before => Retry::LostRace,
        AppendFailure::Stale | AppendFailure::Store(_) => Retry::Transient,
    }
}

/// The span of one JetStream commit: a child of the group's first request, following from
/// the others.
fn commit_span(group: &[Decided], events: usize) -> tracing::Span {
    let Some((first, others)) = group.split_first() else {
        return tracing::Span::none();
    };
    let span = tracing::info_span!(
        target: TRACE_TARGET,
        parent: &first.request.span,
        "jetstream commit",
        events
    );
    for decided in others {
        span.follows_from(&decided.request.span);
    }
    span
}

/// Sends the group's decided appends to the batch, all but the newest (it may commit the
/// batch), each stamped as it is sent.
async fn stage_all_but_newest(
    batch: &mut OpenBatch,
    group: &[Decided],
    expected_stream_seq: u64,
) -> Result<(), NotStored> {
    let inserted_at = model::timestamp_now();
    while batch.staged() + 1 < group.len() {
        let append = append_of(&group[batch.staged()], expected_stream_seq, &inserted_at)?;
        batch.stage(&append).await?;
    }
    Ok(())
}

/// The appends a decided request publishes, as decided on the state at `expected_stream_seq`.
fn appends_of<'a>(
    decided: &'a Decided,
    expected_stream_seq: u64,
    inserted_at: &'a str,
) -> impl Iterator<Item = Result<PendingAppend<'a>, AppendError>> {
    appended(decided).map(move |(event, hash, answer)| {
        let body = serde_json::to_vec(&Event::new(answer.seq, &event.content, inserted_at))
            .map_err(|err| AppendError::Inconsistent(format!("an event is not JSON: {err}")))?;
        Ok(PendingAppend {
            seq: answer.seq,
            expected_stream_seq,
            content: &event.content,
            hash,
            body: body.into(),
            trace: decided.request.trace.as_deref(),
        })
    })
}

/// The one append of a single-event request decided to append.
fn append_of<'a>(
    decided: &'a Decided,
    expected_stream_seq: u64,
    inserted_at: &'a str,
) -> Result<PendingAppend<'a>, AppendError> {
    appends_of(decided, expected_stream_seq, inserted_at)
        .next()
        .unwrap_or_else(|| {
            Err(AppendError::Inconsistent(
                "a streamed request appends nothing".into(),
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(failure: AppendFailure, grouped: bool, lasted: Duration) -> Result<Refused, String> {
        let id = SessionId::parse("ses_a").unwrap();
        let contended = Contention {
            attempts: 40,
            lasted,
        };
        after_refusal(&failure, grouped, contended, &id).map_err(|err| err.to_string())
    }

    #[test]
    fn an_event_too_large_splits_its_group_and_then_fails_alone() {
        assert_eq!(
            refused(AppendFailure::TooLarge, true, Duration::ZERO),
            Ok(Refused::Split)
        );
        assert_eq!(
            refused(AppendFailure::TooLarge, false, Duration::ZERO),
            Ok(Refused::TooLarge)
        );
    }

    #[test]
    fn a_lost_race_is_decided_again_until_the_contention_lasted_too_long() {
        let duplicate = || AppendFailure::Duplicate { stream_seq: 7 };
        let almost = MAX_CONTENTION - Duration::from_millis(1);
        for lasted in [Duration::ZERO, almost] {
            assert_eq!(
                refused(AppendFailure::Stale, true, lasted),
                Ok(Refused::CatchUp)
            );
            assert_eq!(refused(duplicate(), false, lasted), Ok(Refused::CatchUp));
        }
        let contended = "session `ses_a` kept changing during 40 attempts";
        assert_eq!(
            refused(AppendFailure::Stale, false, MAX_CONTENTION),
            Err(contended.to_owned())
        );
        assert_eq!(
            refused(duplicate(), true, MAX_CONTENTION),
            Err(contended.to_owned())
        );
    }

    #[test]
    fn a_retry_is_a_lost_race_only_when_the_catch_up_found_something_new() {
        assert_eq!(retry_reason(&AppendFailure::Stale, 4, 9), Retry::LostRace);
        assert_eq!(retry_reason(&AppendFailure::Stale, 4, 4), Retry::Transient);
        let duplicate = AppendFailure::Duplicate { stream_seq: 9 };
        assert_eq!(retry_reason(&duplicate, 4, 9), Retry::Timeout);
        assert_eq!(
            retry_reason(&AppendFailure::TooLarge, 4, 4),
            Retry::TooLarge
        );
    }
}
