//! The HTTP and WebSocket surface: the only module that knows poem, status codes and JSON.

mod auth;
mod durable_streams;
pub mod error;
mod health;
mod lifecycle;
mod limits;
mod nullable;
mod ops;
mod produce;
mod raw_input;
mod sessions;
mod traces;

use std::sync::Arc;

use poem::error::NotFoundError;
use poem::http::{StatusCode, header};
use poem::{Endpoint, EndpointExt, IntoResponse, Request, Response, Route};
use poem_openapi::registry::{
    MetaMediaType, MetaResponse, MetaResponses, MetaSchema, MetaSchemaRef, Registry,
};
use poem_openapi::{ApiResponse, OpenApiService, ServerObject, Tags};

use crate::catalog::Catalog;
use crate::config::LimitsConfig;
use crate::live::{Live, LiveResponse};
use crate::metrics::Metrics;
use crate::nats::Store;
use crate::sessions::SessionLog;
use health::HealthApi;
use lifecycle::LifecycleApi;
use raw_input::BodyLimit;
use sessions::SessionsApi;

#[derive(Tags)]
enum ApiTags {
    /// Create sessions, append events, tail them.
    Sessions,
    /// Session lifecycle events (created, updated, archived, unarchived).
    Lifecycle,
    /// Liveness and readiness probes.
    Health,
}

/// What the API needs from the rest of the gateway.
pub struct ApiState {
    /// Checks bearer tokens on `/v1` (authentication on), or `None` (off).
    pub verifier: Option<Arc<crate::auth::Verifier>>,
    pub metrics: Arc<Metrics>,
    /// Serve `/metrics` and `/health/*` on a listener of their own (`ops_routes`), and answer
    /// 404 for them here.
    pub ops_elsewhere: bool,
    pub log: Arc<SessionLog>,
    pub catalog: Arc<Catalog>,
    pub store: Arc<Store>,
    /// Tails and the lifecycle feed answer with live responses.
    pub live: Live,
    pub limits: LimitsConfig,
}

type Apis = (SessionsApi, LifecycleApi, HealthApi);

fn service(apis: Apis) -> OpenApiService<Apis, ()> {
    OpenApiService::new(apis, "Starcite", env!("CARGO_PKG_VERSION"))
        .description(
            "The durable session log for multi-agent AI: append events with gapless per-session \
             seqs, then read them from any cursor, replay and live on one WebSocket. Every error \
             is `{\"error\": \"<code>\", \"message\": \"...\"}`.",
        )
        // Every gateway serves this spec at its own root, behind whatever address it is reached
        // by: a relative URL names that gateway, wherever it runs, and keeps the served spec
        // identical to the committed one.
        .server(ServerObject::new("/").description(
            "The gateway serving this document (`make run` listens on http://127.0.0.1:4000)",
        ))
}

/// How the spec documents a live response.
impl ApiResponse for LiveResponse {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: vec![
                MetaResponse {
                    description: "WebSocket upgrade: one JSON object per text frame",
                    status: Some(101),
                    status_range: None,
                    content: vec![],
                    headers: vec![],
                },
                MetaResponse {
                    description: "Server-Sent Events (with `Accept: text/event-stream`): `id:` is the position, `data:` the JSON",
                    status: Some(200),
                    status_range: None,
                    content: vec![MetaMediaType {
                        content_type: "text/event-stream",
                        schema: MetaSchemaRef::Inline(Box::new(MetaSchema::new("string"))),
                    }],
                    headers: vec![],
                },
            ],
        }
    }

    fn register(_registry: &mut Registry) {}
}

/// What a gateway serves: the public routes, and the operator's routes when they have a
/// listener of their own.
pub struct Routes {
    pub public: poem::endpoint::BoxEndpoint<'static>,
    pub ops: Option<poem::endpoint::BoxEndpoint<'static>>,
}

/// The routes: the API, its spec at `/openapi.json`, interactive docs at `/docs`, `/metrics`
/// and the health probes (on the ops routes instead when `ops_elsewhere`), and `beside` (routes
/// of the rest of the gateway, such as the console), which get the same error shape, request
/// counting and authentication layer as the API's own.
pub fn routes(state: ApiState, beside: Route) -> Routes {
    let live = state.live;
    let health = || HealthApi {
        store: state.store.clone(),
    };
    let scrape = || {
        poem::get(ops::Scrape {
            metrics: state.metrics.clone(),
            store: state.store.clone(),
            catalog: state.catalog.clone(),
        })
    };
    let append_rate = state.limits.append_rate.map(|rate| {
        Arc::new(limits::AppendRate::new(
            rate,
            state.limits.append_burst.unwrap_or(rate),
        ))
    });
    let durable_streams = durable_streams::DurableStreams {
        log: state.log.clone(),
        catalog: state.catalog.clone(),
        live: live.clone(),
        append_rate: append_rate.clone(),
        long_poll_timeout: state.limits.long_poll_timeout,
        rendered: Default::default(),
    };
    let producers = Arc::new(produce::Producers {
        log: state.log.clone(),
        live: live.clone(),
        append_rate: append_rate.clone(),
        window: state.limits.produce_window,
        max_frame_bytes: state.limits.max_body_bytes,
    });
    let service = service((
        SessionsApi {
            log: state.log,
            catalog: state.catalog.clone(),
            live: live.clone(),
            append_rate,
            producers,
        },
        LifecycleApi {
            catalog: state.catalog.clone(),
            live,
        },
        health(),
    ));
    let templates = Templates::from_spec(&service.spec());
    let labels = ops::RouteLabels::new(templates.clone());
    let ops_elsewhere = state.ops_elsewhere;
    let mut routes = beside;
    if !ops_elsewhere {
        routes = routes.at("/metrics", scrape());
    }
    let verifier = state.verifier;
    let (metrics, auth_templates) = (state.metrics.clone(), templates.clone());
    let public = routes
        .at(format!("{}*name", durable_streams::PREFIX), durable_streams)
        .at("/openapi.json", service.spec_endpoint())
        .nest("/docs", service.swagger_ui())
        .nest("/", service)
        .data(BodyLimit(state.limits.max_body_bytes))
        .around(move |endpoint, request| async move {
            // Not routed at all, so they count as `unmatched`.
            if ops_elsewhere && ops_path(request.uri().path()) {
                return Err(NotFoundError.into());
            }
            endpoint
                .call(request)
                .await
                .map(IntoResponse::into_response)
        })
        .around(move |endpoint, request| {
            auth::authenticate(
                endpoint,
                request,
                verifier.clone(),
                metrics.clone(),
                auth_templates.clone(),
            )
        });
    let ops = ops_elsewhere.then(|| {
        let service =
            OpenApiService::new(health(), "Starcite operations", env!("CARGO_PKG_VERSION"));
        let routes = Route::new().at("/metrics", scrape()).nest("/", service);
        finish(
            routes,
            templates.clone(),
            state.metrics.clone(),
            labels.clone(),
        )
    });
    Routes {
        public: finish(public, templates, state.metrics, labels),
        ops,
    }
}

/// Whether a path is one of the operator's, served on their own listener when there is one.
fn ops_path(path: &str) -> bool {
    path == "/metrics" || path.starts_with("/health/")
}

/// Gives every error the API's JSON shape (and a 405 its `Allow`), then counts the request.
fn finish(
    routes: impl Endpoint + 'static,
    templates: Templates,
    metrics: Arc<Metrics>,
    labels: ops::RouteLabels,
) -> poem::endpoint::BoxEndpoint<'static> {
    routes
        .around(move |endpoint, request| answer_errors(endpoint, request, templates.clone()))
        .around(move |endpoint, request| {
            ops::observe(endpoint, request, metrics.clone(), labels.clone())
        })
        .boxed()
}

async fn answer_errors<E: Endpoint>(
    endpoint: E,
    request: Request,
    templates: Templates,
) -> poem::Result<Response> {
    let path = request.uri().path().to_owned();
    match endpoint.call(request).await {
        Ok(response) => Ok(response.into_response()),
        Err(err) if err.is_from_response() => Ok(err.into_response()),
        Err(err) => {
            let mut response = error::from_poem_error(&err).into_response();
            if response.status() == StatusCode::METHOD_NOT_ALLOWED
                && let Ok(methods) = templates.methods(&path).join(", ").parse()
            {
                response.headers_mut().insert(header::ALLOW, methods);
            }
            // The route it matched, for the request's metrics; a path no route takes gets the
            // pattern of the nest it fell into, which is not its route.
            if !err.is::<NotFoundError>()
                && let Some(pattern) = err.data::<poem::PathPattern>()
            {
                response.set_data(pattern.clone());
            }
            Ok(response)
        }
    }
}

/// The documented path templates: which methods each takes (for the `Allow` header of a 405)
/// and, for requests answered before routing, which one a path fits.
#[derive(Clone)]
pub(crate) struct Templates {
    paths: Arc<Vec<Template>>,
}

struct Template {
    segments: Vec<String>,
    methods: Vec<String>,
    label: &'static str,
}

impl Templates {
    pub(crate) fn from_spec(spec: &str) -> Templates {
        let spec: serde_json::Value = serde_json::from_str(spec).unwrap_or_default();
        let paths = spec["paths"]
            .as_object()
            .map(|paths| {
                paths
                    .iter()
                    .map(|(template, operations)| {
                        let segments = template.split('/').map(str::to_owned).collect();
                        // Made once per documented path, when the gateway starts.
                        let label: &'static str = Box::leak(template.clone().into_boxed_str());
                        let methods = operations
                            .as_object()
                            .map(|operations| {
                                operations
                                    .keys()
                                    .map(|method| method.to_uppercase())
                                    .collect()
                            })
                            .unwrap_or_default();
                        Template {
                            segments,
                            methods,
                            label,
                        }
                    })
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let mut paths = paths;
        paths.push(Template {
            segments: vec![String::new(), "metrics".to_owned()],
            methods: vec!["GET".to_owned()],
            label: "/metrics",
        });
        Templates {
            paths: Arc::new(paths),
        }
    }

    fn find(&self, path: &str) -> Option<&Template> {
        self.matching(path, |segment| !segment.is_empty())
    }

    /// The template whose segments are `path`'s, a `{parameter}` standing for any segment
    /// `fills_parameter` accepts.
    fn matching(&self, path: &str, fills_parameter: impl Fn(&str) -> bool) -> Option<&Template> {
        let segments: Vec<&str> = path.split('/').collect();
        self.paths.iter().find(|template| {
            template.segments.len() == segments.len()
                && template
                    .segments
                    .iter()
                    .zip(&segments)
                    .all(|(expected, actual)| {
                        (expected.starts_with('{') && fills_parameter(actual)) || expected == actual
                    })
        })
    }

    fn methods(&self, path: &str) -> Vec<String> {
        self.find(path)
            .map(|template| template.methods.clone())
            .unwrap_or_default()
    }

    /// The documented template a router pattern (`/v1/sessions/:param0`) stands for, if any.
    pub(crate) fn of_pattern(&self, pattern: &str) -> Option<&'static str> {
        self.matching(pattern, |segment| segment.starts_with([':', '*']))
            .map(|template| template.label)
    }

    /// The documented template `path` fits, if any.
    pub(crate) fn template(&self, path: &str) -> Option<&'static str> {
        self.find(path).map(|template| template.label)
    }
}
