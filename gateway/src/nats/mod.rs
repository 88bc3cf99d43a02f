//! JetStream adapter: the only module that imports `async_nats`.
//!
//! File-backed streams (one per shard) hold the sessions' events, one subject per session;
//! one key-value bucket holds the session headers, each naming its session's shard.
//! Everything else a gateway knows is a cache.

mod append;
mod batch;
mod catalog;
mod events;
mod feed;
mod live;
mod read;
mod replay;
mod search;
mod shards;
mod snapshots;
pub mod subjects;
mod system;
mod topology;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::{self, ErrorCode, kv, stream};
use tokio::sync::{OnceCell, Semaphore, watch};
use tracing::{info, warn};

use crate::config::NatsConfig;

pub use append::AppendFailure;
pub use batch::{BatchSlot, OpenBatch};
pub use catalog::{
    BucketSource, BucketState, CatalogChange, CatalogVersion, CreateSessionFailure,
    ReplaceSessionFailure, RevisedRecord, StoredVersion,
};
pub use events::{Head, PendingAppend, StoredEvent};
pub use feed::Feed;
pub use live::LiveEvents;
pub use replay::EventFeed;
pub use shards::{MAX_SHARDS, shard_for};
pub use system::{ServerFigures, StreamFigures, Traffic};
pub use topology::TopologyHealth;

/// How many groups of single appends one gateway publishes as atomic batches at once
/// (`Store::batch_slot`).
const CONCURRENT_GROUP_BATCHES: usize = 2;

/// With this many single appends in flight, JetStream is busy with appends it takes in
/// parallel, and a group gains nothing by becoming an atomic batch (`Store::batch_slot`).
const BUSY_WITH_SINGLES: usize = 4;

/// Header versions kept per session (JetStream's maximum): a lifecycle listener that resumes
/// late still sees up to this many changes of one session, not only the last.
const SESSION_HISTORY: i64 = 64;

/// Whether `url` is a NATS server address the client can dial (`nats://host:port`, `tls://…`,
/// or `host:port`), so a bad setting is refused at start instead of at the first reconnect.
pub fn check_server_url(url: &str) -> Result<(), String> {
    url.parse::<async_nats::ServerAddr>()
        .map(drop)
        .map_err(|err| err.to_string())
}

/// NATS could not do what was asked; the request may be retried.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("NATS is unavailable: {0}")]
    Unavailable(String),
    #[error("NATS did not answer in time: {0}")]
    Timeout(String),
    #[error("stored data is not what the gateway wrote: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Whether trying again later may succeed: anything but data the gateway cannot read.
    pub fn is_transient(&self) -> bool {
        !matches!(self, StoreError::Corrupt(_))
    }
}

/// The JetStream topology a gateway works on, as configured.
#[derive(Debug, Clone)]
struct Topology {
    stream: String,
    subject_prefix: String,
    sessions_bucket: String,
    replicas: usize,
    /// Event streams new sessions are placed on.
    shards: u32,
    duplicate_window: Duration,
    max_consumers: i32,
    max_age: Duration,
    max_bytes: i64,
    max_messages_per_subject: i64,
}

impl Topology {
    /// The bucket of session write-state snapshots, named after the sessions bucket.
    fn snapshots_bucket(&self) -> String {
        format!("{}_snapshots", self.sessions_bucket)
    }

    /// The settings a running deployment may change: replicas, dedupe window, retention,
    /// and the republishing live readers depend on.
    fn apply_settings(&self, shard: u32, config: &mut stream::Config) {
        config.republish = Some(stream::Republish {
            source: format!("{}.>", self.subject_prefix(shard)),
            destination: format!("{}.>", self.live_prefix(shard)),
            headers_only: false,
        });
        // Group commits and batch appends publish atomic batches.
        config.allow_atomic_publish = true;
        config.num_replicas = self.replicas;
        config.duplicate_window = self.duplicate_window;
        config.max_age = self.max_age;
        config.max_bytes = self.max_bytes;
        config.max_messages_per_subject = self.max_messages_per_subject;
    }
}

pub struct Store {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    /// Each session's shard, and each shard's stream.
    shards: shards::Shards,
    /// Shards whose streams are kept in place and reported: the configured ones, and any
    /// more found at start (left by a gateway configured with more).
    known_shards: AtomicU32,
    /// The stream behind the sessions bucket: the catalog's history and lifecycle feed.
    sessions_stream: stream::Stream<()>,
    /// Set once the stream and the bucket exist; until then every operation is a 503.
    sessions: OnceCell<kv::Store>,
    /// Set with `sessions`: write-state snapshots, a cache like every other.
    snapshots: OnceCell<kv::Store>,
    topology: Topology,
    /// How long any single NATS exchange may take.
    timeout: Duration,
    /// Bumped whenever republished messages may have been lost (a reconnect, a slow
    /// subscription), so live feeds check their sessions' heads.
    live_checks: watch::Sender<u64>,
    topology_health: watch::Sender<TopologyHealth>,
    /// Bumped when the stream or a bucket turns out to have been created anew.
    incarnation: watch::Sender<u64>,
    /// Places for atomic batches that only speed appends up (`batch_slot`).
    batch_slots: Arc<Semaphore>,
    /// Single appends being published now, from every session.
    appends_in_flight: AtomicUsize,
}

impl Store {
    /// Starts connecting in the background: a gateway comes up, and says it is not ready,
    /// while NATS is still down.
    pub async fn connect(config: &NatsConfig) -> Result<Store, StoreError> {
        let addresses = config
            .urls
            .iter()
            .map(|url| url.parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| StoreError::Unavailable(err.to_string()))?;
        let live_checks = watch::Sender::new(0u64);
        let lost_messages = live_checks.clone();
        let mut options = async_nats::ConnectOptions::new()
            .name("starcite-gateway")
            .retry_on_initial_connect()
            .max_reconnects(None)
            // Notice a silent network partition in seconds, not the default two minutes.
            .ping_interval(Duration::from_secs(10))
            .connection_timeout(config.timeout)
            .request_timeout(Some(config.timeout))
            .event_callback(move |event| {
                let lost_messages = lost_messages.clone();
                async move {
                match event {
                    async_nats::Event::Connected => {
                        info!("connected to NATS");
                        lost_messages.send_modify(|checks| *checks += 1);
                    }
                    async_nats::Event::SlowConsumer(_) => {
                        warn!("a NATS subscription fell behind; live feeds re-read from the stream");
                        lost_messages.send_modify(|checks| *checks += 1);
                    }
                    async_nats::Event::Disconnected => {
                        warn!("disconnected from NATS; reconnecting")
                    }
                    other => warn!(nats.event = %other, "NATS connection event: {other}"),
                }
                }
            });
        // Both files are read now, so a wrong path stops start-up with its name instead of
        // failing every reconnect in the background.
        if let Some(path) = &config.creds {
            options = options.credentials_file(path).await.map_err(|err| {
                StoreError::Unavailable(format!("STARCITE_NATS_CREDS (or --nats-creds): {err}"))
            })?;
        }
        if let Some(path) = &config.tls_ca {
            let unusable = |reason: String| {
                StoreError::Unavailable(format!(
                    "STARCITE_NATS_TLS_CA (or --nats-tls-ca): `{}`: {reason}",
                    path.display()
                ))
            };
            let bundle = std::fs::read_to_string(path).map_err(|err| unusable(err.to_string()))?;
            if !bundle.contains("-----BEGIN CERTIFICATE-----") {
                return Err(unusable("no PEM certificate in it".into()));
            }
            // A private CA only makes sense with TLS: never fall back to plain text.
            options = options
                .add_root_certificates(path.clone())
                .require_tls(true);
        }
        let client = options
            .connect(addresses)
            .await
            .map_err(|err| StoreError::Unavailable(err.to_string()))?;
        let jetstream = jetstream::ContextBuilder::new()
            .timeout(config.timeout)
            .build(client.clone());
        let sessions_stream = jetstream
            .get_stream_no_info(format!("KV_{}", config.sessions_bucket))
            .await
            .map_err(|err| StoreError::Unavailable(err.to_string()))?;
        let topology = Topology {
            stream: config.stream.clone(),
            subject_prefix: config.subject_prefix.clone(),
            sessions_bucket: config.sessions_bucket.clone(),
            replicas: config.stream_replicas,
            shards: config.stream_shards.max(1),
            duplicate_window: config.duplicate_window,
            max_consumers: config.stream_max_consumers,
            // JetStream's "no limit" values.
            max_age: config.retention_max_age.unwrap_or_default(),
            max_bytes: config.retention_max_bytes.unwrap_or(-1),
            max_messages_per_subject: config.retention_max_events_per_session.unwrap_or(-1),
        };
        Ok(Store {
            client,
            jetstream,
            shards: shards::Shards::default(),
            known_shards: AtomicU32::new(topology.shards),
            sessions_stream,
            sessions: OnceCell::new(),
            snapshots: OnceCell::new(),
            topology,
            timeout: config.timeout,
            live_checks,
            topology_health: watch::Sender::new(TopologyHealth::Starting),
            incarnation: watch::Sender::new(0),
            batch_slots: Arc::new(Semaphore::new(CONCURRENT_GROUP_BATCHES)),
            appends_in_flight: AtomicUsize::new(0),
        })
    }

    /// Creates the stream and the bucket, or brings an existing stream's settings in line.
    pub async fn ensure_topology(&self) -> Result<(), StoreError> {
        for shard in 0..self.topology.shards {
            self.ensure_events_stream(shard).await?;
        }
        self.adopt_more_shards().await?;
        let snapshots = self.ensure_snapshots_bucket().await?;
        let _ = self.snapshots.set(snapshots);
        let sessions = self.ensure_sessions_bucket().await?;
        // A second caller racing here got the same bucket; either value will do.
        let _ = self.sessions.set(sessions);
        info!(
            nats.stream = %self.topology.stream,
            nats.bucket = %self.topology.sessions_bucket,
            "JetStream stream and bucket are ready"
        );
        Ok(())
    }

    /// Whether retention may drop a session's oldest events.
    pub fn drops_events(&self) -> bool {
        let topology = &self.topology;
        !topology.max_age.is_zero()
            || topology.max_bytes >= 0
            || topology.max_messages_per_subject >= 0
    }

    /// Ready means connected now and the topology in place.
    pub fn is_ready(&self) -> bool {
        self.sessions.initialized()
            && self.client.connection_state() == State::Connected
            && self.topology_health() == TopologyHealth::Ready
    }

    /// Shards after the configured ones whose streams exist (a gateway configured with more
    /// shards made them): their sessions stay where they are, so their streams are kept in
    /// place and reported too.
    async fn adopt_more_shards(&self) -> Result<(), StoreError> {
        let mut shard = self.known_shards.load(Ordering::Relaxed);
        while shard < MAX_SHARDS {
            match self
                .jetstream
                .get_stream(self.topology.stream_name(shard))
                .await
            {
                Ok(_) => {}
                Err(err)
                    if matches!(err.kind(), GetStreamErrorKind::JetStream(ref js)
                        if js.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
                {
                    return Ok(());
                }
                Err(err) => return Err(unavailable(err)),
            }
            self.ensure_events_stream(shard).await?;
            shard += 1;
            self.known_shards.fetch_max(shard, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The shards whose streams are kept in place: 0 up to this.
    fn known_shards(&self) -> u32 {
        self.known_shards.load(Ordering::Relaxed)
    }

    async fn ensure_events_stream(&self, shard: u32) -> Result<(), StoreError> {
        let topology = &self.topology;
        let name = topology.stream_name(shard);
        match self.jetstream.get_stream(&name).await {
            Ok(mut existing) => {
                let current = existing.cached_info().config.clone();
                let mut wanted = current.clone();
                topology.apply_settings(shard, &mut wanted);
                if wanted != current {
                    info!(nats.stream = %name, "updating the events stream's settings");
                    self.jetstream
                        .update_stream(wanted)
                        .await
                        .map_err(unavailable)?;
                }
                existing.info().await.map_err(unavailable)?;
                Ok(())
            }
            // Not found, or NATS is down: creating either succeeds or fails loudly.
            Err(_) => self.create_events_stream(shard).await,
        }
    }

    async fn create_events_stream(&self, shard: u32) -> Result<(), StoreError> {
        let topology = &self.topology;
        let mut config = stream::Config {
            name: topology.stream_name(shard),
            description: Some("Starcite session events, one subject per session".to_owned()),
            subjects: vec![format!("{}.>", topology.subject_prefix(shard))],
            storage: stream::StorageType::File,
            max_consumers: topology.max_consumers,
            allow_direct: true,
            // Events are never deleted one by one: a hole would break the gapless promise.
            deny_delete: true,
            ..Default::default()
        };
        topology.apply_settings(shard, &mut config);
        self.jetstream
            .create_stream(config)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn ensure_sessions_bucket(&self) -> Result<kv::Store, StoreError> {
        self.ensure_bucket(kv::Config {
            bucket: self.topology.sessions_bucket.clone(),
            description: "Starcite session headers".to_owned(),
            history: SESSION_HISTORY,
            storage: stream::StorageType::File,
            num_replicas: self.topology.replicas,
            ..Default::default()
        })
        .await
    }

    /// The bucket `config` names, created as configured if it does not exist yet.
    async fn ensure_bucket(&self, config: kv::Config) -> Result<kv::Store, StoreError> {
        if let Ok(bucket) = self.jetstream.get_key_value(&config.bucket).await {
            return Ok(bucket);
        }
        self.jetstream
            .create_key_value(config)
            .await
            .map_err(unavailable)
    }

    /// Fails fast while NATS is disconnected or the stream and buckets are not set up yet,
    /// instead of letting a request wait for its timeout.
    fn require_usable(&self) -> Result<(), StoreError> {
        self.usable_sessions_bucket().map(|_| ())
    }

    /// The sessions bucket, once NATS is connected and the topology is set up; fails fast
    /// otherwise, like `require_usable`.
    fn usable_sessions_bucket(&self) -> Result<&kv::Store, StoreError> {
        if self.client.connection_state() != State::Connected {
            return Err(StoreError::Unavailable("not connected to NATS".to_owned()));
        }
        self.sessions.get().ok_or_else(|| {
            StoreError::Unavailable("the JetStream stream is not set up yet".to_owned())
        })
    }
}

/// Bounds a NATS exchange that has no deadline of its own: a send into the client's command
/// channel waits for as long as a reconnect takes, while the caller may hold a session's state.
async fn within<T>(
    timeout: Duration,
    what: &str,
    exchange: impl Future<Output = T>,
) -> Result<T, StoreError> {
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| StoreError::Timeout(format!("{what} took longer than {timeout:?}")))
}

fn unavailable(err: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(err.to_string())
}
