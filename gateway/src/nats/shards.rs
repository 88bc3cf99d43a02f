//! Sessions spread over several event streams (shards), so that appends are not all led by
//! one stream leader.
//!
//! A new session is placed by a hash of its id that never changes (FNV-1a), and its header
//! records the shard; every later operation reads the shard from the header, never from the
//! hash, so changing the number of shards moves no session. Shard 0 is the stream, subjects
//! and live subjects of a deployment without shards, unchanged.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_nats::jetstream::stream;
use lru::LruCache;

use super::{Store, StoreError, Topology, subjects, unavailable};
use crate::sessions::model::SessionId;

/// The most shards a deployment may have: it bounds the streams a gateway watches and the
/// values of the metrics' `stream` label.
pub const MAX_SHARDS: u32 = 256;

/// Sessions whose shard a gateway remembers: a shard never changes, so an entry is only ever
/// dropped for room, and costs one header read to learn again.
const REMEMBERED_SHARDS: usize = 100_000;

/// The shard a new session with this id goes to, out of `shards`: FNV-1a of the id's bytes, a
/// hash fixed by its definition, so every gateway of every version places an id alike.
pub fn shard_for(id: &SessionId, shards: u32) -> u32 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = id.as_str().bytes().fold(OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    });
    // Shards are at most `MAX_SHARDS`, so the remainder always fits.
    u32::try_from(hash % u64::from(shards.max(1))).unwrap_or(0)
}

/// Where one session's events are: its shard's stream and its subject in it.
pub(super) struct Placement {
    pub stream: stream::Stream<()>,
    pub stream_name: String,
    pub subject: String,
}

/// The shard of each session seen lately, and a handle on each shard's stream.
pub(super) struct Shards {
    /// The store's incarnation the entries were learnt in: a bucket created anew may place the
    /// same id elsewhere.
    remembered: Mutex<(u64, LruCache<SessionId, u32>)>,
    streams: Mutex<HashMap<u32, stream::Stream<()>>>,
}

impl Default for Shards {
    fn default() -> Shards {
        let capacity = NonZeroUsize::new(REMEMBERED_SHARDS).unwrap_or(NonZeroUsize::MIN);
        Shards {
            remembered: Mutex::new((0, LruCache::new(capacity))),
            streams: Mutex::new(HashMap::new()),
        }
    }
}

impl Topology {
    /// The stream of shard `shard`: shard 0 keeps the configured name.
    pub(super) fn stream_name(&self, shard: u32) -> String {
        match shard {
            0 => self.stream.clone(),
            _ => format!("{}_{shard}", self.stream),
        }
    }

    /// The subject prefix of shard `shard`'s stream. A sibling token (`<prefix>_<shard>`), not
    /// a child, so no shard's subjects overlap another's.
    pub(super) fn subject_prefix(&self, shard: u32) -> String {
        match shard {
            0 => self.subject_prefix.clone(),
            _ => format!("{}_{shard}", self.subject_prefix),
        }
    }

    /// Where shard `shard`'s stream republishes each stored event for live readers: outside
    /// every stream's subjects.
    pub(super) fn live_prefix(&self, shard: u32) -> String {
        format!("{}_live", self.subject_prefix(shard))
    }
}

impl Store {
    /// The shard a session created now is placed on.
    pub fn shard_for_new_session(&self, id: &SessionId) -> u32 {
        shard_for(id, self.topology.shards)
    }

    /// Where the session's events are, from the shard its header names.
    pub(super) async fn placement(&self, id: &SessionId) -> Result<Placement, StoreError> {
        let shard = self.shard_of(id).await?;
        self.placement_on(id, shard).await
    }

    /// The subject the session's events are published on: all an append needs, so it costs
    /// no stream handle.
    pub(super) async fn subject_of(&self, id: &SessionId) -> Result<String, StoreError> {
        let shard = self.shard_of(id).await?;
        Ok(self.subject_on(id, shard))
    }

    pub(super) fn subject_on(&self, id: &SessionId, shard: u32) -> String {
        subjects::events_subject(&self.topology.subject_prefix(shard), id)
    }

    /// Where the session's events are, when its shard is known.
    pub(super) async fn placement_on(
        &self,
        id: &SessionId,
        shard: u32,
    ) -> Result<Placement, StoreError> {
        Ok(Placement {
            stream: self.events_stream(shard).await?,
            stream_name: self.topology.stream_name(shard),
            subject: self.subject_on(id, shard),
        })
    }

    /// Shard `shard`'s stream, which may be one this gateway was not configured with: a
    /// session placed by a gateway with more shards is served all the same.
    pub(super) async fn events_stream(&self, shard: u32) -> Result<stream::Stream<()>, StoreError> {
        if let Some(stream) = lock(&self.shards.streams).get(&shard) {
            return Ok(stream.clone());
        }
        let stream = self
            .jetstream
            .get_stream_no_info(self.topology.stream_name(shard))
            .await
            .map_err(unavailable)?;
        lock(&self.shards.streams).insert(shard, stream.clone());
        Ok(stream)
    }

    /// The session's shard, as its header names it. A session without a header has no events
    /// anywhere; shard 0 answers for it, and is not remembered, as the id may be created later.
    pub(super) async fn shard_of(&self, id: &SessionId) -> Result<u32, StoreError> {
        if let Some(shard) = self.remembered_shard(id) {
            return Ok(shard);
        }
        // Reading the header remembers its shard.
        let shard = self
            .session(id)
            .await?
            .map_or(0, |revised| revised.record.session.shard);
        if shard >= MAX_SHARDS {
            return Err(StoreError::Corrupt(format!(
                "the header of session {id} names shard {shard}"
            )));
        }
        Ok(shard)
    }

    fn remembered_shard(&self, id: &SessionId) -> Option<u32> {
        let incarnation = self.incarnation();
        let mut remembered = lock(&self.shards.remembered);
        if remembered.0 != incarnation {
            *remembered = (incarnation, LruCache::new(remembered.1.cap()));
        }
        remembered.1.get(id).copied()
    }

    /// Notes the shard a header names, read in `incarnation`: one read from a log replaced
    /// since is not remembered.
    pub(super) fn remember_shard(&self, id: &SessionId, shard: u32, incarnation: u64) {
        let mut remembered = lock(&self.shards.remembered);
        if remembered.0 == incarnation && self.incarnation() == incarnation {
            remembered.1.put(id.clone(), shard);
        }
    }
}

/// A poisoned lock still holds a consistent cache: every update is a single insert.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(raw: &str) -> SessionId {
        SessionId::parse(raw).unwrap()
    }

    /// Placement is part of the stored data's meaning: a gateway of another version must
    /// place an id where this one does, so the hash is pinned.
    #[test]
    fn placement_keeps_its_hash() {
        assert_eq!(shard_for(&id("ses_1"), 1), 0);
        let placed: Vec<u32> = ["ses_1", "ses_2", "ses_3", "a", "b"]
            .iter()
            .map(|raw| shard_for(&id(raw), 4))
            .collect();
        assert_eq!(placed, [2, 3, 0, 0, 1]);
    }

    #[test]
    fn placement_spreads_ids() {
        let mut counts = [0u32; 4];
        for n in 0..4000 {
            counts[shard_for(&id(&format!("ses_{n}")), 4) as usize] += 1;
        }
        assert!(counts.iter().all(|&count| count > 800), "{counts:?}");
    }
}
