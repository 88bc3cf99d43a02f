//! Session write-state snapshots in their own key-value bucket, one key per session, so a
//! gateway new to a long session reads a snapshot and the few events after it instead of the
//! whole log. A snapshot is only ever a shortcut: the caller validates it against the stream.

use async_nats::jetstream::kv;
use async_nats::jetstream::stream;
use bytes::Bytes;

use super::{Store, StoreError, subjects, unavailable};
use crate::sessions::model::SessionId;

impl Store {
    pub(super) async fn ensure_snapshots_bucket(&self) -> Result<kv::Store, StoreError> {
        self.ensure_bucket(kv::Config {
            bucket: self.topology.snapshots_bucket(),
            description: "Starcite session write-state snapshots (a cache)".to_owned(),
            history: 1,
            storage: stream::StorageType::File,
            num_replicas: self.topology.replicas,
            ..Default::default()
        })
        .await
    }

    fn snapshots_bucket(&self) -> Result<&kv::Store, StoreError> {
        self.require_usable()?;
        self.snapshots.get().ok_or_else(|| {
            StoreError::Unavailable("the snapshots bucket is not set up yet".to_owned())
        })
    }

    /// The session's latest snapshot, if one was saved.
    pub async fn snapshot(&self, id: &SessionId) -> Result<Option<Bytes>, StoreError> {
        let key = self.snapshot_key(id).await?;
        let entry = live_entry(self.snapshots_bucket()?, key).await?;
        Ok(entry.map(|entry| entry.value))
    }

    /// Replaces the session's snapshot; any gateway's newest one is as good as another's.
    pub async fn save_snapshot(&self, id: &SessionId, snapshot: Bytes) -> Result<(), StoreError> {
        let key = self.snapshot_key(id).await?;
        self.snapshots_bucket()?
            .put(key, snapshot)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

impl Store {
    /// The session's key: its token, after its shard's number beyond shard 0. A snapshot names
    /// stream sequences of one shard's stream, so no two shards may ever share a key.
    async fn snapshot_key(&self, id: &SessionId) -> Result<String, StoreError> {
        let token = subjects::token(id);
        Ok(match self.shard_of(id).await? {
            0 => token,
            shard => format!("{shard}.{token}"),
        })
    }
}

/// The key's current value, if it has one (not deleted or purged).
async fn live_entry(bucket: &kv::Store, key: String) -> Result<Option<kv::Entry>, StoreError> {
    let entry = bucket.entry(key).await.map_err(|err| {
        if err.kind() == kv::EntryErrorKind::TimedOut {
            StoreError::Timeout(err.to_string())
        } else {
            unavailable(err)
        }
    })?;
    Ok(entry.filter(|entry| entry.operation == kv::Operation::Put))
}
