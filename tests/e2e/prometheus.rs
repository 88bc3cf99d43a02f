//! A real Prometheus (Debian's `prometheus`, on `PATH`) scraping a test gateway's `/metrics`:
//! a query through its HTTP API returns the appends just made; the alert rules of
//! `deploy/prometheus/alerts.yml` and every query of the Grafana dashboard evaluate against the
//! scraped gateway, naming only metrics it exposes; and `promtool check metrics` accepts the
//! exposition.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use starcite_tests::{TailClient, TestGateway, TestNats, TestPrometheus, event, sample_value};

/// Long enough for a few 1 s scrapes and rule evaluations on a loaded machine.
const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn prometheus_scrapes_the_gateway_and_answers_the_appends_just_made() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let target = address(&gateway);
    let prometheus = TestPrometheus::start(&[target], &[]).await;
    prometheus.wait_until_up("starcite").await;
    let appended =
        "sum(starcite_appends_total{job=\"starcite\",outcome=\"appended\"}) or vector(0)";
    let deduped = "sum(starcite_appends_total{job=\"starcite\",outcome=\"deduped\"}) or vector(0)";
    let total = "sum(starcite_appends_total{job=\"starcite\"}) or vector(0)";
    let before = (
        prometheus.value(appended).await.unwrap(),
        prometheus.value(deduped).await.unwrap(),
        prometheus.value(total).await.unwrap(),
    );

    let id = gateway.create_session().await;
    for producer_seq in 1..=5 {
        gateway.append_ok(&id, event("writer", producer_seq)).await;
    }
    let retry = gateway.append_ok(&id, event("writer", 5)).await;
    assert_eq!(retry["deduped"], true);

    prometheus.wait_for_value(total, before.2 + 6.0, WAIT).await;
    assert_eq!(prometheus.value(appended).await, Some(before.0 + 5.0));
    assert_eq!(prometheus.value(deduped).await, Some(before.1 + 1.0));
    // The series carry the scrape's own labels: which job, which gateway.
    let series = prometheus
        .query("starcite_appends_total{outcome=\"appended\"}")
        .await
        .unwrap();
    assert_eq!(series.len(), 1, "{series:?}");
    assert_eq!(series[0]["metric"]["job"], "starcite");
    assert_eq!(series[0]["metric"]["instance"], target);
    assert_eq!(sample_value(&series[0]), before.0 + 5.0);
}

#[tokio::test]
async fn the_alert_rules_and_the_dashboard_evaluate_against_a_scraped_gateway() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let (id, _tail) = activity(&gateway).await;
    let alerts = repo().join("deploy/prometheus/alerts.yml");
    let prometheus = TestPrometheus::start(&[address(&gateway)], &[&alerts]).await;
    prometheus.wait_until_up("starcite").await;

    // Every rule evaluated without an error, and none fires against a healthy gateway.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let rules = rules(&prometheus).await;
        // Evaluated, and the gateway scraped (evaluations now read its series).
        let evaluated = prometheus.value("min(starcite_ready)").await == Some(1.0)
            && rules.iter().all(|rule| {
                rule["health"] == "ok"
                    && rule["lastEvaluation"]
                        .as_str()
                        .is_some_and(|time| !time.starts_with("0001"))
            });
        if evaluated {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the rules never evaluated cleanly: {rules:#?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Two more evaluations, on series scraped before them.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rules = rules(&prometheus).await;
    let names: Vec<&str> = rules
        .iter()
        .map(|rule| rule["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "StarciteNatsDisconnected",
            "StarciteHighServerErrorRate",
            "StarciteAppendLatencyHigh",
            "StarciteSlowReaderDisconnects",
            "StarciteNotReady",
            "StarciteCatalogLoading",
        ]
    );
    for rule in &rules {
        assert_eq!(rule["health"], "ok", "{rule:#}");
        assert_eq!(rule["state"], "inactive", "{rule:#}");
    }

    // Every dashboard query is valid PromQL, with Grafana's variables as it fills them in.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("deploy/grafana/dashboards/starcite.json")).unwrap(),
    )
    .unwrap();
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() >= 20, "{queries:?}");
    for query in &queries {
        let query = query
            .replace("$__rate_interval", "1m")
            .replace("$instance", ".*")
            .replace("$job", "starcite");
        if let Err(err) = prometheus.query(&query).await {
            panic!("the dashboard's query {query} fails: {err}");
        }
    }
    // Appends made now show in the dashboard's appends/s once two scrapes have seen them.
    for producer_seq in 4..=6 {
        gateway.append_ok(&id, event("writer", producer_seq)).await;
    }
    prometheus
        .wait_for_value(
            "sum(rate(starcite_appends_total{job=\"starcite\", outcome=\"appended\"}[1m])) > bool 0",
            1.0,
            WAIT,
        )
        .await;

    // Every metric the rules and the dashboard read is one the gateway exposes: a misspelt
    // name would make a panel empty and an alert silent, not fail.
    let exposed = exposed_families(&prometheus).await;
    let mut read: BTreeSet<String> = BTreeSet::new();
    for rule in &rules {
        read.extend(metric_names(rule["query"].as_str().unwrap()));
    }
    for query in &queries {
        read.extend(metric_names(query));
    }
    read.remove("ALERTS");
    assert!(read.len() >= 15, "{read:?}");
    let missing: Vec<&String> = read.difference(&exposed).collect();
    assert!(
        missing.is_empty(),
        "read by deploy/ but not exposed by the gateway: {missing:?} (exposed: {exposed:?})"
    );
}

#[tokio::test]
async fn promtool_check_metrics_accepts_the_exposition() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let _activity = activity(&gateway).await;
    let response = gateway
        .client
        .get(format!("{}/metrics", gateway.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // Prometheus 3 (the compose profile's) refuses a scrape whose type it does not know.
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4")
            || content_type.starts_with("application/openmetrics-text; version=1.0.0"),
        "{content_type}"
    );
    let exposition = response.text().await.unwrap();

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| {
            panic!(
                "cannot run promtool ({err}); it comes with Debian's prometheus package, which \
                 .ci/run installs"
            )
        });
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let output = promtool.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics refused the exposition:\n{}{}\n---\n{exposition}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Appends (one deduped), a live tail that receives them, reads: so the histograms, gauges and
/// labelled counters all have samples. Returns the session, and the tail still open: a live
/// stream to count.
async fn activity(gateway: &TestGateway) -> (String, TailClient) {
    let id = gateway.create_session().await;
    let mut tail = gateway.tail(&id, 0).await;
    for producer_seq in 1..=3 {
        gateway.append_ok(&id, event("writer", producer_seq)).await;
    }
    gateway.append_ok(&id, event("writer", 3)).await;
    assert_eq!(tail.seqs(3).await, vec![1, 2, 3]);
    gateway.last_seq(&id).await;
    (id, tail)
}

/// The metric families of the job `starcite`, as Prometheus parsed them from its scrapes
/// (each family's HELP and TYPE, samples or not).
async fn exposed_families(prometheus: &TestPrometheus) -> BTreeSet<String> {
    let metadata = prometheus
        .api(
            "targets/metadata",
            &[("match_target", "{job=\"starcite\"}")],
        )
        .await
        .unwrap();
    let mut families: BTreeSet<String> = metadata
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["metric"].as_str().unwrap().to_owned())
        .collect();
    // Series names too: a counter family `x_total` may be listed as `x` (OpenMetrics).
    let names = prometheus
        .api(
            "label/__name__/values",
            &[("match[]", "{job=\"starcite\"}")],
        )
        .await
        .unwrap();
    families.extend(
        names
            .as_array()
            .unwrap()
            .iter()
            .map(|name| name.as_str().unwrap().to_owned()),
    );
    families
}

/// Every rule Prometheus loaded, in file order, as `/api/v1/rules` describes them.
async fn rules(prometheus: &TestPrometheus) -> Vec<Value> {
    let data = prometheus.api("rules", &[]).await.unwrap();
    data["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|group| group["rules"].as_array().unwrap().clone())
        .collect()
}

/// Every expression of the dashboard's panels.
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| {
            panel["targets"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|target| target["expr"].as_str().unwrap().to_owned())
        })
        .collect()
}

/// The metric names an expression reads (Starcite's and the process's), histogram series
/// named by their family.
fn metric_names(promql: &str) -> BTreeSet<String> {
    promql
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|word| {
            word.starts_with("starcite_") || word.starts_with("process_") || *word == "ALERTS"
        })
        .map(|word| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| word.strip_suffix(suffix))
                .unwrap_or(word)
                .to_owned()
        })
        .collect()
}

fn address(gateway: &TestGateway) -> &str {
    gateway.base_url.trim_start_matches("http://")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}
