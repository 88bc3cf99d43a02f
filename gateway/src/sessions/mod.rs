//! The session log domain: create sessions, append events with gapless seqs, find where a
//! reader resumes. It knows nothing of HTTP.
//!
//! Appends to one session are serialised inside a gateway (JetStream's per-subject check
//! collapses under concurrent writers) and made safe across gateways by the stream itself:
//! every append states the stream sequence its decision was made on.

pub mod error;
mod fanout;
pub mod input;
pub mod limits;
pub mod model;
mod reader;
mod state;
pub mod streams;
mod writer;

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use lru::LruCache;

use crate::metrics::{AppendOutcome, Metrics};
use crate::nats::{
    CreateSessionFailure, Head, ReplaceSessionFailure, RevisedRecord, Store, StoreError,
};
use crate::tail::Positioned;
use error::{AppendError, CreateError, ReadError};
use fanout::Fanout;
use model::{
    Change, Gap, GapReason, NewEvent, NewSession, Seq, Session, SessionId, SessionRecord,
    SessionSummary,
};
use reader::Reader;
pub use state::ProducerPosition;
use writer::Writer;

/// The outcome of an accepted append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The event's seq; for a deduped retry, the seq the original got.
    pub seq: Seq,
    /// The session's newest seq after this request.
    pub last_seq: Seq,
    pub deduped: bool,
}

/// Where a session's writing stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteStatus {
    pub last_seq: Seq,
    /// Whether its last event closed it: it takes no more appends.
    pub closed: bool,
    /// The asked producer's latest stored request, if the session remembers it.
    pub producer: Option<ProducerPosition>,
}

/// A page of a session's events, oldest first.
#[derive(Debug, Clone)]
pub struct EventPage {
    /// Each event's JSON, exactly as stored.
    pub events: Vec<bytes::Bytes>,
    /// The last seq on the page; when it is empty, where the reader stands.
    pub next_cursor: Seq,
    pub last_seq: Seq,
    pub caught_up: bool,
    /// Set when the page does not continue right after the requested cursor.
    pub gap: Option<Gap>,
}

/// Where a tail begins: the position it continues after, the gap to announce, and the feed.
pub struct TailStart<S> {
    pub cursor: Seq,
    pub gap: Option<Gap>,
    pub entries: S,
}

/// Where a reader continues, and the stream sequence its next event is at (or after).
struct Resume {
    cursor: Seq,
    start: u64,
    gap: Option<Gap>,
}

pub struct SessionLog {
    store: Arc<Store>,
    /// A cache only: dropping any entry costs one rebuild from JetStream, never correctness.
    states: Mutex<LruCache<SessionId, Arc<Writer>>>,
    /// Who owns each session: fixed at create, and a deleted id can be created again only by
    /// its owner, so a cached owner never goes stale, and a fenced append costs no extra read.
    owners: Mutex<LruCache<SessionId, String>>,
    /// The store's incarnation the caches were filled in.
    cached_incarnation: AtomicU64,
    fanout: Arc<Fanout>,
    /// When streams were last read or written here, for their idle expiry.
    accesses: streams::Accesses,
    /// Appends by outcome, and what the writers count: commits, their sizes, retries.
    metrics: Arc<Metrics>,
}

impl SessionLog {
    pub fn new(store: Arc<Store>, cache_size: usize, metrics: Arc<Metrics>) -> SessionLog {
        let capacity = NonZeroUsize::new(cache_size).unwrap_or(NonZeroUsize::MIN);
        let store_incarnation = store.incarnation();
        SessionLog {
            fanout: Arc::new(Fanout::new(store.clone())),
            store,
            states: Mutex::new(LruCache::new(capacity)),
            owners: Mutex::new(LruCache::new(capacity)),
            cached_incarnation: AtomicU64::new(store_incarnation),
            accesses: streams::Accesses::default(),
            metrics,
        }
    }

    /// Creates a session owned by `tenant` (`None` with authentication off).
    pub async fn create(
        &self,
        new: NewSession,
        tenant: Option<String>,
    ) -> Result<SessionSummary, CreateError> {
        let now = model::timestamp_now();
        let id = new.id.unwrap_or_else(SessionId::generate);
        let session = Session {
            shard: self.store.shard_for_new_session(&id),
            id,
            tenant_id: tenant,
            title: new.title,
            metadata: new.metadata,
            created_at: now.clone(),
            updated_at: now,
            version: 1,
            archived: false,
            content_type: new.content_type,
            expiry: new.expiry,
            forked_from: new.forked_from,
            fork_count: 0,
            retired: false,
        };
        let record = SessionRecord {
            session,
            change: Change::Created,
        };
        self.store
            .create_session(&record)
            .await
            .map_err(|err| match err {
                CreateSessionFailure::Exists => {
                    CreateError::SessionExists(record.session.id.clone())
                }
                CreateSessionFailure::Store(err) => CreateError::Store(err),
            })?;
        Ok(SessionSummary {
            session: record.session,
            last_seq: 0,
        })
    }

    /// Whether a reader confined to `tenant` sees the session (`Session::visible_to`); another
    /// tenant's session is as missing as an unknown one. With no tenant nothing is read.
    pub async fn visible_to(&self, id: &SessionId, tenant: Option<&str>) -> Result<(), ReadError> {
        let Some(tenant) = tenant else {
            return Ok(());
        };
        self.drop_other_incarnations();
        let cached = lock(&self.owners).get(id).cloned();
        let owner = match cached {
            Some(owner) => owner,
            None => {
                let owner = self.header(id).await?.tenant().to_owned();
                lock(&self.owners).put(id.clone(), owner.clone());
                owner
            }
        };
        if owner != tenant {
            return Err(ReadError::SessionNotFound(id.clone()));
        }
        Ok(())
    }

    /// Deletes a session: its header becomes a tombstone (the catalog drops it and the
    /// lifecycle feed says `session.deleted`), its events are purged, and its id may be
    /// created again, starting over at seq 1.
    pub async fn delete(&self, id: &SessionId) -> Result<(), ReadError> {
        loop {
            let revised = self.revised_header(id).await?;
            let mut tombstone = revised.record;
            tombstone.change = Change::Deleted;
            tombstone.session.updated_at = model::timestamp_now();
            tombstone.session.version += 1;
            match self
                .store
                .delete_session(&tombstone, revised.revision)
                .await
            {
                Ok(()) => break,
                // Changed since it was read: read it again.
                Err(ReplaceSessionFailure::Changed) => continue,
                Err(ReplaceSessionFailure::Store(err)) => return Err(err.into()),
            }
        }
        self.forget(id);
        lock(&self.owners).pop(id);
        Ok(())
    }

    pub async fn get(&self, id: &SessionId) -> Result<SessionSummary, ReadError> {
        let session = self.header(id).await?;
        let last_seq = self.store.head(id).await?.map_or(0, |head| head.seq);
        Ok(SessionSummary { session, last_seq })
    }

    /// The session's header, read from the bucket stream's leader.
    async fn header(&self, id: &SessionId) -> Result<Session, ReadError> {
        Ok(self.revised_header(id).await?.record.session)
    }

    /// The session's header and its bucket revision, read from the bucket stream's leader.
    async fn revised_header(&self, id: &SessionId) -> Result<RevisedRecord, ReadError> {
        self.store
            .session(id)
            .await?
            .ok_or_else(|| ReadError::SessionNotFound(id.clone()))
    }

    /// Appends `events` in order, all or none, each deduplicated and checked as if appended
    /// alone right after the one before it; a retry is answered with the seq its original got.
    ///
    /// Each decision is made on the cached state. Appends are then published on the condition
    /// that the state is still the stream's, and a rejection or dedupe is only answered after
    /// checking the same: a stale cache can cost a round trip, never a wrong answer.
    pub async fn append_all(
        &self,
        id: &SessionId,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Appended>, AppendError> {
        let count = events.len();
        let appended = self
            .writer(id)
            .append(&self.store, &self.metrics, id, events)
            .await;
        self.answered(id, count, appended)
    }

    /// Like `append_all`, but queued before this returns: requests submitted one after another
    /// are decided in that order, however their answers are awaited. A producer pipelines this
    /// way, with many requests unanswered.
    pub fn submit(
        self: &Arc<Self>,
        id: &SessionId,
        events: Vec<NewEvent>,
    ) -> impl Future<Output = Result<Vec<Appended>, AppendError>> + Send + 'static {
        let count = events.len();
        let answer = self
            .writer(id)
            .enqueue(&self.store, &self.metrics, id, events)
            .detach();
        let (log, id) = (self.clone(), id.clone());
        async move { log.answered(&id, count, answer.await) }
    }

    /// Where the session's writing stands, as the stream leader has it: its last seq, whether
    /// it is closed, and the latest `(producer_seq, seq)` it holds for `producer_id` (what a
    /// producer resuming after a drop need not send again). Fails for a session that does not
    /// exist, and leaves its write state loaded for the appends to come.
    pub async fn write_status(
        &self,
        id: &SessionId,
        producer_id: Option<&str>,
    ) -> Result<WriteStatus, AppendError> {
        let status = self
            .writer(id)
            .position(&self.store, &self.metrics, id, producer_id)
            .await;
        if let Err(AppendError::SessionNotFound(_)) = status {
            self.forget(id);
        }
        status
    }

    /// Counts an append's outcome.
    fn answered(
        &self,
        id: &SessionId,
        count: usize,
        appended: Result<Vec<Appended>, AppendError>,
    ) -> Result<Vec<Appended>, AppendError> {
        if let Err(AppendError::SessionNotFound(_)) = appended {
            // Unknown ids must not crowd real sessions out of the cache.
            self.forget(id);
        }
        match &appended {
            Ok(answers) => {
                let deduped = answers.iter().filter(|answer| answer.deduped).count();
                self.metrics.appends(AppendOutcome::Deduped, deduped);
                self.metrics
                    .appends(AppendOutcome::Appended, answers.len() - deduped);
            }
            Err(err) if err.is_failure() => self.metrics.appends(AppendOutcome::Failed, count),
            Err(_) => self.metrics.appends(AppendOutcome::Rejected, count),
        }
        appended
    }

    /// Where a reader with `cursor` continues: after the cursor when the events after it are
    /// retained, else with a gap. The feed starts at that event, or past the head.
    async fn resume(
        &self,
        id: &SessionId,
        cursor: Seq,
    ) -> Result<(Resume, Option<Head>), ReadError> {
        if self.store.session(id).await?.is_none() {
            return Err(ReadError::SessionNotFound(id.clone()));
        }
        let Some(head) = self.store.head(id).await? else {
            let resume = Resume {
                cursor: 0,
                start: 1,
                gap: (cursor > 0).then_some(Gap {
                    reason: GapReason::ResumeInvalidated,
                    from_cursor: cursor,
                    next_cursor: 0,
                    earliest_available_cursor: 0,
                    committed_cursor: 0,
                }),
            };
            return Ok((resume, None));
        };
        let first = self.store.first(id).await?.unwrap_or(head);
        let gap = |reason, next_cursor| Gap {
            reason,
            from_cursor: cursor,
            next_cursor,
            earliest_available_cursor: first.seq - 1,
            committed_cursor: head.seq,
        };
        let resume = if cursor > head.seq {
            let gap = gap(GapReason::ResumeInvalidated, head.seq);
            Resume {
                cursor: head.seq,
                start: head.stream_seq + 1,
                gap: Some(gap),
            }
        } else if cursor == head.seq {
            Resume {
                cursor,
                start: head.stream_seq + 1,
                gap: None,
            }
        } else if cursor + 1 < first.seq {
            let gap = gap(GapReason::CursorExpired, first.seq - 1);
            Resume {
                cursor: first.seq - 1,
                start: first.stream_seq,
                gap: Some(gap),
            }
        } else {
            let start = self.store.stream_seq_of(id, cursor + 1, head).await?;
            Resume {
                cursor,
                start,
                gap: None,
            }
        };
        Ok((resume, Some(head)))
    }

    /// The session's events after `cursor`, stored then live, with the gap the reader must be
    /// told about first, if any.
    pub async fn open_tail(
        &self,
        id: &SessionId,
        cursor: Seq,
    ) -> Result<
        TailStart<impl Stream<Item = Result<Positioned, StoreError>> + Send + Unpin + 'static>,
        ReadError,
    > {
        let (resume, _) = self.resume(id, cursor).await?;
        let reader = Reader::new(
            id.clone(),
            self.store.clone(),
            self.fanout.clone(),
            resume.start,
        );
        let entries = Box::pin(futures::stream::unfold(reader, |mut reader| async move {
            let entry = reader.next().await?;
            Some((entry, reader))
        }));
        Ok(TailStart {
            cursor: resume.cursor,
            gap: resume.gap,
            entries,
        })
    }

    /// Up to `limit` events after `cursor`, from storage.
    pub async fn read_page(
        &self,
        id: &SessionId,
        cursor: Seq,
        limit: usize,
    ) -> Result<EventPage, ReadError> {
        let (resume, head) = self.resume(id, cursor).await?;
        let last_seq = head.map_or(0, |head| head.seq);
        let mut page = EventPage {
            events: Vec::new(),
            next_cursor: resume.cursor,
            last_seq,
            caught_up: resume.cursor >= last_seq,
            gap: resume.gap,
        };
        let Some(head) = head.filter(|_| !page.caught_up) else {
            return Ok(page);
        };
        let count = (last_seq - resume.cursor).min(limit as u64);
        for event in self
            .store
            .read_events(id, resume.start, head.stream_seq, count)
            .await?
        {
            page.next_cursor = event.seq;
            page.events.push(event.body);
        }
        page.caught_up = page.next_cursor >= last_seq;
        Ok(page)
    }

    /// Like `read_page`, but an empty page waits up to `wait` for the first new event.
    pub async fn read_page_waiting(
        &self,
        id: &SessionId,
        cursor: Seq,
        limit: usize,
        wait: Duration,
    ) -> Result<EventPage, ReadError> {
        let page = self.read_page(id, cursor, limit).await?;
        if !page.events.is_empty() || page.gap.is_some() || wait.is_zero() {
            return Ok(page);
        }
        // The tail starts from a fresh head, so an event that landed since the page was read
        // arrives at once.
        let mut entries = self.open_tail(id, page.next_cursor).await?.entries;
        match tokio::time::timeout(wait, entries.next()).await {
            Err(_) => Ok(page),
            Ok(_) => self.read_page(id, cursor, limit).await,
        }
    }

    fn writer(&self, id: &SessionId) -> Arc<Writer> {
        self.drop_other_incarnations();
        lock(&self.states)
            .get_or_insert(id.clone(), Arc::default)
            .clone()
    }

    /// Empties the caches once the stream or the bucket was created anew: they describe logs
    /// and owners that no longer exist.
    fn drop_other_incarnations(&self) {
        let current = self.store.incarnation();
        // A load on every call, a write only when the incarnation changed.
        if self.cached_incarnation.load(Ordering::Acquire) != current
            && self.cached_incarnation.swap(current, Ordering::AcqRel) != current
        {
            lock(&self.states).clear();
            lock(&self.owners).clear();
        }
    }

    fn forget(&self, id: &SessionId) {
        lock(&self.states).pop(id);
    }
}

/// The waits between tries while storage errors last (a leader election takes seconds): from
/// 50 ms, doubling up to 2 s.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            next: Duration::from_millis(50),
        }
    }
}

impl Backoff {
    async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(Duration::from_secs(2));
    }
}

/// A poisoned lock only means another thread panicked holding it; the data it guards is a
/// cache or a queue that stays usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
