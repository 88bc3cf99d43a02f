//! Keeping the stream and buckets in place: created at start, then checked every few seconds
//! so that one deleted by an operator (or lost with a cluster's storage) is created again and
//! reported meanwhile, and so that every cache of the gateway learns that the log it describes
//! is gone. Each stream's creation time names its incarnation.

use std::time::Duration;

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::GetStreamErrorKind;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::{Store, StoreError};

/// How often the stream and buckets are checked once in place.
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// What `/health/ready` reports of the topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopologyHealth {
    /// Not created yet (NATS has not answered since the gateway started).
    Starting,
    Ready,
    /// A stream or bucket is gone; the gateway is creating it again.
    Missing(String),
}

/// Why a check failed.
enum CheckFailure {
    Missing(String),
    Store(StoreError),
}

impl Store {
    /// Creates the topology, then watches it for as long as the gateway runs.
    pub async fn maintain_topology(&self) {
        let mut delay = Duration::from_millis(100);
        loop {
            match self.ensure_topology().await {
                Ok(()) => break,
                Err(err) => {
                    warn!(error = %err, "JetStream is not ready yet, retrying in {delay:?}: {err}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        // The creation times of the stream and buckets last seen.
        let mut known = None;
        loop {
            // Shards made since by a gateway configured with more of them are kept too.
            if let Err(err) = self.adopt_more_shards().await {
                debug!("looking for more shards failed: {err}");
            }
            match self.identity().await {
                Ok(identity) => self.observe(&mut known, identity),
                Err(CheckFailure::Missing(what)) => {
                    warn!("{what} is missing; creating it again");
                    // What was cached is of a log that is gone: a new incarnation begins,
                    // whatever is created next.
                    if known.take().is_some() {
                        self.incarnation
                            .send_modify(|incarnation| *incarnation += 1);
                    }
                    self.topology_health
                        .send_replace(TopologyHealth::Missing(what));
                    if let Err(err) = self.ensure_topology().await {
                        warn!(error = %err, "could not create the topology again: {err}");
                    }
                    continue;
                }
                // NATS unreachable or electing a leader: readiness already says so.
                Err(CheckFailure::Store(err)) => debug!("the topology check failed: {err}"),
            }
            tokio::time::sleep(CHECK_EVERY).await;
        }
    }

    /// What `/health/ready` should say of the topology.
    pub fn topology_health(&self) -> TopologyHealth {
        self.topology_health.borrow().clone()
    }

    /// Changes whenever the stream or a bucket was found created anew: whatever was cached
    /// of the one before describes a log that no longer exists.
    pub fn incarnation(&self) -> u64 {
        *self.incarnation.borrow()
    }

    /// Fails when the stream or a bucket has been created anew since `incarnation`: a position
    /// read in the old log means nothing in the new one.
    pub fn same_log_as(&self, incarnation: u64) -> Result<(), StoreError> {
        if self.incarnation() == incarnation {
            Ok(())
        } else {
            Err(StoreError::Corrupt(
                "the stream or a bucket was created anew".into(),
            ))
        }
    }

    /// Tells of each new incarnation from now on (`changed`).
    pub fn incarnations(&self) -> watch::Receiver<u64> {
        self.incarnation.subscribe()
    }

    /// Records the streams' creation times in `known`; a change from those recorded before is
    /// a new incarnation (one missing in between was already counted as one). A stream seen for
    /// the first time, a shard adopted since, changes nothing.
    fn observe(&self, known: &mut Option<Vec<(String, String)>>, identity: Vec<(String, String)>) {
        let replaced = known.iter().flatten().any(|(name, created)| {
            identity
                .iter()
                .any(|(now, created_now)| now == name && created_now != created)
        });
        if replaced {
            warn!("the stream or a bucket was created anew; cached session states are dropped");
            self.incarnation
                .send_modify(|incarnation| *incarnation += 1);
        }
        *known = Some(identity);
        if self.topology_health() != TopologyHealth::Ready {
            info!("JetStream stream and buckets are in place");
            self.topology_health.send_replace(TopologyHealth::Ready);
        }
    }

    /// The creation times of every shard's events stream and both buckets' streams, by name.
    async fn identity(&self) -> Result<Vec<(String, String)>, CheckFailure> {
        let mut names: Vec<String> = (0..self.known_shards())
            .map(|shard| self.topology.stream_name(shard))
            .collect();
        names.push(format!("KV_{}", self.topology.sessions_bucket));
        names.push(format!("KV_{}", self.topology.snapshots_bucket()));
        let mut identity = Vec::with_capacity(names.len());
        for name in names {
            match self.jetstream.get_stream(&name).await {
                Ok(stream) => {
                    let created = stream.cached_info().created.to_string();
                    identity.push((name, created));
                }
                Err(err)
                    if matches!(err.kind(), GetStreamErrorKind::JetStream(ref js)
                        if js.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
                {
                    return Err(CheckFailure::Missing(format!("stream {name}")));
                }
                Err(err) => return Err(CheckFailure::Store(super::unavailable(err))),
            }
        }
        Ok(identity)
    }
}
