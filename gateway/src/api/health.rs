//! Liveness and readiness, never authenticated.

use std::sync::Arc;

use poem_openapi::{ApiResponse, Object, OpenApi, payload::Json};

use super::ApiTags;
use crate::nats::{Store, TopologyHealth};

#[derive(Debug, Object)]
pub struct HealthStatus {
    /// `ok`, or `starting` while the gateway cannot serve.
    status: String,
    /// Why the gateway is not ready.
    #[oai(skip_serializing_if_is_none)]
    reason: Option<String>,
}

#[derive(ApiResponse)]
pub enum ReadyResponse {
    /// NATS is connected and the stream and bucket are in place.
    #[oai(status = 200)]
    Ready(Json<HealthStatus>),
    /// Not ready: NATS is unreachable, the stream is not set up yet, or a stream or bucket is
    /// missing and being created again.
    #[oai(status = 503)]
    NotReady(Json<HealthStatus>),
}

pub struct HealthApi {
    pub store: Arc<Store>,
}

#[OpenApi(tag = "ApiTags::Health")]
impl HealthApi {
    /// The process is up.
    ///
    /// Always 200 `{"status": "ok"}` while the process answers HTTP. It does not look at NATS, so
    /// use it as a liveness probe (restart the process when it fails), not to decide where to send
    /// traffic: that is `/health/ready`. Never authenticated. With `STARCITE_OPS_LISTEN` set it is
    /// served on that address only, beside `/metrics`, and this address answers 404.
    #[oai(path = "/health/live", method = "get", operation_id = "health_live")]
    async fn live(&self) -> Json<HealthStatus> {
        Json(HealthStatus {
            status: "ok".to_owned(),
            reason: None,
        })
    }

    /// The gateway can serve: NATS is reachable and the stream usable.
    ///
    /// 200 `{"status": "ok"}` once NATS is connected and the events stream and the sessions bucket
    /// are in place, whatever the size of the session catalog: appends and tails are served at
    /// once, while lists answer `503 catalog_loading` until this gateway's catalog view is built.
    /// Otherwise 503 `{"status": "starting", "reason": …}`, the reason being `nats_unavailable` or
    /// `stream_missing` (a stream or bucket was deleted and is being created again); meanwhile
    /// requests to `/v1` may be answered 503 too. Send traffic to a gateway only while it answers 200. The answer comes from
    /// the gateway's own state, without a call to NATS, so polling it often costs nothing. Never
    /// authenticated. With `STARCITE_OPS_LISTEN` set it is served on that address only, beside
    /// `/metrics`, and this address answers 404.
    #[oai(path = "/health/ready", method = "get", operation_id = "health_ready")]
    async fn ready(&self) -> ReadyResponse {
        match readiness(&self.store) {
            Ok(()) => ReadyResponse::Ready(Json(HealthStatus {
                status: "ok".to_owned(),
                reason: None,
            })),
            Err(reason) => ReadyResponse::NotReady(Json(HealthStatus {
                status: "starting".to_owned(),
                reason: Some(reason.to_owned()),
            })),
        }
    }
}

/// Whether the gateway can serve, or why not; from its own state, without a call to NATS.
pub fn readiness(store: &Store) -> Result<(), &'static str> {
    if let TopologyHealth::Missing(_) = store.topology_health() {
        Err("stream_missing")
    } else if !store.is_ready() {
        Err("nats_unavailable")
    } else {
        Ok(())
    }
}
