//! Which queued requests commit together, how each is decided on the provisional state the
//! ones before it leave, and how a stored group folds into the state. Pure: no NATS, no waits.

use std::collections::VecDeque;
use std::time::Duration;

use super::Request;
use crate::sessions::Appended;
use crate::sessions::model::{ContentHash, EventRecord, NewEvent};
use crate::sessions::state::{Decision, Discontinuity, Overlay, Rejection, SessionState};

/// The most single appends one group commit carries.
pub(super) const MAX_GROUP: usize = 256;

/// An atomic batch costs JetStream about as much as this many single conditional appends
/// (~2 ms against ~0.1 ms here: a single-replica file stream stages every batch in a file store
/// of its own, created, synced and deleted before the commit is acknowledged), so fewer queued
/// requests are published one by one.
pub(super) const BATCH_PAYS_FROM: usize = 16;

/// However slow the last commit, a round waits no longer than this for requests to gather.
const MAX_PATIENCE: Duration = Duration::from_millis(5);

/// A request decided into the group about to be published.
pub(super) struct Decided {
    pub(super) request: Request,
    /// Each event's answer; appends also get a slot in the publish.
    pub(super) answers: Vec<Appended>,
}

/// What a round tells the next: how many requests to wait for, and for how long at most.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Gathering {
    pub(super) expected: usize,
    pub(super) patience: Duration,
}

impl Gathering {
    /// After a round answered `answered` requests while `waiting` others were queued, with a
    /// commit that took `committing`: the callers just answered usually append again at once,
    /// and waiting for them costs at most what a commit costs.
    pub(super) fn after(answered: usize, waiting: usize, committing: Duration) -> Gathering {
        Gathering {
            expected: (answered + waiting).min(MAX_GROUP),
            patience: committing.min(MAX_PATIENCE),
        }
    }
}

/// The state is behind the stream: catch up before answering anything but an append.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Stale;

/// Whether the queue is one single-event request, the only thing a caller commits in its own
/// task: a batch goes to the committer task too, since a caller going away halfway through
/// sending one would leave it open on the stream until JetStream times it out.
pub(super) fn is_lone_single(requests: &VecDeque<Request>) -> bool {
    requests.len() == 1
        && requests
            .front()
            .is_some_and(|request| request.events.len() <= 1)
}

/// The requests to commit next: several single-event requests, or one larger one alone.
pub(super) fn take_group(requests: &mut VecDeque<Request>) -> VecDeque<Request> {
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

/// Takes requests off the front of `pending` into one group to publish (one request only
/// when `singly`), deciding each on the state the ones before it leave. Requests that need
/// no publish (a dedupe, a rejection) are answered here, but only from a fresh state and
/// ahead of any append.
pub(super) fn decide_group(
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

/// Takes single-event appends off the front of the queue into a streamed batch, each decided
/// on the overlay; true once the batch is complete: as many as `gathering` expects, or the
/// next request needs more than an append (it stays queued).
pub(super) fn take_appends(
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

/// Puts a group that was not stored back at the front of `queue`, in order, to be decided
/// again.
pub(super) fn requeue(group: Vec<Decided>, queue: &mut VecDeque<Request>) {
    for decided in group.into_iter().rev() {
        queue.push_front(decided.request);
    }
}

/// The events of a decided request that append (its dedupes publish nothing), with their
/// hashes and answers.
pub(super) fn appended(
    decided: &Decided,
) -> impl Iterator<Item = (&NewEvent, &ContentHash, &Appended)> {
    let request = &decided.request;
    request
        .events
        .iter()
        .zip(&request.hashes)
        .zip(&decided.answers)
        .filter(|(_, answer)| !answer.deduped)
        .map(|((event, hash), answer)| (event, hash, answer))
}

/// Folds the group's appends (not its dedupes), just stored with the last at
/// `last_stream_seq`, into the state: a batch is stored at consecutive stream sequences.
pub(super) fn fold(
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
