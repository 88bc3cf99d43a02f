//! The HTTP and WebSocket surface: the only module that knows poem, status codes and JSON.

pub mod error;
mod health;
mod lenient;
mod lifecycle;
mod sessions;
mod stream;

use std::sync::Arc;
use std::time::Duration;

use poem::{Endpoint, EndpointExt, IntoResponse, Route};
use poem_openapi::{OpenApiService, Tags};

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
    /// The admin console's routes, nested at `/admin` when it is enabled.
    pub admin: Option<poem::endpoint::BoxEndpoint<'static, poem::Response>>,
    pub figures: Arc<Figures>,
    pub log: Arc<SessionLog>,
    pub catalog: Arc<Catalog>,
    pub store: Arc<Store>,
    pub tail_ping_interval: Duration,
    pub tail_buffer: usize,
    pub tail_stall_timeout: Duration,
    pub max_body_bytes: usize,
    pub shutdown: Shutdown,
}

type Apis = (SessionsApi, LifecycleApi, HealthApi);

fn service(apis: Apis) -> OpenApiService<Apis, ()> {
    OpenApiService::new(apis, "Starcite", env!("CARGO_PKG_VERSION")).description(
        "The durable session log for multi-agent AI: append events with gapless per-session \
         seqs, then read them from any cursor, replay and live on one WebSocket. Every error \
         is `{\"error\": \"<code>\", \"message\": \"...\"}`.",
    )
}

/// The routes: the API, its spec at `/openapi.json` and interactive docs at `/docs`.
pub fn routes(state: ApiState) -> impl Endpoint {
    let live = Live {
        figures: state.figures.clone(),
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
        },
        LifecycleApi {
            catalog: state.catalog.clone(),
            live,
        },
        HealthApi {
            store: state.store,
            catalog: state.catalog,
        },
    ));
    let mut routes = Route::new();
    if let Some(admin) = state.admin {
        routes = routes.nest("/admin", admin);
    }
    routes
        .at("/openapi.json", service.spec_endpoint())
        .nest("/docs", service.swagger_ui())
        .nest("/", service)
        .data(BodyLimit(state.max_body_bytes))
        .catch_all_error(|err: poem::Error| async move {
            if err.is_from_response() {
                err.into_response()
            } else {
                error::from_poem_error(&err).into_response()
            }
        })
}
