//! `GET /metrics`: after a known mix of appends, tails, a gap and a slow reader, the scraped
//! counters moved by exactly that much (the exposition read with a Prometheus text parser);
//! every metric the operations guide lists is there with its type; labels never carry a path
//! or a session; and with `STARCITE_OPS_LISTEN` the operator's endpoints move to their own
//! address.

use std::time::{Duration, Instant};

use gateway::Gateway;
use gateway::config::Config;
use openmetrics_parser::prometheus::parse_prometheus;
use openmetrics_parser::{MetricFamily, MetricsExposition, PrometheusType, PrometheusValue};
use reqwest::Method;
use serde_json::{Value as Json, json};
use starcite_tests::{TailFrame, TestCluster, TestGateway, TestNats, event};
use tokio::sync::oneshot;

/// One scrape, parsed.
struct Metrics(MetricsExposition<PrometheusType, PrometheusValue>);

type Family = MetricFamily<PrometheusType, PrometheusValue>;

impl Metrics {
    async fn scrape(client: &reqwest::Client, base_url: &str) -> Metrics {
        let response = client
            .get(format!("{base_url}/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let text = response.text().await.unwrap();
        let exposition = parse_prometheus(&text)
            .unwrap_or_else(|err| panic!("not the Prometheus text format ({err:?}):\n{text}"));
        Metrics(exposition)
    }

    /// The value of `name` (a counter, gauge, or a histogram's count) whose labels are exactly
    /// `labels`; 0 when there is none (a labelled series appears with its first increment).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let (family, histogram_part) = match self.0.families.get(name) {
            Some(family) => (family, None),
            None => match name
                .strip_suffix("_count")
                .map(|base| (base, "count"))
                .or_else(|| name.strip_suffix("_sum").map(|base| (base, "sum")))
                .and_then(|(base, part)| Some((self.0.families.get(base)?, part)))
            {
                Some((family, part)) => (family, Some(part)),
                None => return 0.0,
            },
        };
        let matching: Vec<f64> = samples(family, labels)
            .map(|value| match (value, histogram_part) {
                (PrometheusValue::Counter(counter), None) => counter.value.as_f64(),
                (PrometheusValue::Gauge(number) | PrometheusValue::Unknown(number), None) => {
                    number.as_f64()
                }
                (PrometheusValue::Histogram(histogram), Some("count")) => {
                    histogram.count.unwrap_or_default() as f64
                }
                (PrometheusValue::Histogram(histogram), Some(_)) => {
                    histogram.sum.as_ref().map_or(0.0, |sum| sum.as_f64())
                }
                (other, _) => panic!("{name} is not a number: {other:?}"),
            })
            .collect();
        assert!(
            matching.len() <= 1,
            "{name} {labels:?} matches {matching:?}"
        );
        matching.first().copied().unwrap_or(0.0)
    }

    /// The declared type of `name`.
    fn kind(&self, name: &str) -> Option<String> {
        let family = self.0.families.get(name)?;
        Some(family.family_type.to_string())
    }

    fn has_help(&self, name: &str) -> bool {
        self.0
            .families
            .get(name)
            .is_some_and(|family| !family.help.is_empty())
    }

    /// Every `(label, value)` of every sample.
    fn label_values(&self) -> Vec<(String, String)> {
        self.0
            .families
            .values()
            .flat_map(|family| family.iter_samples())
            .flat_map(|sample| {
                let labels = sample.get_labelset().unwrap();
                labels
                    .iter()
                    .map(|(label, value)| (label.clone(), value.clone()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// The values of `family`'s samples whose labels are exactly `labels`.
fn samples<'a>(
    family: &'a Family,
    labels: &'a [(&str, &str)],
) -> impl Iterator<Item = &'a PrometheusValue> {
    family
        .iter_samples()
        .filter(move |sample| {
            let set = sample.get_labelset().unwrap();
            set.iter().count() == labels.len()
                && labels
                    .iter()
                    .all(|(label, value)| set.get_label_value(label) == Some(value))
        })
        .map(|sample| &sample.value)
}

/// How much each `(name, labels)` moved between two scrapes.
fn moved(before: &Metrics, after: &Metrics, name: &str, labels: &[(&str, &str)]) -> f64 {
    after.value(name, labels) - before.value(name, labels)
}

const APPEND: &str = "/v1/sessions/{id}/append";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_by_exactly_what_was_done() {
    let nats = TestNats::start();
    let config = Config {
        tail_buffer: 4,
        tail_stall_timeout: Duration::from_millis(500),
        ..TestGateway::config(&nats)
    };
    let gateway = TestGateway::start_with(config).await;
    let (client, url) = (&gateway.client, gateway.base_url.as_str());
    let id = gateway.create_session().await;
    let slow_id = gateway.create_session().await;
    let before = Metrics::scrape(client, url).await;

    // Five appends, a retry of the last (deduped), and one producer_seq out of order (409).
    let appended = 5;
    for producer_seq in 1..=appended {
        gateway.append_ok(&id, event("p", producer_seq)).await;
    }
    let retry = gateway.append_ok(&id, event("p", appended)).await;
    assert_eq!(retry["deduped"], true);
    let conflict = gateway.append(&id, event("p", 9)).await;
    assert_eq!(
        gateway.expect(conflict, 409).await["error"],
        "producer_seq_conflict"
    );

    // A tail from beyond the head: a resume_invalidated gap, then the three events appended
    // while it is open; the client closes it.
    let mut tail = gateway.tail(&id, 1000).await;
    assert_eq!(tail.event().await["reason"], "resume_invalidated");
    let live = 3;
    for producer_seq in appended + 1..=appended + live {
        gateway.append_ok(&id, event("p", producer_seq)).await;
    }
    assert_eq!(tail.seqs(live as usize).await, vec![6, 7, 8]);
    tail.close().await;
    assert!(matches!(
        tail.frame(Duration::from_secs(5)).await,
        TailFrame::Closed(_)
    ));

    // A reader that reads nothing while 32 MiB of events are appended (more than the socket
    // buffers hold) is cut off; then it reads what was written to it, and the close.
    let mut slow = gateway.tail(&slow_id, 0).await;
    let big = 128;
    let blob = "x".repeat(256 * 1024);
    for producer_seq in 1..=big {
        let mut body = event("big", producer_seq);
        body["payload"]["blob"] = json!(blob);
        gateway.append_ok(&slow_id, body).await;
    }
    let (received, code) = slow.until_closed(Duration::from_secs(10)).await;
    let received = received.len() as u64;
    assert_eq!(code, Some(4002));
    assert!(received < big, "the slow reader got every event");

    // A request no route takes.
    let unrouted = gateway.request(Method::GET, "/no/such/route", None).await;
    assert_eq!(unrouted.status(), 404);

    // The gateway counts a stream's end once it has let go of it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let after = Metrics::scrape(client, url).await;
        let ends = |reason| {
            moved(
                &before,
                &after,
                "starcite_tail_disconnects_total",
                &[("reason", reason)],
            )
        };
        if ends("client") >= 1.0 && ends("slow_reader") >= 1.0 {
            break after;
        }
        assert!(
            Instant::now() < deadline,
            "the tails' ends were not counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let delta = |name: &str, labels: &[(&str, &str)]| moved(&before, &after, name, labels);
    let committed = (appended + live + big) as f64;

    assert_eq!(
        delta("starcite_appends_total", &[("outcome", "appended")]),
        committed
    );
    assert_eq!(
        delta("starcite_appends_total", &[("outcome", "deduped")]),
        1.0
    );
    assert_eq!(
        delta("starcite_appends_total", &[("outcome", "rejected")]),
        1.0
    );
    assert_eq!(
        delta("starcite_appends_total", &[("outcome", "failed")]),
        0.0
    );
    let http = |status| {
        delta(
            "starcite_http_requests_total",
            &[("route", APPEND), ("method", "POST"), ("status", status)],
        )
    };
    assert_eq!(http("201"), committed + 1.0);
    assert_eq!(http("409"), 1.0);
    assert_eq!(
        delta(
            "starcite_http_requests_total",
            &[("route", "unmatched"), ("method", "GET"), ("status", "404")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            "starcite_http_request_duration_seconds_count",
            &[("route", APPEND), ("method", "POST")]
        ),
        committed + 2.0
    );
    // Every appended event was in exactly one acknowledged commit, each timed.
    assert_eq!(delta("starcite_group_commit_events_sum", &[]), committed);
    let commits = delta("starcite_group_commit_events_count", &[]);
    assert!(commits >= 1.0 && commits <= committed, "{commits} commits");
    assert_eq!(
        delta("starcite_append_commit_duration_seconds_count", &[]),
        commits
    );
    for reason in ["lost_race", "timeout", "transient", "too_large"] {
        assert_eq!(
            delta("starcite_append_retries_total", &[("reason", reason)]),
            0.0,
            "{reason}"
        );
    }

    let sent = delta(
        "starcite_tail_events_sent_total",
        &[("transport", "websocket")],
    );
    assert_eq!(sent, (live + received) as f64);
    assert_eq!(
        delta(
            "starcite_tail_gaps_total",
            &[("reason", "resume_invalidated")]
        ),
        1.0
    );
    assert_eq!(
        delta("starcite_tail_gaps_total", &[("reason", "cursor_expired")]),
        0.0
    );
    for (reason, count) in [
        ("client", 1.0),
        ("slow_reader", 1.0),
        ("shutdown", 0.0),
        ("token_expired", 0.0),
        ("storage_error", 0.0),
    ] {
        assert_eq!(
            delta("starcite_tail_disconnects_total", &[("reason", reason)]),
            count,
            "{reason}"
        );
    }
    for transport in ["websocket", "sse", "long_poll", "lifecycle"] {
        assert_eq!(
            after.value("starcite_live_streams", &[("transport", transport)]),
            0.0,
            "{transport}"
        );
    }

    // What the gateway is, read when scraped.
    assert_eq!(after.value("starcite_ready", &[]), 1.0);
    assert_eq!(after.value("starcite_nats_connected", &[]), 1.0);
    assert_eq!(after.value("starcite_nats_reconnects_total", &[]), 0.0);
    assert_eq!(after.value("starcite_catalog_sessions", &[]), 2.0);
    assert_eq!(
        after.value("starcite_stream_messages", &[("stream", "events")]),
        committed
    );
    assert!(after.value("starcite_stream_bytes", &[("stream", "events")]) > 32.0 * 1024.0 * 1024.0);
    assert_eq!(
        after.value("starcite_stream_subjects", &[("stream", "events")]),
        2.0
    );
    for stream in ["events", "sessions"] {
        assert_eq!(
            after.value("starcite_stream_replicas", &[("stream", stream)]),
            1.0
        );
        assert_eq!(
            after.value("starcite_stream_current_replicas", &[("stream", stream)]),
            1.0
        );
    }
    assert!(after.value("process_resident_memory_bytes", &[]) > 0.0);
    assert!(after.value("process_open_fds", &[]) > 0.0);

    // Bounded labels: no session id and no raw path anywhere.
    for (label, value) in after.label_values() {
        for secret in [id.as_str(), slow_id.as_str(), "/no/such/route"] {
            assert!(!value.contains(secret), "{label}={value}");
        }
    }
}

#[tokio::test]
async fn every_documented_metric_is_exported_with_its_type() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let id = gateway.create_session().await;
    gateway.append_ok(&id, event("p", 1)).await;
    let metrics = Metrics::scrape(&gateway.client, &gateway.base_url).await;
    for (name, kind) in [
        ("starcite_http_requests_total", "counter"),
        ("starcite_http_request_duration_seconds", "histogram"),
        ("starcite_appends_total", "counter"),
        ("starcite_append_commit_duration_seconds", "histogram"),
        ("starcite_append_retries_total", "counter"),
        ("starcite_group_commit_events", "histogram"),
        ("starcite_live_streams", "gauge"),
        ("starcite_tail_events_sent_total", "counter"),
        ("starcite_tail_gaps_total", "counter"),
        ("starcite_tail_disconnects_total", "counter"),
        ("starcite_auth_failures_total", "counter"),
        ("starcite_rate_limited_total", "counter"),
        ("starcite_catalog_sessions", "gauge"),
        ("starcite_ready", "gauge"),
        ("starcite_nats_connected", "gauge"),
        ("starcite_nats_reconnects_total", "counter"),
        ("starcite_nats_sent_bytes_total", "counter"),
        ("starcite_nats_received_bytes_total", "counter"),
        ("starcite_nats_sent_messages_total", "counter"),
        ("starcite_nats_received_messages_total", "counter"),
        ("starcite_stream_messages", "gauge"),
        ("starcite_stream_bytes", "gauge"),
        ("starcite_stream_subjects", "gauge"),
        ("starcite_stream_consumers", "gauge"),
        ("starcite_stream_replicas", "gauge"),
        ("starcite_stream_current_replicas", "gauge"),
        ("starcite_stream_follower_lag", "gauge"),
        ("starcite_build_info", "gauge"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_virtual_memory_bytes", "gauge"),
        ("process_cpu_seconds_total", "counter"),
        ("process_open_fds", "gauge"),
        ("process_max_fds", "gauge"),
        ("process_threads", "gauge"),
        ("process_start_time_seconds", "gauge"),
    ] {
        assert_eq!(metrics.kind(name).as_deref(), Some(kind), "{name}");
        assert!(metrics.has_help(name), "{name} has no HELP");
    }
    // Route labels are templates in the spec's notation, for routes inside and outside it.
    for route in ["/v1/sessions", APPEND, "/health/ready"] {
        assert!(
            metrics
                .label_values()
                .iter()
                .any(|(label, value)| label == "route" && value == route),
            "no route {route}"
        );
    }
    let readme = gateway.request(Method::GET, "/openapi.json", None).await;
    assert_eq!(readme.status(), 200);
    let again = Metrics::scrape(&gateway.client, &gateway.base_url).await;
    assert_eq!(
        again.value(
            "starcite_http_requests_total",
            &[
                ("route", "/openapi.json"),
                ("method", "GET"),
                ("status", "200")
            ]
        ),
        1.0
    );
    assert_eq!(
        again.value(
            "starcite_http_requests_total",
            &[("route", "/metrics"), ("method", "GET"), ("status", "200")]
        ),
        1.0
    );
    // A method /metrics does not take is a 405 naming the one it does.
    let post = gateway.request(Method::POST, "/metrics", None).await;
    assert_eq!(post.status(), 405);
    assert_eq!(post.headers()["allow"], "GET");
}

#[tokio::test]
async fn with_an_ops_listener_metrics_and_health_move_there() {
    let nats = TestNats::start();
    let config = TestGateway::config(&nats);
    gateway::auth::install_crypto_provider();
    let public = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ops = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let public_url = format!("http://{}", public.local_addr().unwrap());
    let ops_url = format!("http://{}", ops.local_addr().unwrap());
    let running = Gateway::start(config).await.unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(running.serve_on(public, Some(ops), async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while client
        .get(format!("{ops_url}/health/ready"))
        .send()
        .await
        .map_or(true, |response| response.status() != 200)
    {
        assert!(Instant::now() < deadline, "not ready on the ops address");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The public address serves the API, and none of the operator's endpoints.
    let created = client
        .post(format!("{public_url}/v1/sessions"))
        .json(&json!({"id": "ops"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    for path in ["/metrics", "/health/ready", "/health/live"] {
        let response = client
            .get(format!("{public_url}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path} on the public address");
        let body: Json = response.json().await.unwrap();
        assert_eq!(body["error"], "not_found", "{path}");
    }

    // The ops address serves them, and nothing of the API.
    let live = client
        .get(format!("{ops_url}/health/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    let api = client
        .get(format!("{ops_url}/v1/sessions/ops"))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 404);
    let metrics = Metrics::scrape(&client, &ops_url).await;
    assert_eq!(metrics.value("starcite_ready", &[]), 1.0);
    assert_eq!(metrics.value("starcite_catalog_sessions", &[]), 1.0);
    let public_404 = metrics.value(
        "starcite_http_requests_total",
        &[("route", "unmatched"), ("method", "GET"), ("status", "404")],
    );
    assert_eq!(
        public_404,
        3.0 + 1.0,
        "three public refusals and /v1 on the ops address"
    );
    assert_eq!(
        metrics.value(
            "starcite_http_requests_total",
            &[
                ("route", "/v1/sessions"),
                ("method", "POST"),
                ("status", "201")
            ]
        ),
        1.0
    );

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_the_streams_replicas_and_followers_are_reported() {
    let cluster = TestCluster::start().await;
    let gateway = TestGateway::start_with(Config {
        nats_urls: cluster.urls(),
        stream_replicas: 3,
        nats_timeout: Duration::from_secs(2),
        ..Config::default()
    })
    .await;
    let id = gateway.create_session().await;
    gateway.append_ok(&id, event("p", 1)).await;
    cluster.wait_until_replicated("STARCITE_EVENTS").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let metrics = Metrics::scrape(&gateway.client, &gateway.base_url).await;
        if metrics.value("starcite_stream_current_replicas", &[("stream", "events")]) == 3.0 {
            break metrics;
        }
        assert!(
            Instant::now() < deadline,
            "the replicas never all caught up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for stream in ["events", "sessions"] {
        assert_eq!(
            metrics.value("starcite_stream_replicas", &[("stream", stream)]),
            3.0
        );
    }
    let peers: Vec<String> = metrics
        .0
        .families
        .get("starcite_stream_follower_lag")
        .unwrap()
        .iter_samples()
        .filter_map(|sample| {
            let labels = sample.get_labelset().unwrap();
            (labels.get_label_value("stream") == Some("events"))
                .then(|| labels.get_label_value("peer").unwrap().to_owned())
        })
        .collect();
    // The followers, named as the servers are.
    assert_eq!(peers.len(), 2, "{peers:?}");
    let leader = cluster.stream_leader("STARCITE_EVENTS").await;
    for peer in &peers {
        assert_ne!(cluster.node_named(peer), leader, "{peer}");
        assert_eq!(
            metrics.value(
                "starcite_stream_follower_lag",
                &[("stream", "events"), ("peer", peer)]
            ),
            0.0
        );
    }
}
