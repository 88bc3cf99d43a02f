//! The system page: charts of what the gateway sampled, and the nodes behind each stream.

use std::time::Duration;

use reqwest::Method;
use starcite_tests::{TestGateway, TestNats, event, eventually};

use super::system_page;

/// The text between the first `open` and the `close` after it.
fn between<'a>(text: &'a str, open: &str, close: &str) -> &'a str {
    let start = text
        .find(open)
        .unwrap_or_else(|| panic!("no {open} in {text}"))
        + open.len();
    let end = text[start..]
        .find(close)
        .unwrap_or_else(|| panic!("no {close} in {text}"))
        + start;
    &text[start..end]
}

/// The charts fragment the page's script swaps in, asserting a 200.
async fn charts(gateway: &TestGateway) -> String {
    let response = gateway
        .request(Method::GET, "/admin/system/charts", None)
        .await;
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

#[tokio::test]
async fn the_system_page_charts_the_appends_it_sampled() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let before = charts(&gateway).await;
    // Nothing sampled until the sampler's first interval ends.
    assert!(before.contains("No data yet"), "{before}");
    assert!(!before.contains("<polyline"));

    let id = gateway.create_session().await;
    for producer_seq in 1..=20 {
        gateway.append_ok(&id, event("p", producer_seq)).await;
    }
    let html = eventually(Duration::from_secs(15), || async {
        let html = system_page(&gateway).await;
        // The first interval with the appends in it (the gateway may have sampled before).
        if (html.contains("<polyline") || html.contains("<circle"))
            && !between(&html, "<figure id=\"chart-appends\"", "</figure>")
                .contains(">0 events/s</span>")
        {
            Ok(html)
        } else {
            Err(format!("no chart drawn: {html}"))
        }
    })
    .await;
    for chart in super::CHARTS {
        let figure = between(&html, &format!("<figure id=\"chart-{chart}\""), "</figure>");
        assert!(figure.contains("<svg class=\"chart-svg\""), "{figure}");
        assert!(
            figure.contains("<polyline") || figure.contains("<circle"),
            "{figure}"
        );
    }
    // At most 20 appends in a 5 s interval: at most 4/s, the legend shows the newest.
    let appends = between(&html, "<figure id=\"chart-appends\"", "</figure>");
    let rate: f64 = between(appends, "<span class=\"latest\">", " events/s")
        .parse()
        .unwrap();
    assert!(rate > 0.0 && rate <= 4.01, "{appends}");
    let latency = between(&html, "<figure id=\"chart-append-latency\"", "</figure>");
    assert!(latency.contains(">p50 <span"), "{latency}");
    assert!(
        !latency.contains(">p99 <span class=\"latest\">—<"),
        "{latency}"
    );
    // A single node: no table of replicas.
    assert!(!html.contains("Events stream nodes"));

    let fragment = charts(&gateway).await;
    assert!(fragment.starts_with("<section id=\"charts\""), "{fragment}");
    assert!(fragment.contains("<polyline") || fragment.contains("<circle"));
}

#[tokio::test]
async fn on_a_cluster_the_system_page_lists_each_streams_nodes() {
    use starcite_tests::TestCluster;
    let cluster = TestCluster::start().await;
    let gateway = TestGateway::start_with(TestGateway::replicated_config(cluster.urls())).await;
    let id = gateway.create_session().await;
    gateway.append_ok(&id, event("p", 1)).await;
    cluster.wait_until_replicated("STARCITE_EVENTS").await;
    let tables = eventually(Duration::from_secs(10), || async {
        let html = system_page(&gateway).await;
        let tables = ["events-nodes", "sessions-nodes"].map(|table| {
            between(&html, &format!("<section id=\"{table}\""), "</section>").to_owned()
        });
        let caught_up = tables.iter().all(|table| {
            table.matches("<tr class=\"node\">").count() == 3
                && table
                    .matches("<td>yes</td><td>0</td><td>online</td>")
                    .count()
                    == 3
        });
        if caught_up {
            Ok(tables)
        } else {
            Err(format!(
                "the node tables never showed three current nodes: {tables:?}"
            ))
        }
    })
    .await;
    for table in &tables {
        assert_eq!(table.matches("<td>leader</td>").count(), 1, "{table}");
        assert_eq!(table.matches("<td>follower</td>").count(), 2, "{table}");
    }
}
