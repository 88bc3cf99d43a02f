//! The counters after a known mix of appends, tails, a gap and a slow reader: each moved by
//! exactly what was done.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use starcite_tests::{TailFrame, TestGateway, TestNats, event, eventually};

use super::{APPEND, Metrics, moved};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_by_exactly_what_was_done() {
    let nats = TestNats::start();
    let mut config = TestGateway::config(&nats);
    config.tail.buffer = 4;
    config.tail.stall_timeout = Duration::from_millis(500);
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
    let after = eventually(Duration::from_secs(10), || async {
        let after = Metrics::scrape(client, url).await;
        let ends = |reason| {
            moved(
                &before,
                &after,
                "starcite_tail_disconnects_total",
                &[("reason", reason)],
            )
        };
        // The catalog view applies the creates in the background.
        let catalog_current = after.value("starcite_catalog_sessions", &[]) == 2.0;
        if ends("client") >= 1.0 && ends("slow_reader") >= 1.0 && catalog_current {
            Ok(after)
        } else {
            Err("the tails' ends or the catalog's sessions were not counted".to_owned())
        }
    })
    .await;
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
