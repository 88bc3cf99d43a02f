//! Traces: with an OTLP endpoint configured, the real gateway process sends one span per
//! request to a collector, parented by the caller's `traceparent`, a child span per JetStream
//! commit, and a span per delivery to a live reader linked to the request that stored it.

use std::path::Path;

use serde_json::json;
use starcite_tests::{GatewayProcess, TailClient, TestCollector, TestNats, event, span_attribute};

/// The caller's trace and span, as W3C Trace Context writes them.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

async fn create(http: &reqwest::Client, gateway: &GatewayProcess, id: &str) -> reqwest::Response {
    http.post(format!("{}/v1/sessions", gateway.base_url))
        .json(&json!({ "id": id }))
        .send()
        .await
        .unwrap()
}

/// Appends producer `p`'s first event as part of the caller's trace.
async fn append_in_callers_trace(
    http: &reqwest::Client,
    gateway: &GatewayProcess,
    id: &str,
) -> reqwest::Response {
    http.post(format!("{}/v1/sessions/{id}/append", gateway.base_url))
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01"))
        .json(&event("p", 1))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_append_is_a_span_of_the_callers_trace_with_its_route_and_session() {
    let nats = TestNats::start();
    let collector = TestCollector::start().await;
    let binary = Path::new(env!("CARGO_BIN_EXE_starcite-e2e"));
    let gateway = GatewayProcess::start(
        binary,
        &nats,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .await;
    let http = reqwest::Client::new();
    let created = create(&http, &gateway, "traced").await;
    assert_eq!(created.status(), 201);
    let tail_url = format!(
        "{}/v1/sessions/traced/tail?cursor=0",
        gateway.base_url.replacen("http", "ws", 1)
    );
    let mut tail = TailClient::connect(&tail_url).await;
    let appended = append_in_callers_trace(&http, &gateway, "traced").await;
    assert_eq!(appended.status(), 201);

    let span = collector
        .span("append request", |span| {
            span_attribute(span, "http.route").as_deref() == Some("/v1/sessions/{id}/append")
        })
        .await;
    assert_eq!(hex(&span.trace_id), TRACE_ID);
    assert_eq!(hex(&span.parent_span_id), PARENT_SPAN_ID);
    assert_eq!(span.name, "POST /v1/sessions/{id}/append");
    assert_eq!(
        span_attribute(&span, "starcite.session_id").as_deref(),
        Some("traced")
    );
    assert_eq!(
        span_attribute(&span, "http.request.method").as_deref(),
        Some("POST")
    );
    assert_eq!(
        span_attribute(&span, "http.response.status_code").as_deref(),
        Some("201")
    );
    // The commit is a child of the request; the delivery to the tailer links back to it.
    assert_eq!(tail.seqs(1).await, vec![1]);
    let commit = collector
        .span("commit", |span| span.name == "jetstream commit")
        .await;
    assert_eq!(hex(&commit.trace_id), TRACE_ID);
    assert_eq!(commit.parent_span_id, span.span_id);
    let delivery = collector
        .span("delivery", |span| span.name == "tail delivery")
        .await;
    assert_ne!(
        hex(&delivery.trace_id),
        TRACE_ID,
        "a delivery is a trace of its own"
    );
    let links: Vec<(String, String)> = delivery
        .links
        .iter()
        .map(|link| (hex(&link.trace_id), hex(&link.span_id)))
        .collect();
    assert_eq!(links, vec![(TRACE_ID.to_owned(), hex(&span.span_id))]);
    // A request without a traceparent starts a trace of its own.
    let create = collector
        .span("create request", |span| {
            span_attribute(span, "http.route").as_deref() == Some("/v1/sessions")
        })
        .await;
    assert_ne!(hex(&create.trace_id), TRACE_ID);
    assert!(create.parent_span_id.is_empty());
}

/// JSON logs without a collector: each line of a request carries the caller's trace id.
#[tokio::test]
async fn json_log_lines_carry_the_callers_trace_id() {
    let nats = TestNats::start();
    let binary = Path::new(env!("CARGO_BIN_EXE_starcite-e2e"));
    let mut gateway = GatewayProcess::start(
        binary,
        &nats,
        &[
            ("STARCITE_LOG_FORMAT", "json"),
            ("STARCITE_LOG", "gateway::sessions=debug,info"),
        ],
    )
    .await;
    let http = reqwest::Client::new();
    create(&http, &gateway, "logged").await;
    let appended = append_in_callers_trace(&http, &gateway, "logged").await;
    assert_eq!(appended.status(), 201);
    gateway.kill();
    let log = gateway.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    let appended_line = lines
        .iter()
        .find(|line| {
            line["fields"]["message"]
                .as_str()
                .is_some_and(|message| message.starts_with("appended 1 events to session logged"))
        })
        .unwrap_or_else(|| panic!("no log line of the append in {log}"));
    assert_eq!(appended_line["span"]["trace_id"], TRACE_ID);
    assert_eq!(appended_line["span"]["starcite.session_id"], "logged");
}
