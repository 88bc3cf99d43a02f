//! Session headers in the key-value bucket, one key per session (the subject token).
//!
//! The bucket keeps a few revisions of every header, each stored with the change that made
//! it, so its stream doubles as the durable, ordered lifecycle feed.

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::kv::{CreateErrorKind, UpdateErrorKind};
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use bytes::Bytes;
use futures::StreamExt;

use super::feed::{BoxStream, ConsumerGuard, Feed, RawFeed};
use super::{Store, StoreError, subjects, unavailable};
use crate::sessions::model::{Change, Session, SessionId, SessionRecord};

#[derive(Debug, thiserror::Error)]
pub enum CreateSessionFailure {
    #[error("a session with this id exists")]
    Exists,
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum ReplaceSessionFailure {
    /// Someone changed the header since it was read: read again and decide again.
    #[error("the session header changed since it was read")]
    Changed,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A header as read, with the bucket revision a compare-and-set must name.
#[derive(Debug, Clone)]
pub struct RevisedRecord {
    pub record: SessionRecord,
    pub revision: u64,
}

/// One message of the bucket's stream: a header version, in bucket order.
#[derive(Debug, Clone)]
pub struct CatalogChange {
    /// The bucket stream's sequence: the lifecycle cursor.
    pub revision: u64,
    pub record: SessionRecord,
}

/// One message of the bucket's stream as a catalog view applies it: every message counts,
/// delete and purge markers included, so a view's position reaches the bucket's newest.
#[derive(Debug, Clone)]
pub struct CatalogVersion {
    pub revision: u64,
    /// Messages the feed has yet to deliver after this one: 0 once a replay has caught up.
    pub pending: u64,
    /// `None` for a delete or purge marker (sessions are never deleted by us).
    pub record: Option<SessionRecord>,
}

/// One message of the bucket's stream as stored, undecoded: what a fresh catalog view's bulk
/// load reads, on its own thread.
#[derive(Debug, Clone)]
pub struct StoredVersion {
    pub revision: u64,
    /// Messages the replay has yet to deliver after this one: 0 once it has caught up.
    pub pending: u64,
    /// The session's id, from the message's subject (its key).
    pub id: Vec<u8>,
    /// A session header as JSON; empty for a delete or purge marker.
    pub value: Bytes,
}

/// Which bucket stream, in which incarnation and cluster: what a catalog view is a view of.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BucketSource {
    pub stream: String,
    /// The stream's creation time: a bucket deleted and created again has another.
    pub created: String,
    pub cluster: Option<String>,
}

/// The bucket stream as it is now.
#[derive(Debug, Clone)]
pub struct BucketState {
    pub source: BucketSource,
    /// The newest revision (stream sequence).
    pub last_revision: u64,
    /// Header versions stored.
    pub messages: u64,
}

/// Set on a bucket's delete and purge markers only.
const KV_OPERATION_HEADER: &str = "KV-Operation";

fn decode(value: &[u8]) -> Result<SessionRecord, StoreError> {
    serde_json::from_slice(value)
        .map_err(|err| StoreError::Corrupt(format!("session header: {err}")))
}

fn encode(record: &SessionRecord) -> Bytes {
    // Plain strings, numbers and maps always serialize.
    Bytes::from(serde_json::to_vec(record).unwrap_or_default())
}

impl Store {
    /// Creates the header only if no session has this id: the bucket's create (or, over a
    /// deleted session's tombstone, a compare-and-set on it) is atomic, so of two racing
    /// creates exactly one wins, on any gateway.
    pub async fn create_session(
        &self,
        record: &SessionRecord,
    ) -> Result<u64, CreateSessionFailure> {
        let bucket = self.usable_sessions_bucket()?;
        let incarnation = self.incarnation();
        let key = subjects::token(&record.session.id);
        let created = match bucket.create(&key, encode(record)).await {
            Ok(revision) => revision,
            Err(err) if err.kind() == CreateErrorKind::AlreadyExists => {
                let Some(tombstone) = self.header(&record.session.id).await? else {
                    return Err(CreateSessionFailure::Exists);
                };
                // Only its last owner may take a deleted id again: a gateway's cached owner
                // of an id then never goes stale.
                if tombstone.record.change != Change::Deleted
                    || tombstone.record.session.tenant() != record.session.tenant()
                {
                    return Err(CreateSessionFailure::Exists);
                }
                // What a delete may have left behind must not become the new session's log.
                self.purge_events(&tombstone.record.session).await?;
                match self.replace_session(record, tombstone.revision).await {
                    Ok(revision) => revision,
                    Err(ReplaceSessionFailure::Changed) => {
                        return Err(CreateSessionFailure::Exists);
                    }
                    Err(ReplaceSessionFailure::Store(err)) => return Err(err.into()),
                }
            }
            // The create was sent but its outcome is unknown: a retry may find it stored.
            Err(err) if err.kind() == CreateErrorKind::Ack => {
                return Err(StoreError::Timeout(err.to_string()).into());
            }
            Err(err) => return Err(unavailable(err).into()),
        };
        self.remember_shard(&record.session.id, record.session.shard, incarnation);
        Ok(created)
    }

    /// Deletes a session read at `revision`: its header becomes a tombstone (a compare-and-set,
    /// so a concurrent change wins and this answers `Changed`), then its events are purged.
    pub async fn delete_session(
        &self,
        tombstone: &SessionRecord,
        revision: u64,
    ) -> Result<(), ReplaceSessionFailure> {
        self.replace_session(tombstone, revision).await?;
        Ok(self.purge_events(&tombstone.session).await?)
    }

    async fn purge_events(&self, session: &Session) -> Result<(), StoreError> {
        let placement = self.placement_on(&session.id, session.shard).await?;
        placement
            .stream
            .purge()
            .filter(&placement.subject)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// The session's header, read from the bucket stream's leader: a session created through
    /// any gateway is found at once, where a follower's copy may not hold it yet. A deleted
    /// session has none.
    pub async fn session(&self, id: &SessionId) -> Result<Option<RevisedRecord>, StoreError> {
        Ok(self
            .header(id)
            .await?
            .filter(|revised| revised.record.change != Change::Deleted))
    }

    /// The newest header version, a deleted session's tombstone included.
    async fn header(&self, id: &SessionId) -> Result<Option<RevisedRecord>, StoreError> {
        let bucket = self.usable_sessions_bucket()?;
        let key = subjects::bucket_key(&bucket.name, id);
        let incarnation = self.incarnation();
        let message = match self
            .sessions_stream
            .get_last_raw_message_by_subject(&key)
            .await
        {
            Ok(message) => message,
            Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(None),
            Err(err) => return Err(unavailable(err)),
        };
        // A delete or purge marker: the key has no value (we delete with tombstones instead).
        if message.headers.get(KV_OPERATION_HEADER).is_some() {
            return Ok(None);
        }
        let record = decode(&message.payload)?;
        self.remember_shard(id, record.session.shard, incarnation);
        Ok(Some(RevisedRecord {
            record,
            revision: message.sequence,
        }))
    }

    /// Replaces the header if it is still at `revision`: the compare-and-set behind PATCH and
    /// archive, correct across any number of gateways.
    pub async fn replace_session(
        &self,
        record: &SessionRecord,
        revision: u64,
    ) -> Result<u64, ReplaceSessionFailure> {
        let bucket = self.usable_sessions_bucket()?;
        match bucket
            .update(
                subjects::token(&record.session.id),
                encode(record),
                revision,
            )
            .await
        {
            Ok(revision) => Ok(revision),
            Err(err) if err.kind() == UpdateErrorKind::WrongLastRevision => {
                Err(ReplaceSessionFailure::Changed)
            }
            Err(err) if err.kind() == UpdateErrorKind::TimedOut => {
                Err(StoreError::Timeout(err.to_string()).into())
            }
            Err(err) => Err(unavailable(err).into()),
        }
    }

    /// The sessions bucket's name: what a catalog view's file is named after.
    pub fn sessions_bucket(&self) -> &str {
        &self.topology.sessions_bucket
    }

    /// The bucket's newest revision: a catalog that has seen it has seen every write so far.
    pub async fn catalog_revision(&self) -> Result<u64, StoreError> {
        Ok(self.catalog_bucket().await?.last_revision)
    }

    /// The bucket stream's identity and position, fresh from its leader.
    pub async fn catalog_bucket(&self) -> Result<BucketState, StoreError> {
        self.require_usable()?;
        // `kv::Store::status` answers from a cache; the bucket's stream info is fresh.
        let info = self.sessions_stream.get_info().await.map_err(unavailable)?;
        Ok(BucketState {
            source: BucketSource {
                stream: info.config.name.clone(),
                created: info.created.to_string(),
                cluster: info.cluster.and_then(|cluster| cluster.name),
            },
            last_revision: info.state.last_sequence,
            messages: info.state.messages,
        })
    }

    /// Every header change after `after_revision`, stored then live, in bucket order: the
    /// lifecycle feed.
    pub async fn follow_catalog(
        &self,
        after_revision: u64,
    ) -> Result<Feed<CatalogChange>, StoreError> {
        let (versions, consumer) = self.bucket_versions(after_revision).await?;
        let changes = versions.filter_map(|version| async move {
            match version {
                Ok(CatalogVersion {
                    revision,
                    record: Some(record),
                    ..
                }) => Some(Ok(CatalogChange { revision, record })),
                // Deletes and purges are not lifecycle events.
                Ok(_) => None,
                Err(err) => Some(Err(err)),
            }
        });
        Ok(Feed::new(Box::pin(changes), consumer))
    }

    /// Every message of the bucket's stream after `after_revision`, stored then live: what a
    /// catalog view applies. A replay of every version, not only each session's newest: a
    /// consumer delivering the last per subject costs the server a pass over every subject
    /// when it is created (seconds at millions of sessions), and a replay in order leaves the
    /// view a consistent prefix of the bucket at every revision, so a build resumes too.
    pub async fn catalog_versions(
        &self,
        after_revision: u64,
    ) -> Result<Feed<CatalogVersion>, StoreError> {
        let (versions, consumer) = self.bucket_versions(after_revision).await?;
        Ok(Feed::new(versions, consumer))
    }

    /// Every message of the bucket's stream, once, as stored: a fresh view's bulk load, which
    /// takes each version's id from its subject and decodes only the newest. The replay does
    /// not end: the reader stops at the version with nothing `pending`.
    pub async fn catalog_replay(&self) -> Result<Feed<StoredVersion>, StoreError> {
        self.require_usable()?;
        let RawFeed { messages, consumer } = self.replay_feed(&self.sessions_stream).await?;
        let keys = format!("$KV.{}.", self.topology.sessions_bucket);
        let versions = messages.map(move |message| {
            let message = message?;
            let id = message
                .subject
                .strip_prefix(keys.as_str())
                .and_then(subjects::id_of_token)
                .ok_or_else(|| {
                    StoreError::Corrupt(format!("a session key's subject: {}", message.subject))
                })?;
            Ok(StoredVersion {
                revision: message.stream_seq,
                pending: message.pending,
                id,
                value: message.payload,
            })
        });
        Ok(Feed::new(Box::pin(versions), consumer))
    }

    async fn bucket_versions(
        &self,
        after_revision: u64,
    ) -> Result<(BoxStream<CatalogVersion>, ConsumerGuard), StoreError> {
        self.require_usable()?;
        let deliver_policy = DeliverPolicy::ByStartSequence {
            start_sequence: after_revision + 1,
        };
        // No filter: the bucket's stream holds its keys only, and a filter, even one matching
        // every subject, has the server count what is pending subject by subject when the
        // consumer is created (longer than a request's timeout at 10M sessions).
        let config = pull::OrderedConfig {
            deliver_policy,
            ..Default::default()
        };
        let RawFeed { messages, consumer } =
            self.ordered_feed(&self.sessions_stream, config).await?;
        let versions = messages.map(|message| {
            let message = message?;
            // A delete or purge marker has no value.
            let record = if message.payload.is_empty() {
                None
            } else {
                Some(decode(&message.payload)?)
            };
            Ok(CatalogVersion {
                revision: message.stream_seq,
                pending: message.pending,
                record,
            })
        });
        Ok((Box::pin(versions), consumer))
    }
}
