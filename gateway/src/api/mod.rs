//! The HTTP and WebSocket surface: the only module that knows poem, status codes and JSON.

mod auth;
pub mod error;
mod health;
mod lenient;
mod lifecycle;
mod limits;
mod sessions;
pub(crate) mod stream;

use std::sync::Arc;
use std::time::Duration;

use poem::http::{StatusCode, header};
use poem::{Endpoint, EndpointExt, IntoResponse, Route};
use poem_openapi::{OpenApiService, ServerObject, Tags};

use crate::catalog::Catalog;
use crate::figures::Figures;
use crate::nats::Store;
use crate::sessions::SessionLog;
use crate::shutdown::Shutdown;
use health::HealthApi;
use lenient::BodyLimit;
use lifecycle::LifecycleApi;
use sessions::SessionsApi;
use stream::Live;

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
    /// The admin console's routes, nested at `/admin` when it is enabled.
    pub admin: Option<crate::admin::Admin>,
    pub figures: Arc<Figures>,
    pub log: Arc<SessionLog>,
    pub catalog: Arc<Catalog>,
    pub store: Arc<Store>,
    pub tail_ping_interval: Duration,
    pub tail_buffer: usize,
    /// Live streams one token holder may have open at once, per gateway.
    pub tails_per_token: usize,
    pub tail_stall_timeout: Duration,
    pub max_body_bytes: usize,
    /// Appends per second per tenant, and the burst above it.
    pub append_rate: Option<(u32, u32)>,
    pub shutdown: Shutdown,
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

/// The routes: the API, its spec at `/openapi.json` and interactive docs at `/docs`.
pub fn routes(state: ApiState) -> impl Endpoint {
    let live = Live {
        figures: state.figures.clone(),
        tail_quota: Arc::new(limits::TailQuota::new(state.tails_per_token)),
        ping_interval: state.tail_ping_interval,
        buffer: state.tail_buffer,
        stall_timeout: state.tail_stall_timeout,
        shutdown: state.shutdown,
    };
    let service = service((
        SessionsApi {
            log: state.log,
            catalog: state.catalog.clone(),
            live: live.clone(),
            append_rate: state
                .append_rate
                .map(|(rate, burst)| limits::AppendRate::new(rate, burst)),
        },
        LifecycleApi {
            catalog: state.catalog.clone(),
            live: live.clone(),
        },
        HealthApi {
            store: state.store,
            catalog: state.catalog,
        },
    ));
    let allowed = AllowedMethods::from_spec(&service.spec());
    let verifier = state.verifier;
    let mut routes = Route::new();
    if let Some(admin) = state.admin {
        routes = routes.nest("/admin", crate::admin::routes(admin, live.clone()));
    }
    routes
        .at("/openapi.json", service.spec_endpoint())
        .nest("/docs", service.swagger_ui())
        .nest("/", service)
        .data(BodyLimit(state.max_body_bytes))
        .around(move |endpoint, request| auth::authenticate(endpoint, request, verifier.clone()))
        .around(move |endpoint, request| {
            let allowed = allowed.clone();
            async move {
                let path = request.uri().path().to_owned();
                match endpoint.call(request).await {
                    Ok(response) => Ok(response),
                    Err(err) if err.is_from_response() => Ok(err.into_response()),
                    Err(err) => {
                        let mut response = error::from_poem_error(&err).into_response();
                        if response.status() == StatusCode::METHOD_NOT_ALLOWED
                            && let Ok(methods) = allowed.methods(&path).join(", ").parse()
                        {
                            response.headers_mut().insert(header::ALLOW, methods);
                        }
                        Ok(response)
                    }
                }
            }
        })
}

/// Which methods each documented path template takes, for the `Allow` header of a 405.
#[derive(Clone)]
struct AllowedMethods {
    paths: Arc<Vec<(Vec<String>, Vec<String>)>>,
}

impl AllowedMethods {
    fn from_spec(spec: &str) -> AllowedMethods {
        let spec: serde_json::Value = serde_json::from_str(spec).unwrap_or_default();
        let paths = spec["paths"]
            .as_object()
            .map(|paths| {
                paths
                    .iter()
                    .map(|(template, operations)| {
                        let segments = template.split('/').map(str::to_owned).collect();
                        let methods = operations
                            .as_object()
                            .map(|operations| {
                                operations
                                    .keys()
                                    .map(|method| method.to_uppercase())
                                    .collect()
                            })
                            .unwrap_or_default();
                        (segments, methods)
                    })
                    .collect()
            })
            .unwrap_or_default();
        AllowedMethods {
            paths: Arc::new(paths),
        }
    }

    fn methods(&self, path: &str) -> Vec<String> {
        let segments: Vec<&str> = path.split('/').collect();
        self.paths
            .iter()
            .find(|(template, _)| {
                template.len() == segments.len()
                    && template.iter().zip(&segments).all(|(expected, actual)| {
                        (expected.starts_with('{') && !actual.is_empty()) || expected == actual
                    })
            })
            .map(|(_, methods)| methods.clone())
            .unwrap_or_default()
    }
}
