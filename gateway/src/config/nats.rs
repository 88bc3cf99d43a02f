//! Where the log lives: the NATS servers, how to reach them, and the JetStream topology.

use std::path::PathBuf;
use std::time::Duration;

use super::ConfigError;

#[derive(Debug, Clone, PartialEq)]
pub struct NatsConfig {
    /// NATS servers to connect to; several for a cluster.
    pub urls: Vec<String>,
    /// A NATS credentials file (user JWT and nkey seed) for servers that require one.
    pub creds: Option<PathBuf>,
    /// PEM CA bundle that signed the NATS servers' certificates; setting it requires TLS.
    pub tls_ca: Option<PathBuf>,
    /// How long to wait for any NATS reply before answering 503 `nats_timeout`.
    pub timeout: Duration,
    /// The JetStream stream that holds every session's events.
    pub stream: String,
    /// Subject prefix of the events stream; a session's events go to `<prefix>.<session token>`.
    pub subject_prefix: String,
    /// The JetStream key-value bucket that holds session headers.
    pub sessions_bucket: String,
    /// Replicas of the stream and the bucket: 1 for one server, 3 for a production cluster.
    pub stream_replicas: usize,
    /// Event streams new sessions are spread over by a hash of their id; each session stays on
    /// the one its header names, so changing it moves nothing.
    pub stream_shards: u32,
    /// How long JetStream remembers a `Nats-Msg-Id` for dedupe.
    pub duplicate_window: Duration,
    /// The most consumers the events stream allows; a tail borrows one only while it replays.
    pub stream_max_consumers: i32,
    /// Retention, applied by JetStream: events older than this are dropped (`None`: kept).
    pub retention_max_age: Option<Duration>,
    /// Retention: the stream's size limit in bytes; the oldest events go first (`None`: none).
    pub retention_max_bytes: Option<i64>,
    /// Retention: at most this many events are kept per session (`None`: all).
    pub retention_max_events_per_session: Option<i64>,
}

impl Default for NatsConfig {
    fn default() -> NatsConfig {
        NatsConfig {
            urls: vec!["nats://127.0.0.1:4222".to_owned()],
            creds: None,
            tls_ca: None,
            timeout: Duration::from_secs(3),
            stream: "STARCITE_EVENTS".to_owned(),
            subject_prefix: "starcite.events".to_owned(),
            sessions_bucket: "starcite_sessions".to_owned(),
            stream_replicas: 1,
            stream_shards: 1,
            duplicate_window: Duration::from_secs(120),
            stream_max_consumers: 10_000,
            retention_max_age: None,
            retention_max_bytes: None,
            retention_max_events_per_session: None,
        }
    }
}

impl NatsConfig {
    /// JetStream refuses a stream whose duplicate window outlasts its retention age.
    pub(super) fn check_retention(&self) -> Result<(), ConfigError> {
        match self.retention_max_age {
            Some(age) if age < self.duplicate_window => Err(ConfigError::Invalid {
                variable: "STARCITE_RETENTION_MAX_AGE",
                flag: "--retention-max-age",
                reason: format!(
                    "must be at least the duplicate window ({})",
                    humantime::format_duration(self.duplicate_window)
                ),
            }),
            _ => Ok(()),
        }
    }
}
