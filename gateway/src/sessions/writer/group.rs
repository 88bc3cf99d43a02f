//! Which queued requests commit together, how each is decided on the provisional state the
//! ones before it leave, and how a stored group folds into the state. Pure: no NATS, no waits.
//! Half of the file is its unit tests, which drive these rules with no NATS at all.

use std::collections::VecDeque;
use std::time::Duration;

use super::Request;
use crate::sessions::Appended;
use crate::sessions::model::{ContentHash, EventRecord, NewEvent};
use crate::sessions::state::{Decision, Discontinuity, Overlay, Rejection, SessionState};

/// The most single appends one group commit carries.
pub(super) const MAX_GROUP: usize = 256;

/// An atomic batch costs JetStream about as much as this many single conditional appends sent
/// one after another (its fixed cost is in `Store::batch_slot`), so fewer queued requests are
/// published one by one.
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
    skip_abandoned(requests);
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
        skip_abandoned(requests);
    }
    group
}

/// Drops the requests at the front of the queue whose callers went away before they were
/// decided: nobody waits for their answer, and a producer whose socket dropped sends them
/// again after it reconnects, which must not find them committed behind its back.
pub(super) fn skip_abandoned(requests: &mut VecDeque<Request>) {
    while requests
        .front()
        .is_some_and(|request| request.reply.is_closed())
    {
        requests.pop_front();
    }
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
        skip_abandoned(requests);
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
            closes: event.content.closes(),
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use tokio::sync::oneshot;

    use super::*;
    use crate::sessions::error::AppendError;
    use crate::sessions::model::{EventContent, Seq};

    type Answer = oneshot::Receiver<Result<Vec<Appended>, AppendError>>;

    /// A request of one event per `(producer, producer_seq, expected_seq)`, and where its
    /// answer arrives.
    fn request(events: &[(&str, u64, Option<Seq>)]) -> (Request, Answer) {
        let events: Vec<NewEvent> = events
            .iter()
            .map(|(producer_id, producer_seq, expected_seq)| NewEvent {
                content: EventContent::message(producer_id, *producer_seq, "x"),
                expected_seq: *expected_seq,
            })
            .collect();
        let hashes = events
            .iter()
            .map(|event| ContentHash::of(&event.content))
            .collect();
        let (reply, answer) = oneshot::channel();
        let request = Request {
            events,
            hashes,
            reply,
            span: tracing::Span::none(),
            trace: None,
        };
        (request, answer)
    }

    /// `count` single-event requests, one producer each, and their answers.
    fn singles(count: usize) -> (VecDeque<Request>, Vec<Answer>) {
        (0..count)
            .map(|producer| request(&[(&producer.to_string(), 1, None)]))
            .unzip()
    }

    /// A state holding one event of each producer, at stream sequences 1, 2, ...
    fn state_of(producers: &[&str]) -> SessionState {
        let mut state = SessionState::default();
        for (seq, producer_id) in (1..).zip(producers) {
            let content = EventContent::message(producer_id, 1, "x");
            let record = EventRecord {
                stream_seq: seq,
                seq,
                producer_id: content.producer_id.clone(),
                producer_seq: 1,
                hash: ContentHash::of(&content),
                closes: false,
            };
            assert_eq!(state.apply(record), Ok(()));
        }
        state
    }

    fn seqs(group: &[Decided]) -> Vec<Vec<(Seq, Seq, bool)>> {
        group
            .iter()
            .map(|decided| {
                let answers = decided.answers.iter();
                answers
                    .map(|answer| (answer.seq, answer.last_seq, answer.deduped))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn singles_group_up_to_the_limit_and_a_larger_request_goes_alone() {
        let (mut requests, _answers) = singles(MAX_GROUP + 1);
        assert_eq!(take_group(&mut requests).len(), MAX_GROUP);
        assert_eq!(requests.len(), 1);

        let (mut requests, _answers) = singles(2);
        let (batch, _batch_answer) = request(&[("b", 1, None), ("b", 2, None)]);
        requests.push_back(batch);
        let (single, _single_answer) = singles(1);
        requests.extend(single);
        // The batch ends the group of singles before it, and takes no single after it.
        assert_eq!(take_group(&mut requests).len(), 2);
        let alone = take_group(&mut requests);
        assert_eq!(alone.len(), 1);
        assert_eq!(alone.front().map(|request| request.events.len()), Some(2));
        assert_eq!(take_group(&mut requests).len(), 1);
        assert!(take_group(&mut requests).is_empty());
    }

    #[test]
    fn requests_whose_callers_went_away_are_never_taken() {
        let (mut requests, mut answers) = singles(4);
        // The first and third callers are gone; the others still wait.
        drop(answers.remove(2));
        drop(answers.remove(0));
        let group = take_group(&mut requests);
        assert_eq!(group.len(), 2);
        assert!(group.iter().all(|request| !request.reply.is_closed()));
        assert!(requests.is_empty());
    }

    #[test]
    fn only_a_queue_of_one_single_event_is_committed_by_its_caller() {
        let (mut requests, _answers) = singles(1);
        assert!(is_lone_single(&requests));
        requests.extend(singles(1).0);
        assert!(!is_lone_single(&requests));
        let (batch, _answer) = request(&[("b", 1, None), ("b", 2, None)]);
        assert!(!is_lone_single(&VecDeque::from([batch])));
    }

    #[test]
    fn a_few_requests_are_decided_one_at_a_time_and_many_together() {
        let state = SessionState::default();
        let (mut few, _answers) = singles(BATCH_PAYS_FROM - 1);
        let group = decide_group(&state, &mut few, false, false);
        assert_eq!(
            group.map(|group| seqs(&group)),
            Ok(vec![vec![(1, 1, false)]])
        );

        let (mut many, _answers) = singles(BATCH_PAYS_FROM);
        let group = decide_group(&state, &mut many, false, false).unwrap();
        // Each is decided on the state the ones before it leave.
        let expected: Vec<_> = (1..=BATCH_PAYS_FROM as Seq)
            .map(|seq| vec![(seq, seq, false)])
            .collect();
        assert_eq!(seqs(&group), expected);
        assert!(many.is_empty());

        let (mut many, _answers) = singles(BATCH_PAYS_FROM);
        let group = decide_group(&state, &mut many, false, true).unwrap();
        assert_eq!(group.len(), 1);
    }

    #[test]
    fn a_dedupe_or_a_rejection_is_answered_only_from_a_fresh_state() {
        let state = state_of(&["a"]);
        let (retry, mut retry_answer) = request(&[("a", 1, None)]);
        let (append, _append_answer) = request(&[("b", 1, None)]);
        let mut pending = VecDeque::from([retry, append]);
        assert_eq!(
            decide_group(&state, &mut pending, false, false).map(|group| group.len()),
            Err(Stale)
        );
        assert_eq!(pending.len(), 2);

        let group = decide_group(&state, &mut pending, true, false).unwrap();
        let deduped = Appended {
            seq: 1,
            last_seq: 1,
            deduped: true,
        };
        let answer = retry_answer.try_recv().unwrap();
        assert_eq!(answer.unwrap(), vec![deduped]);
        assert_eq!(seqs(&group), vec![vec![(2, 2, false)]]);
    }

    #[test]
    fn a_rejection_after_appends_ends_the_group_and_waits_for_a_fresh_state() {
        let state = SessionState::default();
        let (mut pending, _answers) = singles(BATCH_PAYS_FROM);
        let (conflict, mut conflict_answer) = request(&[("z", 1, Some(5))]);
        pending.insert(2, conflict);
        let group = decide_group(&state, &mut pending, true, false).unwrap();
        assert_eq!(seqs(&group), vec![vec![(1, 1, false)], vec![(2, 2, false)]]);
        assert_eq!(pending.len(), BATCH_PAYS_FROM - 1);
        assert!(conflict_answer.try_recv().is_err());

        // First in line on a fresh state, it is rejected against the committed state only.
        let group = decide_group(&state, &mut pending, true, false).unwrap();
        let rejected = conflict_answer.try_recv().ok();
        assert!(matches!(
            rejected,
            Some(Err(AppendError::ExpectedSeqConflict { .. }))
        ));
        assert_eq!(seqs(&group).first(), Some(&vec![(1, 1, false)]));
    }

    #[test]
    fn a_request_answers_with_the_last_seq_its_own_events_reach() {
        let state = state_of(&["a"]);
        let (batch, _answer) = request(&[("a", 1, None), ("a", 2, None), ("a", 3, None)]);
        let mut pending = VecDeque::from([batch]);
        let group = decide_group(&state, &mut pending, true, false).unwrap();
        // The retry of the stored event is deduped, and the request still appends the rest.
        assert_eq!(
            seqs(&group),
            vec![vec![(1, 3, true), (2, 3, false), (3, 3, false)]]
        );
    }

    #[test]
    fn a_streamed_batch_takes_appends_until_one_needs_more() {
        let state = state_of(&["a"]);
        let gathering = Gathering {
            expected: 8,
            patience: Duration::ZERO,
        };
        let mut overlay = Overlay::new(&state);
        let mut group = Vec::new();
        let (mut requests, _answers) = singles(2);
        assert!(!take_appends(
            &mut requests,
            &mut overlay,
            &mut group,
            gathering
        ));
        assert_eq!(group.len(), 2);

        let (retry, _retry_answer) = request(&[("a", 1, None)]);
        requests.push_back(retry);
        requests.extend(singles(1).0);
        // A dedupe needs a fresh state: it stays queued, and so does what follows it.
        assert!(take_appends(
            &mut requests,
            &mut overlay,
            &mut group,
            gathering
        ));
        assert_eq!((group.len(), requests.len()), (2, 2));

        let mut group = Vec::new();
        let (mut requests, _answers) = singles(3);
        let two = Gathering {
            expected: 2,
            ..gathering
        };
        let mut overlay = Overlay::new(&state);
        assert!(take_appends(&mut requests, &mut overlay, &mut group, two));
        assert_eq!(seqs(&group), vec![vec![(2, 2, false)], vec![(3, 3, false)]]);
    }

    #[test]
    fn a_stored_group_folds_its_appends_at_consecutive_stream_sequences() {
        let mut state = state_of(&["a"]);
        let (retry_and_more, _answer) = request(&[("a", 1, None), ("a", 2, None)]);
        let (mut pending, _answers) = singles(BATCH_PAYS_FROM);
        pending.push_front(retry_and_more);
        let group = decide_group(&state, &mut pending, true, false).unwrap();
        assert_eq!(group.len(), 1);
        let mut others = decide_group(&state, &mut pending, true, false).unwrap();
        assert_eq!(others.len(), BATCH_PAYS_FROM);
        // The dedupe stores nothing: one append, at stream sequence 40.
        assert_eq!(fold(&mut state, 40, &group), Ok(()));
        assert_eq!((state.last_seq(), state.stream_seq()), (2, 40));
        // Decided on the state before that commit, the others no longer continue it.
        assert!(fold(&mut state, 100, &others).is_err());

        let mut fresh = state_of(&["a"]);
        fold(&mut fresh, 40, &group).unwrap();
        requeue(std::mem::take(&mut others), &mut pending);
        let others = decide_group(&fresh, &mut pending, true, false).unwrap();
        let last_stream_seq = 40 + BATCH_PAYS_FROM as u64;
        assert_eq!(fold(&mut fresh, last_stream_seq, &others), Ok(()));
        let last_seq = 2 + BATCH_PAYS_FROM as Seq;
        assert_eq!(
            (fresh.last_seq(), fresh.stream_seq()),
            (last_seq, last_stream_seq)
        );
    }

    #[test]
    fn the_next_round_waits_for_the_callers_just_answered_at_most_as_long_as_a_commit() {
        let quick = Gathering::after(3, 2, Duration::from_micros(300));
        assert_eq!(quick.expected, 5);
        assert_eq!(quick.patience, Duration::from_micros(300));
        let slow = Gathering::after(MAX_GROUP, 10, Duration::from_secs(1));
        assert_eq!(slow.expected, MAX_GROUP);
        assert_eq!(slow.patience, MAX_PATIENCE);
    }
}
