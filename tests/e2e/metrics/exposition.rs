//! What is exported: every documented metric with its type and no path or session in a
//! label, the operator's endpoints on their own listener, and a cluster's replicas.

use std::time::Duration;

use gateway::Gateway;
use reqwest::Method;
use serde_json::{Value as Json, json};
use starcite_tests::{TestCluster, TestGateway, TestNats, event, eventually};
use tokio::sync::oneshot;

use super::{APPEND, Metrics};

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
        ("starcite_producer_sockets", "gauge"),
        ("starcite_tail_events_sent_total", "counter"),
        ("starcite_tail_gaps_total", "counter"),
        ("starcite_tail_disconnects_total", "counter"),
        ("starcite_auth_failures_total", "counter"),
        ("starcite_rate_limited_total", "counter"),
        ("starcite_catalog_sessions", "gauge"),
        ("starcite_catalog_loading", "gauge"),
        ("starcite_catalog_view_applied_total", "counter"),
        ("starcite_catalog_view_build_seconds", "gauge"),
        ("starcite_catalog_view_build_replay_seconds", "gauge"),
        ("starcite_catalog_view_build_pending", "gauge"),
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
    eventually(Duration::from_secs(15), || async {
        let ready = client.get(format!("{ops_url}/health/ready")).send().await;
        match ready {
            Ok(response) if response.status() == 200 => Ok(()),
            _ => Err("not ready on the ops address".to_owned()),
        }
    })
    .await;

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
    // The catalog view applies the create in the background.
    let metrics = eventually(Duration::from_secs(10), || async {
        let metrics = Metrics::scrape(&client, &ops_url).await;
        match metrics.value("starcite_catalog_sessions", &[]) {
            1.0 => Ok(metrics),
            other => Err(format!("the catalog counts {other} sessions")),
        }
    })
    .await;
    assert_eq!(metrics.value("starcite_ready", &[]), 1.0);
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
    let gateway = TestGateway::start_with(TestGateway::replicated_config(cluster.urls())).await;
    let id = gateway.create_session().await;
    gateway.append_ok(&id, event("p", 1)).await;
    cluster.wait_until_replicated("STARCITE_EVENTS").await;
    let metrics = eventually(Duration::from_secs(10), || async {
        let metrics = Metrics::scrape(&gateway.client, &gateway.base_url).await;
        let current = metrics.value("starcite_stream_current_replicas", &[("stream", "events")]);
        if current == 3.0 {
            Ok(metrics)
        } else {
            Err(format!("the replicas never all caught up: {current}"))
        }
    })
    .await;
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
