//! `GET /metrics`: after a known mix of appends, tails, a gap and a slow reader, the scraped
//! counters moved by exactly that much (the exposition read with a Prometheus text parser);
//! every metric the operations guide lists is there with its type; labels never carry a path
//! or a session; and with `STARCITE_OPS_LISTEN` the operator's endpoints move to their own
//! address.
//!
//! `Metrics` reads a scrape; `counters` and `exposition` hold the tests.

mod counters;
mod exposition;

use openmetrics_parser::prometheus::parse_prometheus;
use openmetrics_parser::{MetricFamily, MetricsExposition, PrometheusType, PrometheusValue};

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
