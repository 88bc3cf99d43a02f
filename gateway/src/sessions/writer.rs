//! One session's appends: requests queue up, and a single committer per session and gateway
//! decides and publishes them in order. While one publish is in flight the next requests
//! gather, and the committer publishes them together as one atomic JetStream batch (a group
//! commit), so a hot session is not limited to one round trip per event. Once batching, the
//! committer opens the next batch at once and sends each request to it as it arrives, until
//! the callers it just answered are back (or for at most as long as its last commit took):
//! they share one batch instead of needing two, and JetStream prepares the batch meanwhile.
//!
//! Each request is still decided exactly as if it were alone: in queue order, on the state
//! the requests before it leave. Only appends are decided on that provisional state; a
//! dedupe or a rejection is answered only from a state just read from the stream.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use tracing::{Instrument, debug, warn};

use super::Appended;
use super::error::AppendError;
use super::lock;
use super::model::{self, ContentHash, Event, EventRecord, NewEvent, SessionId};
use super::state::{Decision, Discontinuity, Overlay, Rejection, SessionState, Snapshot};
use crate::metrics::{Metrics, Retry};
use crate::nats::{AppendFailure, Head, OpenBatch, PendingAppend, Store, StoreError, StoredEvent};
use crate::telemetry::{self, TRACE_TARGET};

/// How many times one group re-decides after losing a race before giving up with a 503.
const MAX_APPEND_ATTEMPTS: u32 = 32;

/// The most single appends one group commit carries.
const MAX_GROUP: usize = 256;

/// An atomic batch costs JetStream about as much as this many single conditional appends
/// (~2 ms against ~0.1 ms here: a single-replica file stream stages every batch in a file store
/// of its own, created, synced and deleted before the commit is acknowledged), so fewer queued
/// requests are published one by one.
const BATCH_PAYS_FROM: usize = 16;

/// A streamed batch sends its appends to JetStream once this many have gathered.
const STAGE_CHUNK: usize = 16;

/// However slow the last commit, a round waits no longer than this for requests to gather.
const MAX_PATIENCE: Duration = Duration::from_millis(5);

/// A snapshot of the write state is saved each time a session passes a multiple of this many
/// events, so a gateway new to it reads at most this many events to catch up.
const SNAPSHOT_EVERY: u64 = 1000;

/// Snapshots larger than this (sessions with thousands of producers) are not saved; those
/// sessions are rebuilt from the stream.
const MAX_SNAPSHOT_BYTES: usize = 512 * 1024;

/// One request: its events are appended together or not at all.
struct Request {
    events: Vec<NewEvent>,
    hashes: Vec<ContentHash>,
    reply: oneshot::Sender<Result<Vec<Appended>, AppendError>>,
    /// The caller's span: commits of the request are its children.
    span: tracing::Span,
    /// The caller's `traceparent`, stored with each event, when it is traced.
    trace: Option<String>,
}

#[derive(Default)]
struct Queue {
    requests: VecDeque<Request>,
    /// Whether a committer task is draining the queue.
    draining: bool,
}

/// A session's queue and cached state; the state is `None` until first read from the stream.
#[derive(Default)]
pub struct Writer {
    queue: Mutex<Queue>,
    /// Told of each request queued while a committer drains.
    arrivals: Notify,
    state: tokio::sync::Mutex<Option<SessionState>>,
}

impl Writer {
    /// Queues `events` as one request and waits for its answer.
    ///
    /// A single event that finds its session idle commits itself, in its own task, which saves
    /// two task hand-offs on the common path. It only ever commits itself: if others queued in
    /// the meantime, or once it is answered (or its caller goes away), the queue goes to a
    /// committer task of its own, so no request depends on another's caller.
    pub async fn append(
        self: &Arc<Self>,
        store: &Arc<Store>,
        metrics: &Arc<Metrics>,
        id: &SessionId,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Appended>, AppendError> {
        let hashes = events
            .iter()
            .map(|event| ContentHash::of(&event.content))
            .collect();
        let (reply, answer) = oneshot::channel();
        let span = tracing::Span::current();
        let trace = telemetry::traceparent(&span);
        let start = {
            let mut queue = lock(&self.queue);
            queue.requests.push_back(Request {
                events,
                hashes,
                reply,
                span,
                trace,
            });
            !std::mem::replace(&mut queue.draining, true)
        };
        if start {
            let handoff = Handoff(Some(Committer {
                writer: self.clone(),
                store: store.clone(),
                metrics: metrics.clone(),
                id: id.clone(),
            }));
            if let Some(committer) = &handoff.0 {
                committer.round(Alone::Required, Gathering::default()).await;
            }
        } else {
            self.arrivals.notify_one();
        }
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable("the append was abandoned".into()).into())
        })
    }
}

struct Committer {
    writer: Arc<Writer>,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    id: SessionId,
}

/// A request decided into the group about to be published.
struct Decided {
    request: Request,
    /// Each event's answer; appends also get a slot in the publish.
    answers: Vec<Appended>,
}

/// Whether a round may commit other callers' requests too.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Alone {
    /// The caller commits in its own task: only its own single event, so that its going away
    /// cannot abandon anyone else's request, nor an open batch.
    Required,
    NotRequired,
}

/// What a round tells the next: how many requests to wait for, and for how long at most.
#[derive(Clone, Copy, Default)]
struct Gathering {
    expected: usize,
    patience: Duration,
}

impl Gathering {
    /// After a round answered `answered` requests while `waiting` others were queued, with a
    /// commit that began at `committing`: the callers just answered usually append again at
    /// once, and waiting for them costs at most what a commit costs.
    fn after(answered: usize, waiting: usize, committing: Instant) -> Gathering {
        Gathering {
            expected: (answered + waiting).min(MAX_GROUP),
            patience: committing.elapsed().min(MAX_PATIENCE),
        }
    }
}

/// Fails the queued requests if their committer panics: a bug then answers them with an
/// error instead of leaving them, and every later request to the session, waiting forever.
struct PanicGuard<'a>(&'a Writer);

impl Drop for PanicGuard<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        // The cached state may be half-updated: the next committer reads it again.
        if let Ok(mut state) = self.0.state.try_lock() {
            *state = None;
        }
        let mut queue = lock(&self.0.queue);
        queue.draining = false;
        for request in queue.requests.drain(..) {
            let err = StoreError::Corrupt("the session's committer failed".into());
            let _ = request.reply.send(Err(err.into()));
        }
    }
}

/// Hands the queue to a committer task when dropped, unless it is empty.
struct Handoff(Option<Committer>);

impl Drop for Handoff {
    fn drop(&mut self) {
        let Some(committer) = self.0.take() else {
            return;
        };
        let mut queue = lock(&committer.writer.queue);
        if queue.requests.is_empty() {
            queue.draining = false;
        } else {
            drop(queue);
            tokio::spawn(committer.drain());
        }
    }
}

impl Committer {
    async fn drain(self) {
        let _guard = PanicGuard(&self.writer);
        let mut gathering = Gathering::default();
        while let Some(next) = self.round(Alone::NotRequired, gathering).await {
            gathering = next;
        }
    }

    /// Commits the next group; `None` when the queue was empty, and is then no longer drained.
    /// After a round that answered enough requests for an atomic batch, the next batch is
    /// streamed as its requests come back. A round that must commit alone commits nothing if
    /// others queued too: the hand-off that follows gives the whole queue to a committer task.
    async fn round(&self, alone: Alone, gathering: Gathering) -> Option<Gathering> {
        let mut state = self.writer.state.lock().await;
        if alone == Alone::NotRequired
            && gathering.expected >= BATCH_PAYS_FROM
            && let Some(state) = state.as_mut()
        {
            return Some(self.commit_streamed(state, gathering).await);
        }
        let pending = {
            let mut queue = lock(&self.writer.queue);
            if queue.requests.is_empty() {
                queue.draining = false;
                return None;
            }
            // A batch goes to the committer task too: a caller going away halfway through
            // sending one would leave it open on the stream until JetStream times it out.
            let batch = queue
                .requests
                .front()
                .is_some_and(|request| request.events.len() > 1);
            if alone == Alone::Required && (queue.requests.len() > 1 || batch) {
                return Some(Gathering::default());
            }
            take_group(&mut queue.requests)
        };
        let answered = pending.len();
        let started = Instant::now();
        // A group's catch-ups and commits are traced under its first request.
        let span = pending
            .front()
            .map_or_else(tracing::Span::none, |request| request.span.clone());
        match self.commit(&mut state, pending).instrument(span).await {
            Ok(waiting) => Some(Gathering::after(answered, waiting, started)),
            Err((err, mut pending)) => {
                // NATS did not answer: what queued meanwhile would only wait as long again.
                if let AppendError::Store(_) = err {
                    pending.extend(lock(&self.writer.queue).requests.drain(..));
                }
                for request in pending {
                    let _ = request.reply.send(Err(err.clone()));
                }
                Some(Gathering::default())
            }
        }
    }

    /// Commits one atomic batch built while its requests arrive. Each single-event append is
    /// decided as it is taken off the queue and sent to JetStream at once (all but the newest,
    /// which may have to commit the batch), so JetStream prepares the batch while the callers
    /// just answered come back. The batch commits when the expected requests are in, after
    /// the patience, or when the next request needs more than an append decided on this
    /// provisional state; that one stays queued. A failed commit puts its requests back at the
    /// front of the queue, to be decided again on a state caught up with the stream.
    async fn commit_streamed(&self, state: &mut SessionState, gathering: Gathering) -> Gathering {
        let deadline = Instant::now() + gathering.patience;
        let expected_stream_seq = state.stream_seq();
        let mut batch = match self.store.open_batch(&self.id) {
            Ok(batch) => batch,
            Err(err) => {
                debug!(session.id = %self.id, "cannot batch appends to {}: {err}", self.id);
                return Gathering::default();
            }
        };
        let mut group: Vec<Decided> = Vec::new();
        let mut overlay = Overlay::new(state);
        let mut staging: Result<(), AppendFailure> = Ok(());
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
            match staging {
                Err(failure) => Err(failure),
                Ok(()) => match append_of(newest, expected_stream_seq, &model::timestamp_now()) {
                    Err(err) => Err(err.into()),
                    // One request alone is cheaper as a single conditional append.
                    Ok(append) if batch.staged() == 0 => self.store.append(&self.id, &append).await,
                    Ok(append) => batch.commit(&append).await,
                },
            }
        }
        .instrument(span)
        .await;
        match committed {
            Ok(last_stream_seq) => {
                let answered = group.len();
                let events = group.iter().flat_map(appended).count();
                self.metrics.committed(events, committing.elapsed());
                let waiting = self.committed(state, last_stream_seq, group);
                Gathering::after(answered, waiting, committing)
            }
            // The batch may have been stored: decided again on a state caught up with it, its
            // requests would be answered `deduped` though each was sent once. Their outcome
            // is unknown; a retry is answered from the stream.
            Err(AppendFailure::Store(err)) => {
                debug!(session.id = %self.id, "a streamed batch to {} failed: {err}", self.id);
                for decided in group {
                    let _ = decided.request.reply.send(Err(err.clone().into()));
                }
                if let Err(err) = catch_up(&self.store, &self.id, state).await {
                    debug!(session.id = %self.id, "could not catch up with {}: {err}", self.id);
                }
                Gathering::default()
            }
            Err(failure) => {
                debug!(session.id = %self.id, "a streamed batch to {} failed: {failure}", self.id);
                requeue(group, &mut lock(&self.writer.queue).requests);
                let before = state.stream_seq();
                if let Err(err) = catch_up(&self.store, &self.id, state).await {
                    debug!(session.id = %self.id, "could not catch up with {}: {err}", self.id);
                }
                self.metrics
                    .retried(retry_reason(&failure, before, state.stream_seq()));
                Gathering::default()
            }
        }
    }

    /// Answers every request of `pending`, and tells how many others were queued when the last
    /// of them were answered; or fails with the ones left unanswered.
    async fn commit(
        &self,
        state: &mut Option<SessionState>,
        mut pending: VecDeque<Request>,
    ) -> Result<usize, (AppendError, VecDeque<Request>)> {
        let mut waiting = 0;
        let mut fresh = false;
        if state.is_none() {
            match self.load().await {
                Ok(loaded) => {
                    *state = Some(loaded);
                    fresh = true;
                }
                Err(err) => return Err((err, pending)),
            }
        }
        let Some(state) = state.as_mut() else {
            return Err((
                StoreError::Corrupt("no session state".into()).into(),
                pending,
            ));
        };
        let mut attempt = 0;
        // Set when a batch failed for something other than a lost race: what is left goes as
        // single appends, each answered on its own.
        let mut singly = false;
        while !pending.is_empty() {
            let group = match self.decide(state, &mut pending, fresh, singly) {
                Ok(group) => group,
                Err(Stale) => {
                    if let Err(err) = catch_up(&self.store, &self.id, state).await {
                        return Err((err.into(), pending));
                    }
                    fresh = true;
                    continue;
                }
            };
            if group.is_empty() {
                continue;
            }
            match self.publish(state, &group).await {
                Ok(last_stream_seq) => {
                    fresh = false;
                    waiting = self.committed(state, last_stream_seq, group);
                }
                Err(failure) => {
                    let grouped = group.len() > 1;
                    requeue(group, &mut pending);
                    attempt += 1;
                    let before = state.stream_seq();
                    match &failure {
                        AppendFailure::TooLarge if grouped => {
                            // Only the request too large for NATS is refused.
                            self.metrics.retried(Retry::TooLarge);
                            singly = true;
                            continue;
                        }
                        AppendFailure::TooLarge => {
                            if let Some(request) = pending.pop_front() {
                                let _ = request.reply.send(Err(AppendError::EventTooLarge));
                            }
                            continue;
                        }
                        AppendFailure::Stale | AppendFailure::Duplicate { .. }
                            if attempt < MAX_APPEND_ATTEMPTS => {}
                        AppendFailure::Stale | AppendFailure::Duplicate { .. } => {
                            let err = StoreError::Unavailable(format!(
                                "session {} kept changing during {MAX_APPEND_ATTEMPTS} attempts",
                                self.id
                            ));
                            return Err((err.into(), pending));
                        }
                        AppendFailure::Store(err) => return Err((err.clone().into(), pending)),
                    }
                    if let Err(err) = catch_up(&self.store, &self.id, state).await {
                        return Err((err.into(), pending));
                    }
                    fresh = true;
                    self.metrics
                        .retried(retry_reason(&failure, before, state.stream_seq()));
                    if state.stream_seq() == before {
                        // Nothing new: not a lost race but a transient refusal (a replica
                        // behind, or JetStream holding too many open batches on the stream).
                        singly |= grouped;
                        tokio::time::sleep(Duration::from_millis(u64::from(attempt))).await;
                    }
                }
            }
        }
        Ok(waiting)
    }

    /// The session's state, read from the stream; fails for a session that does not exist.
    async fn load(&self) -> Result<SessionState, AppendError> {
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
    fn snapshot_if_due(&self, state: &SessionState, before: u64) {
        if state.last_seq() / SNAPSHOT_EVERY == before / SNAPSHOT_EVERY {
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

    /// Takes requests off the front of `pending` into one group to publish (one request only
    /// when `singly`), deciding each on the state the ones before it leave. Requests that need
    /// no publish (a dedupe, a rejection) are answered here, but only from a fresh state and
    /// ahead of any append.
    fn decide(
        &self,
        state: &SessionState,
        pending: &mut VecDeque<Request>,
        fresh: bool,
        singly: bool,
    ) -> Result<Vec<Decided>, Stale> {
        let mut overlay = Overlay::new(state);
        let mut group: Vec<Decided> = Vec::new();
        let limit = if pending.len() >= BATCH_PAYS_FROM && !singly {
            MAX_GROUP
        } else {
            1
        };
        while let Some(request) = pending.front() {
            // Decided straight on the overlay. A request that is not taken either ends the
            // group or is its first, and then the overlay goes back to the committed state.
            let Verdict {
                mut answers,
                rejection,
                appends_only,
            } = decide_request(&mut overlay, request);
            if !appends_only {
                if !group.is_empty() {
                    break;
                }
                if !fresh {
                    return Err(Stale);
                }
            }
            let Some(request) = pending.pop_front() else {
                break;
            };
            if let Some(reason) = rejection {
                overlay = Overlay::new(state);
                let _ = request.reply.send(Err(reason.into()));
                continue;
            }
            let last_seq = overlay.last_seq();
            for answer in &mut answers {
                answer.last_seq = last_seq;
            }
            if answers.iter().all(|answer| answer.deduped) {
                let _ = request.reply.send(Ok(answers));
                continue;
            }
            let alone = request.events.len() > 1;
            group.push(Decided { request, answers });
            if alone || group.len() >= limit {
                break;
            }
        }
        Ok(group)
    }

    /// Publishes the group's appends on the condition that the stream is still at `state`;
    /// returns the last one's stream sequence.
    async fn publish(&self, state: &SessionState, group: &[Decided]) -> Result<u64, AppendFailure> {
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

/// Puts a group that was not stored back at the front of `queue`, in order, to be decided
/// again.
fn requeue(group: Vec<Decided>, queue: &mut VecDeque<Request>) {
    for decided in group.into_iter().rev() {
        queue.push_front(decided.request);
    }
}

/// The events of a decided request that append (its dedupes publish nothing), with their
/// hashes and answers.
fn appended(decided: &Decided) -> impl Iterator<Item = (&NewEvent, &ContentHash, &Appended)> {
    let request = &decided.request;
    request
        .events
        .iter()
        .zip(&request.hashes)
        .zip(&decided.answers)
        .filter(|(_, answer)| !answer.deduped)
        .map(|((event, hash), answer)| (event, hash, answer))
}

/// Sends the group's decided appends to the batch, all but the newest (it may commit the
/// batch), each stamped as it is sent.
async fn stage_all_but_newest(
    batch: &mut OpenBatch,
    group: &[Decided],
    expected_stream_seq: u64,
) -> Result<(), AppendFailure> {
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
) -> impl Iterator<Item = Result<PendingAppend<'a>, StoreError>> {
    appended(decided).map(move |(event, hash, answer)| {
        let body = serde_json::to_vec(&Event::new(answer.seq, &event.content, inserted_at))
            .map_err(|err| StoreError::Corrupt(err.to_string()))?;
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
) -> Result<PendingAppend<'a>, StoreError> {
    appends_of(decided, expected_stream_seq, inserted_at)
        .next()
        .unwrap_or_else(|| {
            Err(StoreError::Corrupt(
                "a streamed request appends nothing".into(),
            ))
        })
}

/// Folds the group's appends (not its dedupes), just stored with the last at
/// `last_stream_seq`, into the state: a batch is stored at consecutive stream sequences.
fn fold(
    state: &mut SessionState,
    last_stream_seq: u64,
    group: &[Decided],
) -> Result<(), Discontinuity> {
    let stored = || group.iter().flat_map(appended);
    let first_stream_seq = (last_stream_seq + 1).saturating_sub(stored().count() as u64);
    for (offset, (event, hash, answer)) in (0u64..).zip(stored()) {
        state.apply(EventRecord {
            stream_seq: first_stream_seq + offset,
            seq: answer.seq,
            producer_id: event.content.producer_id.clone(),
            producer_seq: event.content.producer_seq,
            hash: hash.clone(),
        })?;
    }
    Ok(())
}

/// Takes single-event appends off the front of the queue into a streamed batch, each decided
/// on the overlay; true once the batch is complete: as many as `gathering` expects, or the
/// next request needs more than an append (it stays queued).
fn take_appends(
    requests: &mut VecDeque<Request>,
    overlay: &mut Overlay<'_>,
    group: &mut Vec<Decided>,
    gathering: Gathering,
) -> bool {
    while group.len() < gathering.expected {
        let Some(request) = requests.front() else {
            return false;
        };
        if request.events.len() != 1 {
            return true;
        }
        let verdict = decide_request(overlay, request);
        if !verdict.appends_only {
            return true;
        }
        let Some(request) = requests.pop_front() else {
            return true;
        };
        group.push(Decided {
            request,
            answers: verdict.answers,
        });
    }
    true
}

/// A request decided event by event on an overlay.
struct Verdict {
    answers: Vec<Appended>,
    /// The rejection that stopped the request, if one did.
    rejection: Option<Rejection>,
    /// Whether every event was decided to append (nothing to answer from a fresh state).
    appends_only: bool,
}

/// Decides each event of `request` on the overlay, which counts its appends as done, until
/// one is rejected.
fn decide_request(overlay: &mut Overlay<'_>, request: &Request) -> Verdict {
    let mut verdict = Verdict {
        answers: Vec::with_capacity(request.events.len()),
        rejection: None,
        appends_only: true,
    };
    for (event, hash) in request.events.iter().zip(&request.hashes) {
        let (seq, deduped) = match overlay.decide(&event.content, event.expected_seq, hash) {
            Decision::Append { seq } => {
                overlay.apply(&event.content, seq, hash);
                (seq, false)
            }
            Decision::Deduped { seq } => (seq, true),
            Decision::Reject(reason) => {
                verdict.appends_only = false;
                verdict.rejection = Some(reason);
                break;
            }
        };
        verdict.appends_only &= !deduped;
        verdict.answers.push(Appended {
            seq,
            last_seq: seq,
            deduped,
        });
    }
    verdict
}

/// The state is behind the stream: catch up before answering anything but an append.
struct Stale;

/// The requests to commit next: several single-event requests, or one larger one alone.
fn take_group(requests: &mut VecDeque<Request>) -> VecDeque<Request> {
    let mut group = VecDeque::new();
    while let Some(request) = requests.front() {
        let single = request.events.len() == 1;
        if !group.is_empty() && (!single || group.len() >= MAX_GROUP) {
            break;
        }
        let Some(request) = requests.pop_front() else {
            break;
        };
        group.push_back(request);
        if !single {
            break;
        }
    }
    group
}

/// Brings the state to the stream leader's head of the session: afterwards it is exactly the
/// fold of the log the stream holds now, or the catch-up fails.
async fn catch_up(
    store: &Store,
    id: &SessionId,
    state: &mut SessionState,
) -> Result<(), StoreError> {
    let span = tracing::info_span!(target: TRACE_TARGET, "jetstream catch-up");
    follow_the_stream(store, id, state).instrument(span).await
}

async fn follow_the_stream(
    store: &Store,
    id: &SessionId,
    state: &mut SessionState,
) -> Result<(), StoreError> {
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
        // saw, or the stream was deleted and created again. Fold the one that does.
        *state = SessionState::default();
        if !fold_up_to(store, id, state, head).await? {
            return Err(StoreError::Corrupt(format!(
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
