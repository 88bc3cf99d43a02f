//! The gateway's Prometheus metrics: one registry and typed handles to everything in it.
//!
//! Whatever a request or an event touches is a handle made up front (a label value is an enum
//! variant, never a string from a request), so recording one is an atomic add or, for a
//! histogram, a short lock; nothing is allocated. Values that describe the gateway's state
//! (NATS, readiness, the catalog, storage, the process) are read when scraped, not kept up to
//! date. No label names a tenant, a session or a path: every label has a fixed set of values.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::nats::Traffic;

pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// A label whose values are a fixed set: the variants of an enum.
pub trait Label: Copy + 'static {
    /// The label's name.
    const NAME: &'static str;
    /// Every value, each at its own index.
    const ALL: &'static [Self];
    fn value(self) -> &'static str;
    fn index(self) -> usize;
}

macro_rules! label {
    ($(#[$doc:meta])* $name:ident as $label:literal { $($(#[$vdoc:meta])* $variant:ident = $value:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($(#[$vdoc])* $variant),+ }

        impl Label for $name {
            const NAME: &'static str = $label;
            const ALL: &'static [Self] = &[$($name::$variant),+];
            fn value(self) -> &'static str {
                match self { $($name::$variant => $value),+ }
            }
            fn index(self) -> usize {
                self as usize
            }
        }
    };
}

label! {
    /// What became of an event that reached a session's log.
    AppendOutcome as "outcome" {
        /// Committed to JetStream with a new seq.
        Appended = "appended",
        /// A retry of its producer's latest request: answered with the original seq.
        Deduped = "deduped",
        /// Refused by the session's rules (a 409 conflict), an unknown session, or too large
        /// for NATS; nothing was written.
        Rejected = "rejected",
        /// NATS was unavailable or did not confirm in time (a 503).
        Failed = "failed",
    }
}

label! {
    /// Why a commit refused by JetStream was decided again.
    Retry as "reason" {
        /// The session moved on (another gateway appended first): caught up and decided again.
        LostRace = "lost_race",
        /// JetStream already held this very decision: an earlier attempt whose acknowledgement
        /// timed out was stored after all (the client's retry after a 503 `nats_timeout`).
        Timeout = "timeout",
        /// Refused with nothing new on the stream (a replica behind, too many open batches).
        Transient = "transient",
        /// A group larger than NATS accepts, split into single appends.
        TooLarge = "too_large",
    }
}

label! {
    /// How a reader follows a log live.
    Transport as "transport" {
        /// A session tail over a WebSocket.
        WebSocket = "websocket",
        /// A session tail as Server-Sent Events (the admin console's live timeline too).
        Sse = "sse",
        /// A page of events that waits for the next one (`GET …/events?wait=N`).
        LongPoll = "long_poll",
        /// The lifecycle feed, over either.
        Lifecycle = "lifecycle",
    }
}

label! {
    /// Why a reader was told it does not continue right after its cursor.
    GapReason as "reason" {
        CursorExpired = "cursor_expired",
        ResumeInvalidated = "resume_invalidated",
    }
}

label! {
    /// Why a live stream ended.
    Disconnect as "reason" {
        /// Left its queue full too long (close 4002 / `overflow`), or took nothing for 30 s.
        SlowReader = "slow_reader",
        /// Its token expired (close 4001 / `token_expired`).
        TokenExpired = "token_expired",
        /// The gateway shut down (close 1001 / `going_away`).
        Shutdown = "shutdown",
        /// The client closed it or went away.
        Client = "client",
        /// Reading the log failed (close 1011 / `storage_error`).
        StorageError = "storage_error",
    }
}

label! {
    /// Why a request was refused authentication (401).
    AuthFailure as "reason" {
        /// No bearer token.
        Missing = "missing",
        /// Not exactly one `Authorization: Bearer <token>`.
        Malformed = "malformed",
        /// A token that does not verify: signature, key, issuer, audience, expiry, claims.
        Invalid = "invalid",
    }
}

label! {
    /// Which per-caller limit refused a request (429).
    Limit as "limit" {
        /// The tenant's append rate (`rate_limited`).
        AppendRate = "append_rate",
        /// The token holder's live streams (`too_many_tails`).
        TailsPerToken = "tails_per_token",
    }
}

label! {
    /// Which stream a storage figure describes.
    StreamRole as "stream" {
        /// The events stream.
        Events = "events",
        /// The stream behind the sessions bucket.
        Sessions = "sessions",
    }
}

/// One handle per value of a label, registered as one family.
pub struct ByLabel<L, M> {
    handles: Vec<M>,
    _label: std::marker::PhantomData<L>,
}

impl<L: Label, M: Clone> ByLabel<L, M> {
    pub fn get(&self, label: L) -> &M {
        &self.handles[label.index()]
    }
}

type OneLabel = [(&'static str, &'static str); 1];

fn by_label<L, M>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    family: Family<OneLabel, M, impl Fn() -> M + Send + Sync + 'static>,
) -> ByLabel<L, M>
where
    L: Label,
    M: Clone
        + std::fmt::Debug
        + EncodeMetric
        + prometheus_client::metrics::TypedMetric
        + Send
        + Sync
        + 'static,
{
    let handles = L::ALL
        .iter()
        .map(|label| family.get_or_create_owned(&[(L::NAME, label.value())]))
        .collect();
    registry.register(name, help, family);
    ByLabel {
        handles,
        _label: std::marker::PhantomData,
    }
}

fn counters<L: Label>(registry: &mut Registry, name: &str, help: &str) -> ByLabel<L, Counter> {
    by_label(
        registry,
        name,
        help,
        Family::new_with_constructor(Counter::default),
    )
}

fn gauges<L: Label>(registry: &mut Registry, name: &str, help: &str) -> ByLabel<L, Gauge> {
    by_label(
        registry,
        name,
        help,
        Family::new_with_constructor(Gauge::default),
    )
}

/// The labels of an HTTP request: its route template (a static string from the router, or
/// `unmatched`), its method and its status.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: &'static str,
    pub method: &'static str,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
    method: &'static str,
}

/// Request durations from well under a millisecond (an append on loopback) to seconds.
const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Events per commit: 1 for a single append, up to a batch of 1,000.
const GROUP_BUCKETS: [f64; 11] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1000.0,
];

pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    appends: ByLabel<AppendOutcome, Counter>,
    commit_duration: Histogram,
    group_commit_events: Histogram,
    retries: ByLabel<Retry, Counter>,
    live_streams: ByLabel<Transport, Gauge>,
    events_sent: ByLabel<Transport, Counter>,
    gaps: ByLabel<GapReason, Counter>,
    disconnects: ByLabel<Disconnect, Counter>,
    auth_failures: ByLabel<AuthFailure, Counter>,
    limited: ByLabel<Limit, Counter>,
    /// Shares the append route's latency histogram and the request counters, encoded only
    /// when the console's sampler asks for `totals` (never on a request's path).
    sampled: Registry,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let http_requests = Family::default();
        registry.register(
            "starcite_http_requests",
            "HTTP requests answered, by route template (`unmatched` for no route), method and \
             status",
            http_requests.clone(),
        );
        let http_duration: Family<RouteLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS));
        registry.register(
            "starcite_http_request_duration_seconds",
            "Time from a request's arrival to its response head, by route template and method \
             (for a live stream, until it starts)",
            http_duration.clone(),
        );
        let appends = counters(
            &mut registry,
            "starcite_appends",
            "Events that reached a session's log, by outcome (a batch counts each event)",
        );
        let commit_duration = Histogram::new(LATENCY_BUCKETS);
        registry.register(
            "starcite_append_commit_duration_seconds",
            "Time from sending a commit to JetStream (a conditional append, or an atomic \
             batch's first message; a streamed batch's last) to its acknowledgement",
            commit_duration.clone(),
        );
        let group_commit_events = Histogram::new(GROUP_BUCKETS);
        registry.register(
            "starcite_group_commit_events",
            "Events per acknowledged JetStream commit (1 for a single append)",
            group_commit_events.clone(),
        );
        let retries = counters(
            &mut registry,
            "starcite_append_retries",
            "Commits refused by JetStream and decided again, by reason",
        );
        let live_streams = gauges(
            &mut registry,
            "starcite_live_streams",
            "Live readers open now, by transport",
        );
        let events_sent = counters(
            &mut registry,
            "starcite_tail_events_sent",
            "Events written to live readers, by transport",
        );
        let gaps = counters(
            &mut registry,
            "starcite_tail_gaps",
            "Gaps announced to readers (tails and pages), by reason",
        );
        let disconnects = counters(
            &mut registry,
            "starcite_tail_disconnects",
            "Live streams ended, by reason",
        );
        let auth_failures = counters(
            &mut registry,
            "starcite_auth_failures",
            "Requests refused authentication (401), by reason",
        );
        let limited = counters(
            &mut registry,
            "starcite_rate_limited",
            "Requests refused by a per-caller limit (429), by limit",
        );
        let build = Family::<OneLabel, Gauge>::default();
        build
            .get_or_create(&[("version", env!("CARGO_PKG_VERSION"))])
            .set(1);
        registry.register(
            "starcite_build_info",
            "Always 1; the gateway's version as a label",
            build,
        );
        registry.register_collector(Box::new(ProcessCollector));
        let mut sampled = Registry::default();
        sampled.register(
            SAMPLED_LATENCY,
            "",
            http_duration.get_or_create_owned(&RouteLabels {
                route: APPEND_ROUTE,
                method: "POST",
            }),
        );
        sampled.register(SAMPLED_REQUESTS, "", http_requests.clone());
        Metrics {
            registry,
            http_requests,
            http_duration,
            appends,
            commit_duration,
            group_commit_events,
            retries,
            live_streams,
            events_sent,
            gaps,
            disconnects,
            auth_failures,
            limited,
            sampled,
        }
    }

    /// Every counter the console's charts follow, as totals since the gateway started; the
    /// sampler turns two of them into rates.
    pub fn totals(&self) -> Totals {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.sampled);
        let mut live = [0; 4];
        for (slot, transport) in live.iter_mut().zip(Transport::ALL) {
            *slot = u64::try_from(self.live_streams.get(*transport).get()).unwrap_or_default();
        }
        let mut totals = Totals {
            appended: self.appends.get(AppendOutcome::Appended).get(),
            delivered: Transport::ALL
                .iter()
                .map(|transport| self.events_sent.get(*transport).get())
                .sum(),
            live,
            ..Totals::default()
        };
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            if series.starts_with(SAMPLED_REQUESTS) && series.contains("status=\"5") {
                totals.server_errors += value as u64;
            } else if let Some(bound) = series
                .strip_prefix(SAMPLED_LATENCY)
                .and_then(|rest| rest.strip_prefix("_bucket{le=\""))
                .and_then(|rest| rest.strip_suffix("\"}"))
            {
                let bound = if bound == "+Inf" {
                    f64::INFINITY
                } else {
                    bound.parse().unwrap_or(f64::INFINITY)
                };
                totals.append_latency.push((bound, value as u64));
            }
        }
        totals
    }

    /// One HTTP request answered with `labels.status` after `elapsed`.
    pub fn http_request(&self, labels: &HttpLabels, elapsed: Duration) {
        self.http_requests.get_or_create(labels).inc();
        self.http_duration
            .get_or_create(&RouteLabels {
                route: labels.route,
                method: labels.method,
            })
            .observe(elapsed.as_secs_f64());
    }

    pub fn appends(&self, outcome: AppendOutcome, events: usize) {
        self.appends.get(outcome).inc_by(events as u64);
    }

    /// JetStream acknowledged a commit of `events` events, `elapsed` after it was sent.
    pub fn committed(&self, events: usize, elapsed: Duration) {
        self.commit_duration.observe(elapsed.as_secs_f64());
        self.group_commit_events.observe(events as f64);
    }

    pub fn retried(&self, reason: Retry) {
        self.retries.get(reason).inc();
    }

    pub fn gap(&self, reason: GapReason) {
        self.gaps.get(reason).inc();
    }

    pub fn auth_failed(&self, reason: AuthFailure) {
        self.auth_failures.get(reason).inc();
    }

    pub fn limited(&self, limit: Limit) {
        self.limited.get(limit).inc();
    }

    /// Counts one live stream over `transport` until the returned handle is dropped, and then
    /// its end.
    pub fn live_stream(self: &Arc<Self>, transport: Transport) -> LiveStream {
        self.live_streams.get(transport).inc();
        LiveStream {
            metrics: self.clone(),
            transport,
            ending: AtomicU8::new(NOT_ENDED),
        }
    }

    /// The registry in the Prometheus text format (version 0.0.4), followed by `state`.
    pub fn render(&self, state: State) -> String {
        let mut text = String::with_capacity(16 * 1024);
        let mut scraped = Registry::default();
        scraped.register_collector(Box::new(state));
        // Writing to a String cannot fail, and every name here is valid.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry);
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &scraped);
        text
    }
}

const APPEND_ROUTE: &str = "/v1/sessions/{id}/append";
const SAMPLED_LATENCY: &str = "append_latency";
const SAMPLED_REQUESTS: &str = "requests";

/// Totals since the gateway started, read by the console's sampler (`admin::history`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    /// Events committed with a new seq.
    pub appended: u64,
    /// Events written to live readers, every transport.
    pub delivered: u64,
    /// Live readers open now, by transport (indexed as `Transport::ALL`).
    pub live: [u64; 4],
    /// HTTP responses with a 5xx status.
    pub server_errors: u64,
    /// The append route's latency histogram: `(upper bound in seconds, cumulative count)`,
    /// ascending, the last bound infinite.
    pub append_latency: Vec<(f64, u64)>,
}

impl Metrics {
    /// Counts one long-poll (a page request that may wait) while the returned handle lives.
    pub fn long_poll(self: &Arc<Self>) -> LongPoll {
        self.live_streams.get(Transport::LongPoll).inc();
        LongPoll(self.clone())
    }
}

/// One long-poll in progress.
pub struct LongPoll(Arc<Metrics>);

impl LongPoll {
    /// The page answered `events` events.
    pub fn sent(&self, events: usize) {
        self.0
            .events_sent
            .get(Transport::LongPoll)
            .inc_by(events as u64);
    }
}

impl Drop for LongPoll {
    fn drop(&mut self) {
        self.0.live_streams.get(Transport::LongPoll).dec();
    }
}

const NOT_ENDED: u8 = u8::MAX;

/// One open live stream: counted in `starcite_live_streams` while it exists, and by the
/// reason it ended when dropped (`client` unless told otherwise).
pub struct LiveStream {
    metrics: Arc<Metrics>,
    transport: Transport,
    ending: AtomicU8,
}

impl LiveStream {
    /// `events` events were written to the reader.
    pub fn sent(&self, events: usize) {
        self.metrics
            .events_sent
            .get(self.transport)
            .inc_by(events as u64);
    }

    /// The reader was told of a gap.
    pub fn gap(&self, reason: GapReason) {
        self.metrics.gap(reason);
    }

    /// Says why the stream ends; the first reason given is the one counted.
    pub fn ends(&self, reason: Disconnect) {
        let _ = self.ending.compare_exchange(
            NOT_ENDED,
            reason.index() as u8,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
}

impl Drop for LiveStream {
    fn drop(&mut self) {
        self.metrics.live_streams.get(self.transport).dec();
        let ending = self.ending.load(Ordering::Relaxed);
        let reason = Disconnect::ALL
            .get(usize::from(ending))
            .copied()
            .unwrap_or(Disconnect::Client);
        self.metrics.disconnects.get(reason).inc();
    }
}

/// What the gateway's state is when scraped.
#[derive(Debug, Clone, Default)]
pub struct State {
    pub ready: bool,
    pub nats: Traffic,
    pub catalog_sessions: u64,
    /// The events stream's and the sessions bucket's figures, when NATS answered in time.
    pub storage: Vec<(StreamRole, StreamState)>,
}

#[derive(Debug, Clone, Default)]
pub struct StreamState {
    pub messages: u64,
    pub bytes: u64,
    pub subjects: u64,
    pub consumers: u64,
    /// Replicas configured.
    pub replicas: u64,
    /// Replicas caught up with the leader, the leader included.
    pub current_replicas: u64,
    /// Each follower's server name and how many operations it is behind the leader.
    pub follower_lag: Vec<(String, u64)>,
}

/// Writes one unlabelled metric.
fn encode_one(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: &impl EncodeMetric,
) -> std::fmt::Result {
    let metric_encoder = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(metric_encoder)
}

fn flag(value: bool) -> ConstGauge<i64> {
    ConstGauge::new(i64::from(value))
}

fn gauge(value: u64) -> ConstGauge<i64> {
    ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX))
}

impl Collector for State {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        encode_one(
            &mut encoder,
            "starcite_ready",
            "1 while /health/ready answers 200 (NATS connected, stream and buckets in place, \
             catalog loaded), else 0.",
            &flag(self.ready),
        )?;
        encode_one(
            &mut encoder,
            "starcite_catalog_sessions",
            "Sessions in this gateway's catalog index.",
            &gauge(self.catalog_sessions),
        )?;
        let nats = &self.nats;
        encode_one(
            &mut encoder,
            "starcite_nats_connected",
            "1 while connected to a NATS server, else 0.",
            &flag(nats.connected),
        )?;
        let counters: [(&str, &str, u64); 5] = [
            (
                "starcite_nats_reconnects",
                "Connections to NATS made again after the first.",
                nats.connects.saturating_sub(1),
            ),
            (
                "starcite_nats_sent_bytes",
                "Payload bytes sent to NATS.",
                nats.sent_bytes,
            ),
            (
                "starcite_nats_received_bytes",
                "Payload bytes received from NATS.",
                nats.received_bytes,
            ),
            (
                "starcite_nats_sent_messages",
                "Messages sent to NATS.",
                nats.sent_messages,
            ),
            (
                "starcite_nats_received_messages",
                "Messages received from NATS.",
                nats.received_messages,
            ),
        ];
        for (name, help, value) in counters {
            encode_one(&mut encoder, name, help, &ConstCounter::new(value))?;
        }
        if self.storage.is_empty() {
            return Ok(());
        }
        type Figure = fn(&StreamState) -> u64;
        let figures: [(&str, &str, Figure); 6] = [
            (
                "starcite_stream_messages",
                "Messages stored in the stream (`events`: events; `sessions`: header versions).",
                |stream| stream.messages,
            ),
            (
                "starcite_stream_bytes",
                "Bytes stored in the stream.",
                |stream| stream.bytes,
            ),
            (
                "starcite_stream_subjects",
                "Subjects in the stream (`events`: sessions with events).",
                |stream| stream.subjects,
            ),
            (
                "starcite_stream_consumers",
                "Consumers on the stream (replays in progress, catalog followers).",
                |stream| stream.consumers,
            ),
            (
                "starcite_stream_replicas",
                "Replicas the stream is configured with.",
                |stream| stream.replicas,
            ),
            (
                "starcite_stream_current_replicas",
                "Replicas caught up with the stream's leader, the leader included (0: no leader).",
                |stream| stream.current_replicas,
            ),
        ];
        for (name, help, figure) in figures {
            let mut metric_encoder = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for (role, stream) in &self.storage {
                let labels = [(StreamRole::NAME, role.value())];
                gauge(figure(stream)).encode(metric_encoder.encode_family(&labels)?)?;
            }
        }
        let mut metric_encoder = encoder.encode_descriptor(
            "starcite_stream_follower_lag",
            "Operations a follower replica is behind the stream's leader, by server (clustered \
             streams only).",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (role, stream) in &self.storage {
            for (peer, lag) in &stream.follower_lag {
                let labels = [(StreamRole::NAME, role.value()), ("peer", peer.as_str())];
                gauge(*lag).encode(metric_encoder.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// The process's own figures, read from `/proc` when scraped (Linux only; elsewhere there are
/// none), with the standard names.
#[derive(Debug)]
struct ProcessCollector;

/// Clock ticks per second in `/proc/<pid>/stat`: the kernel's `USER_HZ`, 100 on every Linux
/// architecture's user-space ABI.
const USER_HZ: f64 = 100.0;

#[derive(Debug, Default, PartialEq)]
struct ProcessState {
    cpu_seconds: f64,
    threads: u64,
    start_time_seconds: Option<f64>,
    virtual_memory_bytes: u64,
    resident_memory_bytes: Option<u64>,
    open_fds: Option<u64>,
    max_fds: Option<u64>,
}

impl ProcessState {
    fn read() -> Option<ProcessState> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let mut state = ProcessState::from_stat(&stat)?;
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            state.resident_memory_bytes = resident_bytes(&status);
        }
        state.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|entries| entries.count() as u64);
        if let Ok(limits) = std::fs::read_to_string("/proc/self/limits") {
            state.max_fds = max_open_files(&limits);
        }
        if let (Some(started), Ok(machine)) = (
            state.start_time_seconds,
            std::fs::read_to_string("/proc/stat"),
        ) {
            state.start_time_seconds = boot_time(&machine).map(|boot| boot + started);
        }
        Some(state)
    }

    /// The figures of `/proc/<pid>/stat`; the start time is then seconds after boot.
    fn from_stat(stat: &str) -> Option<ProcessState> {
        // The command name is in parentheses and may hold anything, parentheses included.
        let fields: Vec<&str> = stat
            .get(stat.rfind(')')? + 1..)?
            .split_whitespace()
            .collect();
        // Fields from the state (the 3rd of the line) on, numbered from 0 here.
        let number = |index: usize| fields.get(index)?.parse::<u64>().ok();
        let user_ticks = number(11)?;
        let system_ticks = number(12)?;
        Some(ProcessState {
            cpu_seconds: (user_ticks + system_ticks) as f64 / USER_HZ,
            threads: number(17)?,
            start_time_seconds: number(19).map(|ticks| ticks as f64 / USER_HZ),
            virtual_memory_bytes: number(20)?,
            ..ProcessState::default()
        })
    }
}

/// `VmRSS` of `/proc/<pid>/status`, in bytes.
fn resident_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The soft limit on open files in `/proc/<pid>/limits` (none when unlimited).
fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line.get("Max open files".len()..)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `btime` of `/proc/stat`: when the machine booted, in seconds since the epoch.
fn boot_time(machine: &str) -> Option<f64> {
    let line = machine.lines().find(|line| line.starts_with("btime "))?;
    line.get(6..)?
        .trim()
        .parse::<u64>()
        .ok()
        .map(|at| at as f64)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let Some(process) = ProcessState::read() else {
            return Ok(());
        };
        encode_one(
            &mut encoder,
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            &ConstCounter::new(process.cpu_seconds),
        )?;
        if let Some(bytes) = process.resident_memory_bytes {
            encode_one(
                &mut encoder,
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                &gauge(bytes),
            )?;
        }
        encode_one(
            &mut encoder,
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            &gauge(process.virtual_memory_bytes),
        )?;
        if let Some(open) = process.open_fds {
            encode_one(
                &mut encoder,
                "process_open_fds",
                "Number of open file descriptors.",
                &gauge(open),
            )?;
        }
        if let Some(max) = process.max_fds {
            encode_one(
                &mut encoder,
                "process_max_fds",
                "Maximum number of open file descriptors.",
                &gauge(max),
            )?;
        }
        encode_one(
            &mut encoder,
            "process_threads",
            "Number of OS threads in the process.",
            &gauge(process.threads),
        )?;
        if let Some(started) = process.start_time_seconds {
            encode_one(
                &mut encoder,
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                &ConstGauge::new(started),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_label_value_is_exported_from_the_start() {
        let metrics = Metrics::new();
        let text = metrics.render(State::default());
        for line in [
            "# TYPE starcite_appends_total counter",
            "starcite_appends_total{outcome=\"appended\"} 0",
            "starcite_appends_total{outcome=\"rejected\"} 0",
            "starcite_append_retries_total{reason=\"lost_race\"} 0",
            "starcite_append_retries_total{reason=\"timeout\"} 0",
            "starcite_live_streams{transport=\"long_poll\"} 0",
            "starcite_tail_events_sent_total{transport=\"lifecycle\"} 0",
            "starcite_tail_gaps_total{reason=\"cursor_expired\"} 0",
            "starcite_tail_disconnects_total{reason=\"slow_reader\"} 0",
            "starcite_group_commit_events_count 0",
            "# TYPE starcite_append_commit_duration_seconds histogram",
            "starcite_ready 0",
            "starcite_nats_connected 0",
            "starcite_nats_reconnects_total 0",
            "starcite_catalog_sessions 0",
        ] {
            assert!(
                text.lines().any(|got| got == line),
                "no `{line}` in\n{text}"
            );
        }
        // Storage figures only when NATS answered.
        assert!(!text.contains("starcite_stream_messages"), "{text}");
    }

    #[test]
    fn live_streams_count_while_open_and_end_with_their_first_reason() {
        let metrics = Arc::new(Metrics::new());
        let stream = metrics.live_stream(Transport::WebSocket);
        let other = metrics.live_stream(Transport::Sse);
        stream.sent(3);
        let text = metrics.render(State::default());
        assert!(text.contains("starcite_live_streams{transport=\"websocket\"} 1"));
        assert!(text.contains("starcite_tail_events_sent_total{transport=\"websocket\"} 3"));
        stream.ends(Disconnect::SlowReader);
        stream.ends(Disconnect::Shutdown);
        drop(stream);
        drop(other);
        let text = metrics.render(State::default());
        assert!(text.contains("starcite_live_streams{transport=\"websocket\"} 0"));
        assert!(text.contains("starcite_tail_disconnects_total{reason=\"slow_reader\"} 1"));
        assert!(text.contains("starcite_tail_disconnects_total{reason=\"shutdown\"} 0"));
        assert!(text.contains("starcite_tail_disconnects_total{reason=\"client\"} 1"));
    }

    #[test]
    fn http_requests_are_labelled_by_route_method_and_status() {
        let metrics = Metrics::new();
        let labels = HttpLabels {
            route: "/v1/sessions/{id}/append",
            method: "POST",
            status: 201,
        };
        metrics.http_request(&labels, Duration::from_micros(200));
        metrics.http_request(&labels, Duration::from_micros(300));
        let text = metrics.render(State::default());
        assert!(text.contains(
            "starcite_http_requests_total{route=\"/v1/sessions/{id}/append\",method=\"POST\",status=\"201\"} 2"
        ), "{text}");
        assert!(text.contains(
            "starcite_http_request_duration_seconds_bucket{le=\"0.00025\",route=\"/v1/sessions/{id}/append\",method=\"POST\"} 1"
        ) || text.contains(
            "starcite_http_request_duration_seconds_bucket{route=\"/v1/sessions/{id}/append\",method=\"POST\",le=\"0.00025\"} 1"
        ), "{text}");
    }

    #[test]
    fn totals_read_what_the_charts_follow() {
        let metrics = Arc::new(Metrics::new());
        let empty = metrics.totals();
        assert_eq!(empty.appended, 0);
        assert_eq!(empty.append_latency.len(), LATENCY_BUCKETS.len() + 1);
        assert!(empty.append_latency.iter().all(|(_, count)| *count == 0));

        metrics.appends(AppendOutcome::Appended, 3);
        metrics.appends(AppendOutcome::Deduped, 1);
        let append = |status| HttpLabels {
            route: APPEND_ROUTE,
            method: "POST",
            status,
        };
        metrics.http_request(&append(201), Duration::from_micros(200));
        metrics.http_request(&append(503), Duration::from_millis(30));
        let ready = HttpLabels {
            route: "/health/ready",
            method: "GET",
            status: 503,
        };
        metrics.http_request(&ready, Duration::from_micros(50));
        let stream = metrics.live_stream(Transport::Sse);
        stream.sent(4);
        metrics.long_poll().sent(2);

        let totals = metrics.totals();
        assert_eq!(totals.appended, 3);
        assert_eq!(totals.delivered, 6);
        assert_eq!(totals.live, [0, 1, 0, 0]);
        assert_eq!(totals.server_errors, 2);
        let cumulative = |bound: f64| {
            totals
                .append_latency
                .iter()
                .find(|(le, _)| *le == bound)
                .map(|(_, count)| *count)
        };
        assert_eq!(cumulative(0.0001), Some(0));
        assert_eq!(cumulative(0.00025), Some(1));
        assert_eq!(cumulative(0.025), Some(1));
        assert_eq!(cumulative(0.05), Some(2));
        assert_eq!(cumulative(f64::INFINITY), Some(2));
        drop(stream);
        assert_eq!(metrics.totals().live, [0; 4]);
    }

    #[test]
    fn state_is_rendered_when_scraped() {
        let metrics = Metrics::new();
        let state = State {
            ready: true,
            nats: Traffic {
                connected: true,
                connects: 3,
                ..Traffic::default()
            },
            catalog_sessions: 7,
            storage: vec![(
                StreamRole::Events,
                StreamState {
                    messages: 10,
                    bytes: 2048,
                    subjects: 2,
                    consumers: 0,
                    replicas: 3,
                    current_replicas: 2,
                    follower_lag: vec![("n2".into(), 0), ("n3".into(), 17)],
                },
            )],
        };
        let text = metrics.render(state);
        for line in [
            "starcite_ready 1",
            "starcite_nats_connected 1",
            "starcite_nats_reconnects_total 2",
            "starcite_catalog_sessions 7",
            "starcite_stream_messages{stream=\"events\"} 10",
            "starcite_stream_bytes{stream=\"events\"} 2048",
            "starcite_stream_replicas{stream=\"events\"} 3",
            "starcite_stream_current_replicas{stream=\"events\"} 2",
            "starcite_stream_follower_lag{stream=\"events\",peer=\"n3\"} 17",
        ] {
            assert!(
                text.lines().any(|got| got == line),
                "no `{line}` in\n{text}"
            );
        }
        assert!(!text.contains("stream=\"sessions\""), "{text}");
    }

    #[test]
    fn process_figures_are_read_from_proc() {
        let stat = "4242 (star cite (x)) S 1 4242 4242 0 -1 4194560 1500 0 0 0 250 50 0 0 20 0 \
                    9 0 12345 104857600 2560 18446744073709551615";
        let state = ProcessState::from_stat(stat).unwrap();
        assert_eq!(state.cpu_seconds, 3.0);
        assert_eq!(state.threads, 9);
        assert_eq!(state.start_time_seconds, Some(123.45));
        assert_eq!(state.virtual_memory_bytes, 104_857_600);
        assert_eq!(
            resident_bytes("Name:\tstarcite\nVmRSS:\t   20480 kB\n"),
            Some(20 * 1024 * 1024)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(max_open_files(limits), Some(1024));
        assert_eq!(boot_time("cpu  1 2 3\nbtime 1700000000\n"), Some(1.7e9));
        if cfg!(target_os = "linux") {
            let text = Metrics::new().render(State::default());
            for name in [
                "process_cpu_seconds_total ",
                "process_resident_memory_bytes ",
                "process_open_fds ",
                "process_start_time_seconds ",
            ] {
                assert!(text.contains(name), "no {name} in\n{text}");
            }
        }
    }
}
