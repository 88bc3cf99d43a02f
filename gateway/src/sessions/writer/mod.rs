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
//!
//! This file hands the queue to its committer; `group` decides which requests commit together
//! and how they fold into the state, `commit` publishes them, and `catch_up` reads the state
//! from the stream.

mod catch_up;
mod commit;
mod group;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use tracing::Instrument;

use super::error::AppendError;
use super::lock;
use super::model::{ContentHash, NewEvent, SessionId};
use super::state::SessionState;
use super::{Appended, WriteStatus};
use crate::metrics::Metrics;
use crate::nats::Store;
use crate::telemetry;
use catch_up::catch_up;
use group::{BATCH_PAYS_FROM, Gathering, is_lone_single, take_group};

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
    pub async fn append(
        self: &Arc<Self>,
        store: &Arc<Store>,
        metrics: &Arc<Metrics>,
        id: &SessionId,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Appended>, AppendError> {
        self.enqueue(store, metrics, id, events).answer().await
    }

    /// Queues `events` as one request, behind every request queued before this call returns:
    /// a caller that enqueues several before awaiting any has them decided in that order.
    ///
    /// A single event that finds its session idle commits itself, in its caller's task once
    /// awaited, which saves two task hand-offs on the common path. It only ever commits itself:
    /// if others queued in the meantime, or once it is answered (or its caller goes away), the
    /// queue goes to a committer task of its own, so no request depends on another's caller.
    pub fn enqueue(
        self: &Arc<Self>,
        store: &Arc<Store>,
        metrics: &Arc<Metrics>,
        id: &SessionId,
        events: Vec<NewEvent>,
    ) -> Queued {
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
        let handoff = if start {
            Some(Handoff(Some(Committer {
                writer: self.clone(),
                store: store.clone(),
                metrics: metrics.clone(),
                id: id.clone(),
            })))
        } else {
            self.arrivals.notify_one();
            None
        };
        Queued { answer, handoff }
    }

    /// The latest `(producer_seq, seq)` the session holds for `producer_id`, read from a state
    /// brought to the stream leader's head, so it counts every append acknowledged anywhere.
    pub async fn position(
        self: &Arc<Self>,
        store: &Arc<Store>,
        metrics: &Arc<Metrics>,
        id: &SessionId,
        producer_id: Option<&str>,
    ) -> Result<WriteStatus, AppendError> {
        let mut state = self.state.lock().await;
        let state = match state.as_mut() {
            Some(state) => {
                catch_up(store, id, state).await?;
                state
            }
            None => {
                let committer = Committer {
                    writer: self.clone(),
                    store: store.clone(),
                    metrics: metrics.clone(),
                    id: id.clone(),
                };
                state.insert(committer.load().await?)
            }
        };
        Ok(WriteStatus {
            last_seq: state.last_seq(),
            closed: state.closed(),
            producer: producer_id.and_then(|producer_id| state.position(producer_id)),
        })
    }
}

/// A request in its session's queue.
pub struct Queued {
    answer: oneshot::Receiver<Result<Vec<Appended>, AppendError>>,
    /// Set when this request found the queue idle: it starts the committing.
    handoff: Option<Handoff>,
}

impl Queued {
    /// Waits for the request's answer. A request dropped before it is decided is never
    /// committed: nobody is left to tell its outcome.
    pub async fn answer(self) -> Result<Vec<Appended>, AppendError> {
        if let Some(Handoff(Some(committer))) = &self.handoff {
            committer.round(Alone::Required, Gathering::default()).await;
        }
        drop(self.handoff);
        self.answer.await.unwrap_or(Err(AppendError::Abandoned))
    }

    /// Starts committing at once, in a task of its own, and returns the answer to wait for:
    /// for a caller that awaits answers later, or in an order of its own, so that the session's
    /// queue never waits for that caller.
    pub fn detach(self) -> impl Future<Output = Result<Vec<Appended>, AppendError>> + use<> {
        drop(self.handoff);
        let answer = self.answer;
        async move { answer.await.unwrap_or(Err(AppendError::Abandoned)) }
    }
}

struct Committer {
    writer: Arc<Writer>,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    id: SessionId,
}

/// Whether a round may commit other callers' requests too.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Alone {
    /// The caller commits in its own task: only its own single event, so that its going away
    /// cannot abandon anyone else's request, nor an open batch.
    Required,
    NotRequired,
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
            let err = AppendError::Inconsistent("the session's committer failed".into());
            let _ = request.reply.send(Err(err));
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
            && let Some(_slot) = self.store.batch_slot()
        {
            return Some(self.commit_streamed(state, gathering).await);
        }
        let pending = {
            let mut queue = lock(&self.writer.queue);
            if queue.requests.is_empty() {
                queue.draining = false;
                return None;
            }
            if alone == Alone::Required && !is_lone_single(&queue.requests) {
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
            Ok(waiting) => Some(Gathering::after(answered, waiting, started.elapsed())),
            Err((err, mut pending)) => {
                // Storage (or the gateway) failed, not the request: what queued meanwhile would
                // only wait as long again.
                if err.is_failure() {
                    pending.extend(lock(&self.writer.queue).requests.drain(..));
                }
                for request in pending {
                    let _ = request.reply.send(Err(err.clone()));
                }
                Some(Gathering::default())
            }
        }
    }
}
