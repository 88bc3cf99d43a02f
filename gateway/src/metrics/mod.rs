//! The gateway's Prometheus metrics: one registry and typed handles to everything in it.
//!
//! Whatever a request or an event touches is a handle made up front (a label value is an enum
//! variant, never a string from a request), so recording one is an atomic add or, for a
//! histogram, a short lock; nothing is allocated. Values that describe the gateway's state
//! (NATS, readiness, the catalog, storage, the process) are read when scraped, not kept up to
//! date. No label names a tenant, a session or a path: every label has a fixed set of values.

mod labels;
mod live;
mod process;
mod state;

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub use labels::{
    AppendOutcome, AuthFailure, ByLabel, Disconnect, GapReason, Label, Limit, Retry, StreamRole,
    Transport,
};
use labels::{OneLabel, counters, gauges};
pub use live::{LiveStream, LongPoll};
use process::ProcessCollector;
pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
pub use state::{State, StreamState};

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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

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
}
