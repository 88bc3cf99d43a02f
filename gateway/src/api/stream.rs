//! Live responses: a tail stream delivered over a WebSocket (one text frame per entry, pings
//! while idle) or as Server-Sent Events (`id:` = position, comment heartbeats).

use futures::{SinkExt, Stream, StreamExt};
use poem::http::header;
use poem::web::websocket::{CloseCode, Message, WebSocket, WebSocketStream};
use poem::{Body, IntoResponse, Request, Response};
use poem_openapi::ApiResponse;
use poem_openapi::registry::{
    MetaMediaType, MetaResponse, MetaResponses, MetaSchema, MetaSchemaRef, Registry,
};
use tracing::{debug, warn};

use super::error::{ApiError, ErrorCode};
use crate::nats::StoreError;
use crate::sessions::error::InvalidInput;
use crate::sessions::input;
use crate::tail::TailItem;

/// The gateway is going away: reconnect, to any gateway, with the last position you processed.
const GOING_AWAY: u16 = 1001;
/// Reading the log failed: reconnect with the last position you processed.
const STORAGE_FAILED: u16 = 1011;

/// How a reader asked to receive a live stream.
pub enum Transport {
    WebSocket(WebSocket),
    ServerSentEvents,
}

impl Transport {
    /// SSE when the client accepts `text/event-stream`, else a WebSocket upgrade, else 400.
    pub async fn of(request: &Request) -> Result<Transport, ApiError> {
        let accepts = |wanted: &str| {
            request
                .headers()
                .get_all(header::ACCEPT)
                .iter()
                .any(|value| {
                    value
                        .to_str()
                        .is_ok_and(|value| value.to_ascii_lowercase().contains(wanted))
                })
        };
        if accepts("text/event-stream") {
            return Ok(Transport::ServerSentEvents);
        }
        let upgrade = request.headers().get(header::UPGRADE);
        if !upgrade.is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"websocket")) {
            return Err(ApiError::new(
                ErrorCode::InvalidWebsocketUpgrade,
                "WebSocket upgrade required (or send Accept: text/event-stream)",
            ));
        }
        let websocket = <WebSocket as poem::FromRequest>::from_request_without_body(request)
            .await
            .map_err(|err| {
                ApiError::new(
                    ErrorCode::InvalidWebsocketUpgrade,
                    format!("WebSocket upgrade failed: {err}"),
                )
            })?;
        Ok(Transport::WebSocket(websocket))
    }

    /// The cursor to resume after: an SSE reconnect's `Last-Event-ID` wins over the query.
    pub fn cursor(
        &self,
        request: &Request,
        query_cursor: Option<&str>,
    ) -> Result<u64, InvalidInput> {
        let last_event_id = request
            .headers()
            .get("last-event-id")
            .and_then(|value| value.to_str().ok());
        match (self, last_event_id) {
            (Transport::ServerSentEvents, Some(last_event_id)) => {
                input::cursor(Some(last_event_id.trim()))
            }
            _ => input::cursor(query_cursor),
        }
    }

    pub fn respond<S>(self, items: S) -> LiveResponse
    where
        S: Stream<Item = Result<TailItem, StoreError>> + Send + 'static,
    {
        match self {
            Transport::WebSocket(websocket) => {
                // The upgrade callback must be `Sync`; the stream is only `Send`, and a mutex
                // makes it shareable without ever being contended.
                let items = std::sync::Mutex::new(items);
                let upgraded = websocket.on_upgrade(move |socket| {
                    let items = items
                        .into_inner()
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                    pump_websocket(socket, items)
                });
                LiveResponse(upgraded.into_response())
            }
            Transport::ServerSentEvents => LiveResponse(
                Response::builder()
                    .content_type("text/event-stream")
                    .header(header::CACHE_CONTROL, "no-cache")
                    .header("x-accel-buffering", "no")
                    .body(Body::from_bytes_stream(items.map(sse_frame))),
            ),
        }
    }
}

/// Renders one item as SSE. `tail::follow` ends the stream after a shutdown or an error.
fn sse_frame(item: Result<TailItem, StoreError>) -> Result<String, std::io::Error> {
    Ok(match item {
        Ok(TailItem::Entry(entry)) => {
            format!("id: {}\ndata: {}\n\n", entry.position, String::from_utf8_lossy(&entry.json))
        }
        Ok(TailItem::Heartbeat) => ": keep-alive\n\n".to_owned(),
        Ok(TailItem::ShuttingDown) => {
            "event: going_away\ndata: {\"reason\":\"gateway shutting down; reconnect with Last-Event-ID\"}\n\n"
                .to_owned()
        }
        Err(err) => {
            warn!(error = %err, "ending an event stream: {err}");
            "event: error\ndata: {\"error\":\"nats_unavailable\"}\n\n".to_owned()
        }
    })
}

async fn pump_websocket(
    socket: WebSocketStream,
    items: impl Stream<Item = Result<TailItem, StoreError>>,
) {
    let (mut outgoing, mut incoming) = socket.split();
    let mut items = std::pin::pin!(items);
    loop {
        tokio::select! {
            item = items.next() => {
                let message = match item {
                    Some(Ok(TailItem::Entry(entry))) => Message::Text(String::from_utf8_lossy(&entry.json).into_owned()),
                    Some(Ok(TailItem::Heartbeat)) => Message::Ping(Vec::new()),
                    Some(Ok(TailItem::ShuttingDown)) => {
                        close(&mut outgoing, GOING_AWAY, "gateway shutting down; reconnect with your cursor").await;
                        return;
                    }
                    Some(Err(err)) => {
                        warn!(error = %err, "closing a live socket: {err}");
                        close(&mut outgoing, STORAGE_FAILED, "storage unavailable; reconnect with your cursor").await;
                        return;
                    }
                    None => return,
                };
                if outgoing.send(message).await.is_err() {
                    debug!("live reader went away");
                    return;
                }
            }
            // Clients send nothing we act on; only their close or disconnect matters.
            frame = incoming.next() => {
                if matches!(frame, None | Some(Err(_)) | Some(Ok(Message::Close(_)))) {
                    return;
                }
            }
        }
    }
}

async fn close(outgoing: &mut (impl futures::Sink<Message> + Unpin), code: u16, reason: &str) {
    let _ = outgoing
        .send(Message::close_with(CloseCode::from(code), reason))
        .await;
}

/// A WebSocket upgrade or an SSE stream, as the spec documents it.
pub struct LiveResponse(Response);

impl IntoResponse for LiveResponse {
    fn into_response(self) -> Response {
        self.0
    }
}

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
