//! Session operations: parse, call the session log, map its answer. Nothing else.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use poem::FromRequest;
use poem::Request;
use poem::web::websocket::{BoxWebSocketUpgraded, WebSocket};
use poem_openapi::param::{Path, Query};
use poem_openapi::{ApiResponse, Object, OpenApi, payload::Json};
use serde_json::Value;

use super::ApiTags;
use super::body::JsonBody;
use super::error::{ApiError, ErrorCode};
use crate::sessions::error::InvalidInput;
use crate::sessions::model::{SessionId, SessionSummary};
use crate::sessions::{Appended, SessionLog, input};
use crate::shutdown::Shutdown;

/// Body of `POST /v1/sessions`. Every field is optional.
#[derive(Debug, Object)]
struct CreateSessionRequest {
    /// Any non-empty string up to 256 bytes; generated (`ses_…`) when absent or null.
    #[oai(validator(min_length = 1, max_length = 256))]
    id: Option<String>,
    title: Option<String>,
    /// Any JSON object; `{}` when absent or null.
    metadata: Option<BTreeMap<String, Value>>,
}

/// Body of `POST /v1/sessions/{id}/append`: one event.
#[derive(Debug, Object)]
struct AppendRequest {
    /// The event type, e.g. `message`, `tool_call`, `state`.
    #[oai(rename = "type", validator(min_length = 1))]
    kind: String,
    /// Any JSON object.
    payload: BTreeMap<String, Value>,
    /// Who acts, e.g. `agent:researcher`.
    #[oai(validator(min_length = 1))]
    actor: String,
    /// The writer; `(producer_id, producer_seq)` makes retries safe.
    #[oai(validator(min_length = 1))]
    producer_id: String,
    /// The writer's own counter: contiguous per producer after its first append. A decimal
    /// string is accepted too.
    #[oai(validator(minimum(value = "1")))]
    producer_seq: u64,
    #[oai(validator(min_length = 1))]
    source: Option<String>,
    metadata: Option<BTreeMap<String, Value>>,
    /// References; `to_seq` and `step` are integers >= 0, `request_id` and `sequence_id`
    /// strings, other keys are kept as sent.
    refs: Option<BTreeMap<String, Value>>,
    /// Stored and echoed; part of what makes two requests "the same".
    #[oai(validator(min_length = 1))]
    idempotency_key: Option<String>,
    /// Append only if the session's `last_seq` equals this (optimistic concurrency).
    expected_seq: Option<u64>,
}

/// A session header with the head of its log.
#[derive(Debug, Object)]
struct SessionBody {
    id: String,
    title: Option<String>,
    metadata: BTreeMap<String, Value>,
    /// The newest event's seq; 0 for an empty session.
    last_seq: u64,
    created_at: String,
    updated_at: String,
    version: u64,
    archived: bool,
}

impl From<SessionSummary> for SessionBody {
    fn from(summary: SessionSummary) -> SessionBody {
        let session = summary.session;
        SessionBody {
            id: session.id.into(),
            title: session.title,
            metadata: session.metadata.into_iter().collect(),
            last_seq: summary.last_seq,
            created_at: session.created_at,
            updated_at: session.updated_at,
            version: session.version,
            archived: session.archived,
        }
    }
}

/// The answer to an append, fresh or deduped alike.
#[derive(Debug, Object)]
struct AppendReply {
    /// The event's seq; for a deduped retry, the seq the original got.
    seq: u64,
    /// The session's newest seq now.
    last_seq: u64,
    /// True when this was a retry of the producer's latest request and nothing was appended.
    deduped: bool,
    /// Equal to `seq`: resume a tail after it.
    cursor: u64,
    /// Everything up to here is durable in JetStream; equal to `last_seq`.
    committed_cursor: u64,
}

impl From<Appended> for AppendReply {
    fn from(appended: Appended) -> AppendReply {
        AppendReply {
            seq: appended.seq,
            last_seq: appended.last_seq,
            deduped: appended.deduped,
            cursor: appended.seq,
            committed_cursor: appended.last_seq,
        }
    }
}

#[derive(ApiResponse)]
enum CreatedSession {
    /// The session was created.
    #[oai(status = 201)]
    Created(Json<SessionBody>),
}

#[derive(ApiResponse)]
enum AppendedEvent {
    /// The event is committed (or was already: see `deduped`).
    #[oai(status = 201)]
    Created(Json<AppendReply>),
}

pub struct SessionsApi {
    pub log: Arc<SessionLog>,
    pub tail_ping_interval: Duration,
    pub shutdown: Shutdown,
}

fn session_id(raw: &str) -> Result<SessionId, ApiError> {
    SessionId::parse(raw).map_err(|_| InvalidInput::SessionId.into())
}

#[OpenApi(tag = "ApiTags::Sessions")]
impl SessionsApi {
    /// Create a session.
    #[oai(
        path = "/v1/sessions",
        method = "post",
        operation_id = "create_session"
    )]
    async fn create(
        &self,
        body: JsonBody<CreateSessionRequest>,
    ) -> Result<CreatedSession, ApiError> {
        let body = body.into_value().map_err(InvalidInput::Session)?;
        let new_session = input::new_session(body)?;
        let summary = self.log.create(new_session).await?;
        Ok(CreatedSession::Created(Json(summary.into())))
    }

    /// Get a session's header and `last_seq`.
    #[oai(
        path = "/v1/sessions/:id",
        method = "get",
        operation_id = "get_session"
    )]
    async fn get(&self, id: Path<String>) -> Result<Json<SessionBody>, ApiError> {
        let id = session_id(&id)?;
        Ok(Json(self.log.get(&id).await?.into()))
    }

    /// Append one event. It is committed to JetStream before this returns; `seq` is gapless.
    #[oai(
        path = "/v1/sessions/:id/append",
        method = "post",
        operation_id = "append_event"
    )]
    async fn append(
        &self,
        id: Path<String>,
        body: JsonBody<AppendRequest>,
    ) -> Result<AppendedEvent, ApiError> {
        // Validate before touching NATS: a rejected append must leave nothing half-written.
        let body = body.into_value().map_err(InvalidInput::Event)?;
        let event = input::new_event(body)?;
        let id = session_id(&id)?;
        let appended = self.log.append(&id, event).await?;
        Ok(AppendedEvent::Created(Json(appended.into())))
    }

    /// Tail a session over a WebSocket: every event with `seq > cursor` (default 0), in order,
    /// then new ones live. One JSON event per text frame; pings while idle. Close 1001 means the
    /// gateway is going away, 1011 that storage failed: reconnect with your last seq.
    #[oai(
        path = "/v1/sessions/:id/tail",
        method = "get",
        operation_id = "tail_session"
    )]
    async fn tail(
        &self,
        request: &Request,
        id: Path<String>,
        cursor: Query<Option<String>>,
    ) -> Result<BoxWebSocketUpgraded, ApiError> {
        let upgrade = request.headers().get(poem::http::header::UPGRADE);
        if !upgrade.is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"websocket")) {
            return Err(ApiError::new(
                ErrorCode::InvalidWebsocketUpgrade,
                "WebSocket upgrade required",
            ));
        }
        let cursor = input::cursor(cursor.0.as_deref())?;
        let id = session_id(&id)?;
        let feed = self.log.open_tail(&id, cursor).await?;
        let websocket = WebSocket::from_request_without_body(request)
            .await
            .map_err(|err| {
                ApiError::new(
                    ErrorCode::InvalidWebsocketUpgrade,
                    format!("WebSocket upgrade failed: {err}"),
                )
            })?;
        let items =
            crate::tail::follow(feed, cursor, self.tail_ping_interval, self.shutdown.clone());
        // The upgrade callback must be `Sync`; the consumer's stream is only `Send`, and a
        // mutex makes it shareable without ever being contended.
        let items = std::sync::Mutex::new(items);
        Ok(websocket
            .on_upgrade(move |socket| {
                let items = items
                    .into_inner()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                super::tail::pump(socket, items).boxed()
            })
            .boxed())
    }
}
