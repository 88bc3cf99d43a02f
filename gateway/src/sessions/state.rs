//! A session's write state as a fold over its committed events, and the append decision.
//!
//! The state is a pure function of the log, so every gateway that has read the same prefix
//! decides the same way; that is what lets any gateway hold it as a mere cache.
//! The file is long for its tests: the decision rules are pure, and tested here beside them.

use std::collections::HashMap;

use lru::LruCache;
use serde::{Deserialize, Serialize};

use super::model::{ContentHash, EventContent, EventRecord, Seq};

/// How many producers a session remembers; the one whose last append is oldest goes first.
pub const MAX_PRODUCERS_PER_SESSION: usize = 10_000;

/// The newest append of one producer: only this request is retry-safe.
#[derive(Debug, Clone, PartialEq)]
struct ProducerCursor {
    producer_seq: u64,
    seq: Seq,
    hash: ContentHash,
}

/// Where a producer stands in a session: its latest stored request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerPosition {
    pub producer_seq: u64,
    pub seq: Seq,
}

/// A session's state after folding in every event up to `stream_seq`.
#[derive(Debug)]
pub struct SessionState {
    last_seq: Seq,
    /// The stream sequence of the newest folded event, 0 when none: the expected last subject
    /// sequence of the next append.
    stream_seq: u64,
    /// Set by the event that closed the session, its last.
    closed: bool,
    producers: LruCache<String, ProducerCursor>,
}

/// A state as saved in the snapshots bucket: producers from least to most recently
/// appending, so a restored state forgets them in the same order the full fold would.
#[derive(Debug, Serialize, Deserialize)]
pub struct Snapshot {
    last_seq: Seq,
    stream_seq: u64,
    /// Absent in snapshots taken before sessions could be closed.
    #[serde(default)]
    closed: bool,
    /// `(producer_id, producer_seq, seq, content hash)`.
    producers: Vec<(String, u64, Seq, String)>,
}

impl Snapshot {
    pub fn stream_seq(&self) -> u64 {
        self.stream_seq
    }

    /// Whether `record`, the event stored where this snapshot's last one should be, is that
    /// event: same seq, producer and content. A snapshot of another incarnation of the stream
    /// (deleted and created again) names events that are not there.
    pub fn describes(&self, record: &EventRecord) -> bool {
        record.stream_seq == self.stream_seq
            && record.seq == self.last_seq
            && self.producers.iter().any(|(id, producer_seq, seq, hash)| {
                *seq == record.seq
                    && *id == record.producer_id
                    && *producer_seq == record.producer_seq
                    && hash == record.hash.as_str()
            })
    }
}

/// What an append request turns into against a given state.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Append { seq: Seq },
    Deduped { seq: Seq },
    Reject(Rejection),
}

/// Why an append cannot be taken, each a 409 for the client.
#[derive(Debug, Clone, PartialEq)]
pub enum Rejection {
    ExpectedSeq {
        expected: Seq,
        actual: Seq,
    },
    ProducerSeq {
        producer_id: String,
        expected: u64,
        got: u64,
    },
    ProducerReplay,
    /// The session was closed at `last_seq`.
    Closed {
        last_seq: Seq,
    },
}

impl Default for SessionState {
    fn default() -> SessionState {
        SessionState {
            last_seq: 0,
            stream_seq: 0,
            closed: false,
            producers: LruCache::unbounded(),
        }
    }
}

impl SessionState {
    pub fn last_seq(&self) -> Seq {
        self.last_seq
    }

    /// Whether the session's last event closed it.
    pub fn closed(&self) -> bool {
        self.closed
    }

    /// Where `producer_id` stands, if the session remembers it.
    pub fn position(&self, producer_id: &str) -> Option<ProducerPosition> {
        self.producers
            .peek(producer_id)
            .map(|cursor| ProducerPosition {
                producer_seq: cursor.producer_seq,
                seq: cursor.seq,
            })
    }

    pub fn stream_seq(&self) -> u64 {
        self.stream_seq
    }

    pub fn snapshot(&self) -> Snapshot {
        let producers = self
            .producers
            .iter()
            .rev()
            .map(|(id, cursor)| {
                let hash = cursor.hash.as_str().to_owned();
                (id.clone(), cursor.producer_seq, cursor.seq, hash)
            })
            .collect();
        Snapshot {
            last_seq: self.last_seq,
            stream_seq: self.stream_seq,
            closed: self.closed,
            producers,
        }
    }

    pub fn restore(snapshot: Snapshot) -> SessionState {
        let mut state = SessionState {
            last_seq: snapshot.last_seq,
            stream_seq: snapshot.stream_seq,
            closed: snapshot.closed,
            producers: LruCache::unbounded(),
        };
        for (id, producer_seq, seq, hash) in snapshot.producers {
            let hash = ContentHash::from_hex(&hash);
            let cursor = ProducerCursor {
                producer_seq,
                seq,
                hash,
            };
            state.producers.put(id, cursor);
        }
        state
    }

    /// Folds in the next committed event of this session. An empty state takes any event (a
    /// log whose start retention dropped begins past seq 1); any other must take exactly the
    /// seq after its last, or it describes another log.
    pub fn apply(&mut self, record: EventRecord) -> Result<(), Discontinuity> {
        if self.stream_seq != 0 && record.seq != self.last_seq + 1 {
            return Err(Discontinuity {
                last_seq: self.last_seq,
                next_seq: record.seq,
            });
        }
        self.last_seq = record.seq;
        self.stream_seq = record.stream_seq;
        self.closed = record.closes;
        let cursor = ProducerCursor {
            producer_seq: record.producer_seq,
            seq: record.seq,
            hash: record.hash,
        };
        self.producers.put(record.producer_id, cursor);
        if self.producers.len() > MAX_PRODUCERS_PER_SESSION {
            self.producers.pop_lru();
        }
        Ok(())
    }

    /// Whether `record` is the newest event this state has folded: same position, producer
    /// and content.
    pub fn ends_with(&self, record: &EventRecord) -> bool {
        self.stream_seq == record.stream_seq
            && self.last_seq == record.seq
            && self
                .producers
                .peek(&record.producer_id)
                .is_some_and(|cursor| {
                    cursor.seq == record.seq
                        && cursor.producer_seq == record.producer_seq
                        && cursor.hash == record.hash
                })
    }

    /// Forgets the producers whose latest event is before `first_seq`, the session's oldest
    /// retained event: a gateway folding the retained log afresh never learns of them, and
    /// every gateway must decide alike.
    pub fn forget_producers_before(&mut self, first_seq: Seq) {
        // Least recently appending first, which is also the order of their latest seqs.
        while self
            .producers
            .peek_lru()
            .is_some_and(|(_, cursor)| cursor.seq < first_seq)
        {
            self.producers.pop_lru();
        }
    }
}

/// An event that does not continue a state: the state was folded from another log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("seq {next_seq} cannot follow seq {last_seq}")]
pub struct Discontinuity {
    last_seq: Seq,
    next_seq: Seq,
}

/// The documented order: `expected_seq` first, then the producer's cursor, then whether the
/// session is closed (so a retry of the closing request is still deduplicated).
fn decide(
    last_seq: Seq,
    closed: bool,
    cursor: Option<&ProducerCursor>,
    content: &EventContent,
    expected_seq: Option<Seq>,
    hash: &ContentHash,
) -> Decision {
    if let Some(expected) = expected_seq
        && expected != last_seq
    {
        return Decision::Reject(Rejection::ExpectedSeq {
            expected,
            actual: last_seq,
        });
    }
    let next = if closed {
        Decision::Reject(Rejection::Closed { last_seq })
    } else {
        Decision::Append { seq: last_seq + 1 }
    };
    // An event without a producer is neither deduplicated nor ordered.
    let Some(cursor) = cursor.filter(|_| !content.producer_id.is_empty()) else {
        return next;
    };
    match content.producer_seq {
        sent if sent == cursor.producer_seq + 1 => next,
        sent if sent == cursor.producer_seq && cursor.hash == *hash => {
            Decision::Deduped { seq: cursor.seq }
        }
        sent if sent == cursor.producer_seq => Decision::Reject(Rejection::ProducerReplay),
        sent => Decision::Reject(Rejection::ProducerSeq {
            producer_id: content.producer_id.clone(),
            expected: cursor.producer_seq + 1,
            got: sent,
        }),
    }
}

/// A state with appends that are decided but not yet committed on top: a group commit
/// decides each queued request as if the ones before it had been committed alone.
pub struct Overlay<'a> {
    base: &'a SessionState,
    last_seq: Seq,
    closed: bool,
    producers: HashMap<String, ProducerCursor>,
}

impl<'a> Overlay<'a> {
    pub fn new(base: &'a SessionState) -> Overlay<'a> {
        Overlay {
            base,
            last_seq: base.last_seq,
            closed: base.closed,
            producers: HashMap::new(),
        }
    }

    pub fn decide(
        &self,
        content: &EventContent,
        expected_seq: Option<Seq>,
        hash: &ContentHash,
    ) -> Decision {
        let cursor = self
            .producers
            .get(&content.producer_id)
            .or_else(|| self.base.producers.peek(&content.producer_id));
        decide(
            self.last_seq,
            self.closed,
            cursor,
            content,
            expected_seq,
            hash,
        )
    }

    pub fn last_seq(&self) -> Seq {
        self.last_seq
    }

    /// Counts an append decided on this overlay as done.
    pub fn apply(&mut self, content: &EventContent, seq: Seq, hash: &ContentHash) {
        self.last_seq = seq;
        self.closed = content.closes();
        let cursor = ProducerCursor {
            producer_seq: content.producer_seq,
            seq,
            hash: hash.clone(),
        };
        self.producers.insert(content.producer_id.clone(), cursor);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(producer_id: &str, producer_seq: u64, text: &str) -> EventContent {
        EventContent::message(producer_id, producer_seq, text)
    }

    /// Decides and, when the decision is an append, commits it at the next stream sequence.
    fn append(state: &mut SessionState, content: &EventContent) -> Decision {
        let hash = ContentHash::of(content);
        let decision = Overlay::new(state).decide(content, None, &hash);
        if let Decision::Append { seq } = decision {
            state
                .apply(EventRecord {
                    stream_seq: state.stream_seq() + 10,
                    seq,
                    producer_id: content.producer_id.clone(),
                    producer_seq: content.producer_seq,
                    hash,
                    closes: content.closes(),
                })
                .unwrap();
        }
        decision
    }

    #[test]
    fn seqs_are_gapless_across_producers() {
        let mut state = SessionState::default();
        assert_eq!(
            append(&mut state, &content("a", 5, "x")),
            Decision::Append { seq: 1 }
        );
        assert_eq!(
            append(&mut state, &content("b", 1, "x")),
            Decision::Append { seq: 2 }
        );
        assert_eq!(
            append(&mut state, &content("a", 6, "y")),
            Decision::Append { seq: 3 }
        );
        assert_eq!(state.last_seq(), 3);
        assert_eq!(state.stream_seq(), 30);
    }

    #[test]
    fn only_the_latest_request_of_a_producer_is_deduped() {
        let mut state = SessionState::default();
        append(&mut state, &content("a", 1, "x"));
        append(&mut state, &content("a", 2, "y"));
        assert_eq!(
            append(&mut state, &content("a", 2, "y")),
            Decision::Deduped { seq: 2 }
        );
        assert_eq!(
            append(&mut state, &content("a", 2, "z")),
            Decision::Reject(Rejection::ProducerReplay)
        );
        let older = append(&mut state, &content("a", 1, "x"));
        assert_eq!(
            older,
            Decision::Reject(Rejection::ProducerSeq {
                producer_id: "a".into(),
                expected: 3,
                got: 1
            })
        );
        let skipped = append(&mut state, &content("a", 4, "w"));
        assert!(matches!(
            skipped,
            Decision::Reject(Rejection::ProducerSeq {
                expected: 3,
                got: 4,
                ..
            })
        ));
        assert_eq!(state.last_seq(), 2);
    }

    #[test]
    fn expected_seq_is_checked_before_dedupe() {
        let mut state = SessionState::default();
        let first = content("a", 1, "x");
        append(&mut state, &first);
        let hash = ContentHash::of(&first);
        assert_eq!(
            Overlay::new(&state).decide(&first, Some(0), &hash),
            Decision::Reject(Rejection::ExpectedSeq {
                expected: 0,
                actual: 1
            })
        );
        assert_eq!(
            Overlay::new(&state).decide(&first, Some(1), &hash),
            Decision::Deduped { seq: 1 }
        );
    }

    #[test]
    fn a_restored_snapshot_decides_like_the_state_it_was_taken_of() {
        let mut state = SessionState::default();
        for producer in 0..5 {
            append(&mut state, &content(&producer.to_string(), 1, "x"));
        }
        append(&mut state, &content("0", 2, "y"));
        let json = serde_json::to_vec(&state.snapshot()).unwrap();
        let restored = SessionState::restore(serde_json::from_slice(&json).unwrap());
        assert_eq!(
            (restored.last_seq(), restored.stream_seq()),
            (state.last_seq(), state.stream_seq())
        );
        let order = |state: &SessionState| -> Vec<String> {
            state.producers.iter().map(|(id, _)| id.clone()).collect()
        };
        assert_eq!(order(&restored), order(&state));
        for (id, producer_seq, text) in [("0", 2, "y"), ("0", 2, "z"), ("3", 3, "x"), ("9", 1, "x")]
        {
            let probe = content(id, producer_seq, text);
            let hash = ContentHash::of(&probe);
            assert_eq!(
                Overlay::new(&restored).decide(&probe, None, &hash),
                Overlay::new(&state).decide(&probe, None, &hash)
            );
        }
    }

    #[test]
    fn the_least_recently_appending_producer_is_forgotten_first() {
        let mut state = SessionState::default();
        for producer in 0..=MAX_PRODUCERS_PER_SESSION {
            append(&mut state, &content(&producer.to_string(), 1, "x"));
        }
        // Producer 0 was evicted, so it is unknown again and may start anywhere.
        assert!(matches!(
            append(&mut state, &content("0", 7, "x")),
            Decision::Append { .. }
        ));
        // Producer 5000 is still remembered.
        let stale = append(&mut state, &content("5000", 7, "x"));
        assert!(matches!(
            stale,
            Decision::Reject(Rejection::ProducerSeq { .. })
        ));
    }

    fn record(stream_seq: u64, seq: Seq, producer_id: &str) -> EventRecord {
        EventRecord {
            stream_seq,
            seq,
            producer_id: producer_id.into(),
            producer_seq: seq,
            hash: ContentHash::of(&content(producer_id, seq, "x")),
            closes: false,
        }
    }

    #[test]
    fn a_closed_session_refuses_appends_but_dedupes_the_closing_retry() {
        let mut state = SessionState::default();
        assert_eq!(
            append(&mut state, &content("a", 1, "x")),
            Decision::Append { seq: 1 }
        );
        let mut close = content("a", 2, "bye");
        close.kind = crate::sessions::model::CLOSE_EVENT_TYPE.into();
        assert_eq!(append(&mut state, &close), Decision::Append { seq: 2 });
        assert!(state.closed());
        assert_eq!(append(&mut state, &close), Decision::Deduped { seq: 2 });
        assert_eq!(
            append(&mut state, &content("b", 1, "late")),
            Decision::Reject(Rejection::Closed { last_seq: 2 })
        );
        let restored = SessionState::restore(state.snapshot());
        assert!(restored.closed());
    }

    #[test]
    fn events_without_a_producer_are_never_deduplicated() {
        let mut state = SessionState::default();
        let anonymous = content("", 0, "same");
        assert_eq!(append(&mut state, &anonymous), Decision::Append { seq: 1 });
        assert_eq!(append(&mut state, &anonymous), Decision::Append { seq: 2 });
    }

    #[test]
    fn a_state_takes_only_the_next_seq_once_it_has_one() {
        let mut state = SessionState::default();
        // A log whose first retained event is seq 40.
        assert_eq!(state.apply(record(100, 40, "a")), Ok(()));
        assert_eq!(state.apply(record(101, 41, "a")), Ok(()));
        assert!(state.apply(record(105, 43, "a")).is_err());
        assert!(state.apply(record(102, 41, "a")).is_err());
        assert_eq!((state.last_seq(), state.stream_seq()), (41, 101));
    }

    #[test]
    fn a_warm_state_forgets_what_retention_dropped_like_a_fresh_fold() {
        let log = [(1, "a"), (2, "b"), (3, "a"), (4, "c"), (5, "b")];
        let mut warm = SessionState::default();
        for (seq, producer) in log {
            warm.apply(record(seq, seq, producer)).unwrap();
        }
        // Retention dropped seqs 1 to 3: producer "a" is in none of the retained events.
        warm.forget_producers_before(4);
        let mut fresh = SessionState::default();
        for (seq, producer) in &log[3..] {
            fresh.apply(record(*seq, *seq, producer)).unwrap();
        }
        let probe = content("a", 9, "x");
        let hash = ContentHash::of(&probe);
        assert_eq!(
            Overlay::new(&warm).decide(&probe, None, &hash),
            Overlay::new(&fresh).decide(&probe, None, &hash)
        );
        assert_eq!(warm.snapshot().producers, fresh.snapshot().producers);
    }

    #[test]
    fn a_snapshot_describes_only_the_event_it_was_taken_at() {
        let mut state = SessionState::default();
        state.apply(record(7, 1, "a")).unwrap();
        state.apply(record(9, 2, "b")).unwrap();
        let snapshot = state.snapshot();
        assert!(snapshot.describes(&record(9, 2, "b")));
        // Another incarnation of the stream: the same position holds another event.
        assert!(!snapshot.describes(&record(9, 2, "c")));
        assert!(!snapshot.describes(&record(8, 2, "b")));
    }
}
