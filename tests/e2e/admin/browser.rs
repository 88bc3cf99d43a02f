//! The console in a real browser (headless Chromium): browse, filter, watch live, archive.

use std::path::PathBuf;

use serde_json::{Value, json};
use starcite_tests::{Browser, TestGateway, TestNats, event};

fn screenshot(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/screenshots")
        .join(format!("{name}.png"))
}

const HOSTILE: &str =
    "</script><script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\">";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browse_filter_watch_live_and_archive_in_a_real_browser() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    gateway
        .create_session_with(
            json!({"id": "alpha", "title": "Alpha research", "metadata": {"team": "research"}}),
        )
        .await;
    gateway
        .create_session_with(
            json!({"id": "beta", "title": "Beta ops", "metadata": {"team": "ops"}}),
        )
        .await;
    gateway.append_ok("alpha", event("writer", 1)).await;
    let mut hostile = event("writer", 2);
    hostile["payload"] = json!({"text": HOSTILE});
    hostile["actor"] = json!(HOSTILE);
    gateway.append_ok("alpha", hostile).await;
    let mut tool = event("tools", 1);
    tool["type"] = json!("tool_call");
    gateway.append_ok("alpha", tool).await;

    let browser = Browser::start().await;
    browser.goto(&format!("{}/admin", gateway.base_url)).await;
    browser.find("#sessions-table").await;
    assert_eq!(
        browser
            .count("#sessions-table tbody tr[data-session-id]")
            .await,
        2
    );
    browser.screenshot(&screenshot("sessions")).await;

    browser
        .type_into("#filters input[name=metadata]", "team=research")
        .await;
    browser
        .click("#filters button, #filters input[type=submit]")
        .await;
    browser
        .wait_until(
            "return document.querySelectorAll('#sessions-table tbody tr[data-session-id]').length === 1",
            "the filter leaves one session",
        )
        .await;
    assert!(
        browser
            .text("#sessions-table tbody")
            .await
            .contains("Alpha research")
    );
    browser.screenshot(&screenshot("sessions-filtered")).await;

    browser
        .click("#sessions-table tbody tr[data-session-id=alpha] a")
        .await;
    browser.find("#timeline").await;
    assert_eq!(browser.count("#timeline li.event").await, 3);
    let newest = browser
        .execute("return document.querySelector('#timeline li.event').dataset.seq")
        .await;
    assert_eq!(newest, json!("3"), "newest first");
    // Hostile content is text, never markup or script.
    assert!(browser.text("#timeline").await.contains("window.__pwned"));
    assert_eq!(
        browser.execute("return window.__pwned === undefined").await,
        Value::Bool(true)
    );
    assert_eq!(browser.count("#timeline img").await, 0);
    browser
        .wait_until(
            "return document.querySelector('#connection-state').dataset.state === 'live'",
            "the live view connects",
        )
        .await;
    browser.screenshot(&screenshot("session")).await;

    // An event appended through the API appears without a reload.
    browser
        .execute("window.__samePage = true; return true")
        .await;
    gateway.append_ok("alpha", event("writer", 3)).await;
    browser
        .wait_until(
            "return document.querySelector('#timeline li.event[data-seq=\"4\"]') !== null",
            "the new event appears live",
        )
        .await;
    assert_eq!(
        browser.execute("return window.__samePage === true").await,
        Value::Bool(true),
        "the page was reloaded"
    );
    assert_eq!(
        browser
            .execute("return document.querySelector('#timeline li.event').dataset.seq")
            .await,
        json!("4")
    );
    browser.screenshot(&screenshot("session-live")).await;

    // Filter the timeline by type.
    let url = browser.url().await;
    browser
        .type_into("#timeline-filters input[name=type]", "tool_call")
        .await;
    browser
        .click("#timeline-filters button, #timeline-filters input[type=submit]")
        .await;
    browser
        .wait_until(
            "return document.querySelectorAll('#timeline li.event').length === 1",
            "the type filter applies",
        )
        .await;
    browser.goto(&url).await;

    browser.click("#archive-button").await;
    browser.find("#archived-badge").await;
    let session: Value = gateway.session("alpha").await.json().await.unwrap();
    assert_eq!(session["archived"], true);
    assert!(browser.text("#archive-button").await.contains("Unarchive"));
    browser.screenshot(&screenshot("session-archived")).await;

    browser
        .goto(&format!("{}/admin/system", gateway.base_url))
        .await;
    let system = browser.text("body").await;
    for figure in [
        "connected",
        "STARCITE_EVENTS",
        "Appends served",
        "Open tails",
    ] {
        assert!(
            system.contains(figure),
            "the system page lacks {figure}: {system}"
        );
    }
    // The charts: drawn as SVG once the first sample is in, then refreshed in place.
    browser
        .find("#chart-appends svg polyline, #chart-appends svg circle")
        .await;
    for chart in super::CHARTS {
        assert_eq!(
            browser.count(&format!("#chart-{chart} svg")).await,
            1,
            "no SVG for {chart}"
        );
    }
    assert!(browser.count("svg polyline, svg circle").await >= 5);
    browser
        .execute("document.getElementById('charts').dataset.old = 'yes'; return true")
        .await;
    browser
        .wait_until(
            "const charts = document.getElementById('charts'); \
             return charts.dataset.old === undefined && charts.querySelector('svg') !== null",
            "the charts refresh",
        )
        .await;
    browser.screenshot(&screenshot("system")).await;
}
