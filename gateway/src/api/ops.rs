//! The operator's side: `GET /metrics` in the Prometheus text format, and every HTTP request
//! counted by its route template, method and status.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use poem::http::Method;
use poem::{Endpoint, IntoResponse, Request, Response, Result};
use tracing::Instrument;

use super::Templates;
use super::health::readiness;
use super::traces;
use crate::catalog::Catalog;
use crate::metrics::{self, HttpLabels, Metrics, StreamRole, StreamState};
use crate::nats::{Store, StreamFigures};

/// The route label of a request that matched no route. Never the raw path: label values must
/// be bounded.
pub const UNMATCHED: &str = "unmatched";

/// How long a scrape waits for the storage figures; without them it still answers.
const STORAGE_WAIT: Duration = Duration::from_millis(500);

/// The route template a response answered for, when the router did not see the request (a 401
/// given before routing).
#[derive(Debug, Clone, Copy)]
pub struct RouteTemplate(pub &'static str);

/// Route labels: poem's matched path patterns (`/v1/sessions/:param0`) as the spec's
/// templates (`/v1/sessions/{id}`), or in the spec's notation for routes outside it, each made
/// once. Patterns come from the routes in the code, so there are as many labels as routes.
#[derive(Clone)]
pub struct RouteLabels {
    templates: Templates,
    known: Arc<RwLock<HashMap<Box<str>, &'static str>>>,
}

impl RouteLabels {
    pub fn new(templates: Templates) -> RouteLabels {
        RouteLabels {
            templates,
            known: Arc::default(),
        }
    }

    pub fn label(&self, pattern: &str) -> &'static str {
        let known = self
            .known
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(label) = known.get(pattern) {
            return label;
        }
        drop(known);
        let mut known = self
            .known
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let templates = &self.templates;
        known.entry(pattern.into()).or_insert_with(|| {
            templates
                .of_pattern(pattern)
                .unwrap_or_else(|| Box::leak(template(pattern).into_boxed_str()))
        })
    }
}

/// `/v1/sessions/:id/tail` as `/v1/sessions/{id}/tail`; a wildcard `*rest` as `{rest}`.
pub fn template(pattern: &str) -> String {
    let segments: Vec<String> = pattern
        .split('/')
        .map(|segment| match segment.strip_prefix([':', '*']) {
            Some(name) => format!("{{{name}}}"),
            None => segment.to_owned(),
        })
        .collect();
    let joined = segments.join("/");
    if joined.is_empty() {
        "/".to_owned()
    } else {
        joined
    }
}

/// A label for every method, and one for methods HTTP does not define.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// Counts and traces one request when its response is ready: by the route template the router
/// matched (or a 401 named before routing), else `unmatched`.
pub async fn observe<E: Endpoint>(
    endpoint: E,
    request: Request,
    metrics: Arc<Metrics>,
    routes: RouteLabels,
) -> Result<Response> {
    let started = Instant::now();
    let method = method_label(request.method());
    let span = traces::request_span(&request);
    let response = match endpoint.call(request).instrument(span.clone()).await {
        Ok(response) => response.into_response(),
        Err(err) => err.into_response(),
    };
    let route = if let Some(RouteTemplate(template)) = response.data::<RouteTemplate>() {
        template
    } else if let Some(pattern) = response.data::<poem::PathPattern>() {
        routes.label(&pattern.0)
    } else {
        UNMATCHED
    };
    let labels = HttpLabels {
        route,
        method,
        status: response.status().as_u16(),
    };
    metrics.http_request(&labels, started.elapsed());
    traces::finish(&span, method, route, labels.status);
    Ok(response)
}

/// `GET /metrics`: the registry, then the gateway's state read now.
pub struct Scrape {
    pub metrics: Arc<Metrics>,
    pub store: Arc<Store>,
    pub catalog: Arc<Catalog>,
}

impl Endpoint for Scrape {
    type Output = Response;

    async fn call(&self, _request: Request) -> Result<Response> {
        let storage = match tokio::time::timeout(STORAGE_WAIT, self.store.storage()).await {
            Ok(Ok((shards, sessions))) => shards
                .iter()
                .map(|events| (StreamRole::Events, stream_state(events)))
                .chain([(StreamRole::Sessions, stream_state(&sessions))])
                .collect(),
            _ => Vec::new(),
        };
        let last_build = self.catalog.last_build();
        let state = metrics::State {
            ready: readiness(&self.store).is_ok(),
            nats: self.store.traffic(),
            catalog_sessions: self.catalog.session_count(),
            catalog_loading: self.catalog.is_loading(),
            catalog_applied: self.catalog.applied_total(),
            catalog_build_seconds: last_build.map_or(0.0, |build| build.total.as_secs_f64()),
            catalog_build_replay_seconds: last_build
                .map_or(0.0, |build| build.replay.as_secs_f64()),
            catalog_build_pending: self
                .catalog
                .build_progress()
                .map_or(0, |progress| progress.pending),
            storage,
        };
        Ok(Response::builder()
            .content_type(metrics::CONTENT_TYPE)
            .header(poem::http::header::CACHE_CONTROL, "no-store")
            .body(self.metrics.render(state)))
    }
}

fn stream_state(figures: &StreamFigures) -> StreamState {
    let followers = &figures.followers;
    let current_followers = followers
        .iter()
        .filter(|follower| follower.current && !follower.offline)
        .count();
    // A stream on one server has no cluster to report: its one replica is the leader.
    let leader = figures.leader.is_some() || figures.replicas <= 1;
    StreamState {
        shard: figures.shard,
        leader: figures.leader.clone(),
        messages: figures.messages,
        bytes: figures.bytes,
        subjects: figures.subjects,
        consumers: figures.consumers as u64,
        replicas: figures.replicas as u64,
        current_replicas: if leader {
            1 + current_followers as u64
        } else {
            0
        },
        follower_lag: followers
            .iter()
            .map(|follower| (follower.name.clone(), follower.lag))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_become_templates_once() {
        assert_eq!(
            template("/v1/sessions/:id/append"),
            "/v1/sessions/{id}/append"
        );
        assert_eq!(
            template("/admin/sessions/:id/:action"),
            "/admin/sessions/{id}/{action}"
        );
        assert_eq!(template("/docs/*path"), "/docs/{path}");
        assert_eq!(template(""), "/");
        let spec = r#"{"paths": {"/v1/sessions/{id}": {"get": {}}, "/v1/sessions": {"get": {}}}}"#;
        let labels = RouteLabels::new(Templates::from_spec(spec));
        let first = labels.label("/v1/sessions/:param0");
        assert_eq!(first, "/v1/sessions/{id}");
        assert!(std::ptr::eq(first, labels.label("/v1/sessions/:param0")));
        assert_eq!(labels.label("/v1/sessions"), "/v1/sessions");
        assert_eq!(
            labels.label("/admin/sessions/:id/live"),
            "/admin/sessions/{id}/live"
        );
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
    }
}
