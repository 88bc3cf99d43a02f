//! The admin console in a real browser (headless Chromium), plus its guards.

use std::path::PathBuf;

use gateway::config::Config;
use reqwest::Method;
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
    for chart in [
        "appends",
        "deliveries",
        "append-latency",
        "live-streams",
        "server-errors",
    ] {
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

#[tokio::test]
async fn state_changes_need_the_csrf_token_and_renames_respect_versions() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    gateway
        .create_session_with(json!({"id": "guarded", "title": "Before"}))
        .await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = |path: &str| format!("{}/admin/sessions/guarded{path}", gateway.base_url);

    let forged = client
        .post(url("/archive"))
        .form(&[("csrf", "0".repeat(32))])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let token = "ab".repeat(16);
    let cookie = format!("starcite_csrf={token}");
    let wrong = client
        .post(url("/archive"))
        .header("cookie", &cookie)
        .form(&[("csrf", "cd".repeat(16))])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 403);
    let session: Value = gateway.session("guarded").await.json().await.unwrap();
    assert_eq!(session["archived"], false, "a forged POST changed nothing");

    let renamed = client
        .post(url("/rename"))
        .header("cookie", &cookie)
        .form(&[
            ("csrf", token.as_str()),
            ("title", "After"),
            ("expected_version", "1"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(renamed.status(), 303);
    let stale = client
        .post(url("/rename"))
        .header("cookie", &cookie)
        .form(&[
            ("csrf", token.as_str()),
            ("title", "Late"),
            ("expected_version", "1"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 303);
    assert!(
        stale.headers()["location"]
            .to_str()
            .unwrap()
            .contains("notice=version_conflict")
    );
    let session: Value = gateway.session("guarded").await.json().await.unwrap();
    assert_eq!(
        (session["title"].as_str(), session["version"].as_u64()),
        (Some("After"), Some(2))
    );

    // The page sets the cookie it expects back.
    let page = client.get(url("")).send().await.unwrap();
    assert!(
        page.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .starts_with("starcite_csrf=")
    );
    let missing = client
        .get(format!("{}/admin/sessions/nobody", gateway.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn every_console_page_of_a_missing_session_is_not_found() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = |path: &str| format!("{}/admin/sessions/nobody{path}", gateway.base_url);
    for path in ["", "?before=10&actor=a", "/live?cursor=0"] {
        let page = client.get(url(path)).send().await.unwrap();
        assert_eq!(page.status(), 404, "GET {path}");
        assert_eq!(page.text().await.unwrap(), "no such session", "GET {path}");
    }
    let token = "ab".repeat(16);
    let cookie = format!("starcite_csrf={token}");
    for (path, form) in [
        ("/rename", vec![("csrf", token.as_str()), ("title", "New")]),
        ("/archive", vec![("csrf", token.as_str())]),
        ("/unarchive", vec![("csrf", token.as_str())]),
    ] {
        let action = client
            .post(url(path))
            .header("cookie", &cookie)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(action.status(), 404, "POST {path}");
        assert_eq!(
            action.text().await.unwrap(),
            "no such session",
            "POST {path}"
        );
    }
}

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

#[tokio::test]
async fn the_system_page_charts_the_appends_it_sampled() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let page = gateway
        .request(Method::GET, "/admin/system/charts", None)
        .await;
    assert_eq!(page.status(), 200);
    let before = page.text().await.unwrap();
    // Nothing sampled until the sampler's first interval ends.
    assert!(before.contains("No data yet"), "{before}");
    assert!(!before.contains("<polyline"));

    let id = gateway.create_session().await;
    for producer_seq in 1..=20 {
        gateway.append_ok(&id, event("p", producer_seq)).await;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let html = loop {
        let html = gateway
            .request(Method::GET, "/admin/system", None)
            .await
            .text()
            .await
            .unwrap();
        // The first interval with the appends in it (the gateway may have sampled before).
        if (html.contains("<polyline") || html.contains("<circle"))
            && !between(&html, "<figure id=\"chart-appends\"", "</figure>")
                .contains(">0 events/s</span>")
        {
            break html;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no chart drawn: {html}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    };
    for chart in [
        "appends",
        "deliveries",
        "append-latency",
        "live-streams",
        "server-errors",
    ] {
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

    let fragment = gateway
        .request(Method::GET, "/admin/system/charts", None)
        .await;
    assert_eq!(fragment.status(), 200);
    let fragment = fragment.text().await.unwrap();
    assert!(fragment.starts_with("<section id=\"charts\""), "{fragment}");
    assert!(fragment.contains("<polyline") || fragment.contains("<circle"));
}

#[tokio::test]
async fn on_a_cluster_the_system_page_lists_each_streams_nodes() {
    use starcite_tests::TestCluster;
    let cluster = TestCluster::start().await;
    let mut config = Config::default();
    config.nats.urls = cluster.urls();
    config.nats.stream_replicas = 3;
    config.nats.timeout = std::time::Duration::from_secs(2);
    let gateway = TestGateway::start_with(config).await;
    let id = gateway.create_session().await;
    gateway.append_ok(&id, event("p", 1)).await;
    cluster.wait_until_replicated("STARCITE_EVENTS").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let html = gateway
            .request(Method::GET, "/admin/system", None)
            .await
            .text()
            .await
            .unwrap();
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
            for table in &tables {
                assert_eq!(table.matches("<td>leader</td>").count(), 1, "{table}");
                assert_eq!(table.matches("<td>follower</td>").count(), 2, "{table}");
            }
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the node tables never showed three current nodes: {tables:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_console_can_be_switched_off() {
    let nats = TestNats::start();
    let mut config = TestGateway::config(&nats);
    config.admin.enabled = false;
    let gateway = TestGateway::start_with(config).await;
    let response = gateway.request(Method::GET, "/admin", None).await;
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn with_tokens_required_the_console_needs_an_admin_sign_in_and_shows_one_tenant() {
    use starcite_tests::auth::{SigningKey, TestJwks, claims, mint};
    let nats = TestNats::start();
    let jwks = TestJwks::start().await;
    let gateway = TestGateway::start_with(jwks.config(&nats)).await;
    let writer = |tenant: &str| {
        mint(
            &claims(tenant, "service:app", "session:create"),
            SigningKey::Rsa,
        )
    };
    for (tenant, id) in [("acme", "mine"), ("globex", "theirs")] {
        let created = gateway
            .client
            .post(format!("{}/v1/sessions", gateway.base_url))
            .bearer_auth(writer(tenant))
            .json(&json!({"id": id}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
    }
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = |path: &str| format!("{}/admin{path}", gateway.base_url);

    let anonymous = client.get(url("")).send().await.unwrap();
    assert_eq!(anonymous.status(), 303);
    assert_eq!(anonymous.headers()["location"], "/admin/login");
    let login = client.get(url("/login")).send().await.unwrap();
    assert_eq!(login.status(), 200);
    let csrf = "ab".repeat(16);
    let csrf_cookie = format!("starcite_csrf={csrf}");
    let sign_in = |token: String| {
        client
            .post(url("/login"))
            .header("cookie", &csrf_cookie)
            .form(&[("csrf", csrf.as_str()), ("token", token.as_str())])
            .send()
    };
    let refused = sign_in(mint(
        &claims("acme", "user:1", "session:read"),
        SigningKey::Rsa,
    ))
    .await
    .unwrap();
    assert_eq!(refused.status(), 401);
    assert!(refused.text().await.unwrap().contains("starcite:admin"));
    let signed_in = sign_in(mint(
        &claims("acme", "user:1", "starcite:admin"),
        SigningKey::Rsa,
    ))
    .await
    .unwrap();
    assert_eq!(signed_in.status(), 303);
    let set_cookie = signed_in.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        set_cookie.contains("HttpOnly")
            && set_cookie.contains("Secure")
            && set_cookie.contains("SameSite=Strict")
    );
    let session_cookie = set_cookie.split(';').next().unwrap().to_owned();
    let cookies = format!("{session_cookie}; {csrf_cookie}");

    let page = client
        .get(url(""))
        .header("cookie", &cookies)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(page.contains("data-session-id=\"mine\""));
    assert!(
        !page.contains("theirs"),
        "another tenant's session is listed"
    );
    let other = client
        .get(url("/sessions/theirs"))
        .header("cookie", &cookies)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
    let archive = client
        .post(url("/sessions/theirs/archive"))
        .header("cookie", &cookies)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(archive.status(), 404);
    assert_eq!(
        client
            .get(url("/sessions/mine"))
            .header("cookie", &cookies)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // The page's live timeline rides on the sign-in, not on a bearer token.
    let live = client
        .get(url("/sessions/mine/live?cursor=0"))
        .header("cookie", &cookies)
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    assert_eq!(live.headers()["content-type"], "text/event-stream");
    let theirs = client
        .get(url("/sessions/theirs/live"))
        .header("cookie", &cookies)
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), 404);
    let anonymous = client.get(url("/sessions/mine/live")).send().await.unwrap();
    assert_eq!(anonymous.status(), 303);

    // A cookie with a changed payload is nobody's.
    let (payload, mac) = session_cookie.split_once('.').unwrap();
    let forged = format!("{}x.{mac}", payload);
    let forged = client
        .get(url(""))
        .header("cookie", forged)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 303);
}
