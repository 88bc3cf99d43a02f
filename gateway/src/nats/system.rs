//! What NATS says about itself and about each shard's stream and the bucket, for the system
//! page and `/metrics`.

use async_nats::connection::State;
use async_nats::jetstream::stream;

use super::{Store, StoreError, unavailable};

#[derive(Debug, Clone)]
pub struct ServerFigures {
    pub connected: bool,
    pub server_name: String,
    pub version: String,
    pub address: String,
    /// Other servers this client may fail over to (the cluster, as announced).
    pub peers: Vec<String>,
}

/// The NATS connection's state and what went through it, since the gateway started.
#[derive(Debug, Clone, Copy, Default)]
pub struct Traffic {
    pub connected: bool,
    /// Connections made, the first included.
    pub connects: u64,
    pub sent_bytes: u64,
    pub received_bytes: u64,
    pub sent_messages: u64,
    pub received_messages: u64,
}

#[derive(Debug, Clone)]
pub struct StreamFigures {
    pub name: String,
    /// The events shard the stream holds (0 for the sessions bucket's).
    pub shard: u32,
    pub messages: u64,
    pub bytes: u64,
    pub subjects: u64,
    pub consumers: usize,
    pub replicas: usize,
    pub leader: Option<String>,
    pub cluster_peers: Vec<String>,
    /// The replicas other than the leader, as the leader sees them.
    pub followers: Vec<FollowerFigures>,
}

#[derive(Debug, Clone)]
pub struct FollowerFigures {
    /// The server's name.
    pub name: String,
    /// Caught up with the leader.
    pub current: bool,
    /// Considered offline by the group.
    pub offline: bool,
    /// Operations it is behind the leader.
    pub lag: u64,
}

impl Store {
    pub fn server(&self) -> ServerFigures {
        let info = self.client.server_info();
        ServerFigures {
            connected: self.client.connection_state() == State::Connected,
            server_name: info.server_name,
            version: info.version,
            address: format!("{}:{}", info.host, info.port),
            peers: info.connect_urls,
        }
    }

    /// Read from the client's own counters: no call to NATS.
    pub fn traffic(&self) -> Traffic {
        let statistics = self.client.statistics();
        let relaxed = std::sync::atomic::Ordering::Relaxed;
        Traffic {
            connected: self.client.connection_state() == State::Connected,
            connects: statistics.connects.load(relaxed),
            sent_bytes: statistics.out_bytes.load(relaxed),
            received_bytes: statistics.in_bytes.load(relaxed),
            sent_messages: statistics.out_messages.load(relaxed),
            received_messages: statistics.in_messages.load(relaxed),
        }
    }

    /// Each shard's events stream's figures, shard 0 first, and the sessions bucket's. The
    /// shards are asked at once, and one that does not answer (electing a leader) is left out
    /// rather than hiding the others.
    pub async fn storage(&self) -> Result<(Vec<StreamFigures>, StreamFigures), StoreError> {
        self.require_usable()?;
        let shard_figures = (0..self.known_shards()).map(|shard| async move {
            let stream = self.events_stream(shard).await?;
            let info = stream.get_info().await.map_err(unavailable)?;
            Ok::<_, StoreError>(figures(shard, info))
        });
        let (shards, sessions) = tokio::join!(
            futures::future::join_all(shard_figures),
            self.sessions_stream.get_info()
        );
        let shards = shards.into_iter().filter_map(Result::ok).collect();
        Ok((shards, figures(0, sessions.map_err(unavailable)?)))
    }
}

fn figures(shard: u32, info: stream::Info) -> StreamFigures {
    let cluster = info.cluster.unwrap_or_default();
    StreamFigures {
        name: info.config.name,
        shard,
        messages: info.state.messages,
        bytes: info.state.bytes,
        subjects: info.state.subjects_count,
        consumers: info.state.consumer_count,
        replicas: info.config.num_replicas,
        leader: cluster.leader,
        cluster_peers: cluster
            .replicas
            .iter()
            .map(|peer| peer.name.clone())
            .collect(),
        followers: cluster
            .replicas
            .into_iter()
            .map(|peer| FollowerFigures {
                name: peer.name,
                current: peer.current,
                offline: peer.offline,
                lag: peer.lag.unwrap_or_default(),
            })
            .collect(),
    }
}
