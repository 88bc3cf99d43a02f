//! The session catalog: finding sessions (sorted, filtered pages), editing their headers with
//! compare-and-set, and the lifecycle feed of header changes.
//!
//! Every gateway keeps the whole catalog in memory, loaded at start and kept current from the
//! sessions bucket's stream. A list first learns the bucket's newest revision and waits until
//! its index has it, so a session is listed everywhere as soon as its create returned.

pub mod index;
pub mod input;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::{Stream, StreamExt, TryStreamExt};
use serde_json::json;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::nats::{CatalogChange, ReplaceSessionFailure, Store, StoreError};
use crate::sessions::error::{Field, InvalidInput};
use crate::sessions::limits::check_metadata;
use crate::sessions::model::{
    Change, Session, SessionId, SessionRecord, SessionSummary, timestamp_now,
};
use crate::tail::Positioned;
use index::{CatalogIndex, ListQuery};
use input::SessionPatch;

/// How many times a header edit re-reads after losing a race before giving up with a 503.
const MAX_EDIT_ATTEMPTS: u32 = 16;

#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("session `{0}` does not exist")]
    SessionNotFound(SessionId),
    #[error("Expected version {expected}, current version is {current}")]
    VersionConflict { expected: u64, current: u64 },
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One page of a list.
#[derive(Debug)]
pub struct ListPage {
    pub sessions: Vec<SessionSummary>,
    /// The last id of this page when more sessions follow.
    pub next_cursor: Option<String>,
}

pub struct Catalog {
    store: Arc<Store>,
    index: RwLock<CatalogIndex>,
    /// The newest bucket revision folded into the index.
    applied: watch::Sender<u64>,
    loaded: AtomicBool,
    /// The store's incarnation the index was built in.
    indexed_incarnation: AtomicU64,
    /// How long a list waits for the index to catch up before answering 503.
    wait_limit: Duration,
}

impl Catalog {
    pub fn new(store: Arc<Store>, wait_limit: Duration) -> Catalog {
        let incarnation = store.incarnation();
        Catalog {
            store,
            index: RwLock::new(CatalogIndex::default()),
            applied: watch::Sender::new(0),
            indexed_incarnation: AtomicU64::new(incarnation),
            loaded: AtomicBool::new(false),
            wait_limit,
        }
    }

    /// How many sessions the index holds.
    pub fn session_count(&self) -> usize {
        self.index
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }

    /// True once every session that existed at start-up is in the index.
    /// The session's header as this gateway's index holds it: current within the moment the
    /// bucket's stream takes to reach it, so a reader that must see every change reads the
    /// bucket instead.
    pub fn header(&self, id: &SessionId) -> Option<Session> {
        self.index
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(id)
            .cloned()
    }

    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Keeps the index current for as long as the gateway runs, resuming after NATS outages
    /// from the last revision it applied.
    pub async fn keep_current(&self) {
        let mut delay = Duration::from_millis(100);
        loop {
            if let Err(err) = self.follow_bucket().await {
                warn!(error = %err, "catalog feed interrupted, resuming in {delay:?}: {err}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }

    async fn follow_bucket(&self) -> Result<(), StoreError> {
        let mut incarnations = self.store.incarnations();
        let incarnation = *incarnations.borrow();
        if self.indexed_incarnation.swap(incarnation, Ordering::AcqRel) != incarnation {
            // The bucket was created anew: its revisions start over, and its sessions are
            // only those written since.
            *self
                .index
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = CatalogIndex::default();
            self.applied.send_replace(0);
        }
        let newest = self.store.catalog_revision().await?;
        let applied = *self.applied.borrow();
        // First load: each session's newest header only. Afterwards: every change since.
        let mut changes = self.store.follow_catalog(applied, applied == 0).await?;
        if newest <= applied {
            self.mark_loaded();
        }
        loop {
            let change = tokio::select! {
                change = changes.next() => change,
                _ = incarnations.changed() => {
                    // A new bucket ends this pass; the next rebuilds the index for it.
                    self.store.same_log_as(incarnation)?;
                    continue;
                }
            };
            let Some(change) = change else { break };
            let change = change?;
            let revision = change.revision;
            let mut index = self
                .index
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if change.record.change == Change::Deleted {
                index.remove(&change.record.session.id);
            } else {
                index.upsert(change.record.session);
            }
            drop(index);
            self.applied.send_if_modified(|applied| {
                let newer = revision > *applied;
                *applied = (*applied).max(revision);
                newer
            });
            if revision >= newest {
                self.mark_loaded();
            }
        }
        Err(StoreError::Unavailable("the catalog feed ended".into()))
    }

    fn mark_loaded(&self) {
        if !self.loaded.swap(true, Ordering::AcqRel) {
            let sessions = self
                .index
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .len();
            info!(
                catalog.sessions = sessions,
                "catalog loaded: {sessions} sessions"
            );
        }
    }

    /// One page, as of a moment after the request arrived.
    pub async fn list(&self, query: &ListQuery) -> Result<ListPage, StoreError> {
        let newest = self.store.catalog_revision().await?;
        let mut applied = self.applied.subscribe();
        tokio::time::timeout(
            self.wait_limit,
            applied.wait_for(|applied| *applied >= newest),
        )
        .await
        .map_err(|_| StoreError::Timeout("the catalog index is behind the bucket".into()))?
        .map_err(|_| StoreError::Unavailable("the catalog index stopped".into()))?;
        let (sessions, more) = {
            let index = self
                .index
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let (page, more) = index.page(query);
            (page.into_iter().cloned().collect::<Vec<Session>>(), more)
        };
        let ids: Vec<SessionId> = sessions.iter().map(|session| session.id.clone()).collect();
        let last_seqs = self.store.last_seqs(&sessions).await?;
        let next_cursor = more.then(|| ids.last().map(ToString::to_string)).flatten();
        let sessions = sessions
            .into_iter()
            .zip(last_seqs)
            .map(|(session, last_seq)| SessionSummary { session, last_seq })
            .collect();
        Ok(ListPage {
            sessions,
            next_cursor,
        })
    }

    /// Sets or clears the title and merges metadata; `expected_version` makes it a
    /// compare-and-set that holds across gateways (the bucket revision decides the race).
    pub async fn patch(
        &self,
        id: &SessionId,
        patch: SessionPatch,
    ) -> Result<SessionSummary, EditError> {
        self.edit(id, |session| {
            if let Some(expected) = patch.expected_version
                && expected != session.version
            {
                return Err(EditError::VersionConflict {
                    expected,
                    current: session.version,
                });
            }
            if let Some(title) = &patch.title {
                session.title.clone_from(title);
            }
            for (key, value) in patch.metadata.iter().flatten() {
                session.metadata.insert(key.clone(), value.clone());
            }
            // Each patch is bounded, but merges add up: bound the result too.
            check_metadata(Field::Metadata, &session.metadata)?;
            session.version += 1;
            session.updated_at = timestamp_now();
            Ok(Some(Change::Updated))
        })
        .await
    }

    /// Archives or unarchives; doing it twice changes nothing and emits no event.
    pub async fn set_archived(
        &self,
        id: &SessionId,
        archived: bool,
    ) -> Result<SessionSummary, EditError> {
        self.edit(id, |session| {
            if session.archived == archived {
                return Ok(None);
            }
            session.archived = archived;
            session.updated_at = timestamp_now();
            Ok(Some(if archived {
                Change::Archived
            } else {
                Change::Unarchived
            }))
        })
        .await
    }

    /// Reads the header, lets `change` edit it (`None`: nothing to do), and writes it back only
    /// if nobody wrote in between; otherwise reads again.
    async fn edit(
        &self,
        id: &SessionId,
        change: impl Fn(&mut Session) -> Result<Option<Change>, EditError>,
    ) -> Result<SessionSummary, EditError> {
        for _ in 0..MAX_EDIT_ATTEMPTS {
            let current = self
                .store
                .session(id)
                .await?
                .ok_or_else(|| EditError::SessionNotFound(id.clone()))?;
            let mut session = current.record.session;
            let Some(kind) = change(&mut session)? else {
                return self.summary(session).await;
            };
            let record = SessionRecord {
                session,
                change: kind,
            };
            match self.store.replace_session(&record, current.revision).await {
                Ok(_) => return self.summary(record.session).await,
                Err(ReplaceSessionFailure::Changed) => continue,
                Err(ReplaceSessionFailure::Store(err)) => return Err(err.into()),
            }
        }
        Err(StoreError::Unavailable(format!("session {id} kept changing")).into())
    }

    async fn summary(&self, session: Session) -> Result<SessionSummary, EditError> {
        let last_seq = self
            .store
            .head(&session.id)
            .await?
            .map_or(0, |head| head.seq);
        Ok(SessionSummary { session, last_seq })
    }

    /// Header changes after `cursor` (a bucket revision), stored then live, each as
    /// `{"cursor": <revision>, "event": {"kind": "session.created", "session_id": …}}`.
    /// Only `tenant`'s sessions when one is given.
    pub async fn lifecycle(
        &self,
        cursor: u64,
        tenant: Option<String>,
    ) -> Result<
        impl Stream<Item = Result<Positioned, StoreError>> + Send + Unpin + 'static,
        StoreError,
    > {
        let changes = self.store.follow_catalog(cursor, false).await?;
        let visible =
            move |change: &CatalogChange| change.record.session.visible_to(tenant.as_deref());
        let entries = changes
            .try_filter(move |change| futures::future::ready(visible(change)))
            .map_ok(|change| Positioned {
                position: change.revision,
                json: lifecycle_json(&change),
                trace: None,
            });
        Ok(Box::pin(entries))
    }
}

fn lifecycle_json(change: &CatalogChange) -> bytes::Bytes {
    let session = &change.record.session;
    let event = match change.record.change {
        Change::Created => json!({
            "kind": change.record.change, "session_id": session.id, "title": session.title,
            "metadata": session.metadata, "created_at": session.created_at, "version": session.version,
        }),
        Change::Updated => json!({
            "kind": change.record.change, "session_id": session.id, "title": session.title,
            "metadata": session.metadata, "updated_at": session.updated_at, "version": session.version,
        }),
        Change::Deleted => json!({
            "kind": change.record.change, "session_id": session.id,
            "updated_at": session.updated_at, "version": session.version,
        }),
        Change::Archived | Change::Unarchived => json!({
            "kind": change.record.change, "session_id": session.id, "archived": session.archived,
            "updated_at": session.updated_at, "version": session.version,
        }),
    };
    json!({"cursor": change.revision, "event": event})
        .to_string()
        .into()
}
