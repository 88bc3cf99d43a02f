//! Live responses: a tail stream delivered over a WebSocket (one text frame per entry, pings
//! while idle) or as Server-Sent Events (`id:` = position, comment heartbeats).

use std::sync::Arc;

use bytes::Bytes;
use futures::{FutureExt, SinkExt, Stream, StreamExt};
use poem::http::header;
use poem::web::websocket::{CloseCode, Message, WebSocket, WebSocketConfig, WebSocketStream};
use poem::{Body, IntoResponse, Request, Response};
use poem_openapi::ApiResponse;
use poem_openapi::registry::{
    MetaMediaType, MetaResponse, MetaResponses, MetaSchema, MetaSchemaRef, Registry,
};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use super::error::{ApiError, ErrorCode};
use super::limits::{TailPermit, TailQuota};
use crate::figures::{Figures, OpenTail};
use crate::metrics::{self, Disconnect, Limit, LiveStream, Metrics};
use crate::nats::StoreError;
use crate::sessions::error::InvalidInput;
use crate::sessions::input;
use crate::sessions::model::{Gap, GapReason};
use crate::shutdown::Shutdown;
use crate::tail::{Follow, Positioned, TailItem};
use crate::telemetry;

/// The gateway is going away: reconnect, to any gateway, with the last position you processed.
const GOING_AWAY: u16 = 1001;
/// Reading the log failed: reconnect with the last position you processed.
const STORAGE_FAILED: u16 = 1011;
/// The token the stream was opened with expired: reconnect with a fresh one.
const TOKEN_EXPIRED: u16 = 4001;
/// The reader fell more than its buffer behind: reconnect with the last position processed.
const TOO_SLOW: u16 = 4002;
/// How long one frame may wait for a reader that does not read.
const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

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

    /// Delivers `items` through a queue of at most `buffer` frames, so the gateway's memory per
    /// reader is bounded. A reader that keeps the queue full for `stall_timeout` is too slow:
    /// it gets a last frame saying so (WebSocket close 4002, SSE `event: overflow`) and
    /// resumes from its cursor.
    /// `holder` lives until the last frame is written.
    fn respond<S>(self, items: S, options: LiveOptions, holder: Holder) -> LiveResponse
    where
        S: Stream<Item = Result<TailItem, StoreError>> + Send + 'static,
    {
        match self {
            Transport::WebSocket(websocket) => {
                // The upgrade callback must be `Sync`; the stream is only `Send`, and a mutex
                // makes it shareable without ever being contended.
                let items = std::sync::Mutex::new(items);
                let upgraded = websocket.config(reader_socket()).on_upgrade(move |socket| {
                    let items = items
                        .into_inner()
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                    serve_websocket(socket, items, options, holder)
                });
                LiveResponse(upgraded.into_response())
            }
            Transport::ServerSentEvents => {
                let (frames, queued) = mpsc::channel(options.buffer + 1);
                let sent = holder.stream.clone();
                tokio::spawn(async move {
                    let stream = &holder.stream;
                    produce(items, frames, options.stall_timeout, sse_frames, stream).await;
                    drop(holder);
                });
                // The body counts what it hands to the connection; it ends after the producer's
                // last frame, or is dropped when the client goes away.
                let body =
                    futures::stream::unfold((queued, sent), |(mut queued, sent)| async move {
                        let (frame, events) = queued.recv().await?;
                        sent.sent(events);
                        Some((Ok::<_, std::io::Error>(frame), (queued, sent)))
                    });
                LiveResponse(
                    Response::builder()
                        .content_type("text/event-stream")
                        .header(header::CACHE_CONTROL, "no-cache")
                        .header("x-accel-buffering", "no")
                        .body(Body::from_bytes_stream(body)),
                )
            }
        }
    }
}

/// What every live response shares: heartbeat period, per-reader bound, and shutdown.
#[derive(Clone)]
pub struct Live {
    pub figures: Arc<Figures>,
    pub metrics: Arc<Metrics>,
    pub tail_quota: Arc<TailQuota>,
    pub ping_interval: std::time::Duration,
    pub buffer: usize,
    pub stall_timeout: std::time::Duration,
    pub shutdown: Shutdown,
}

impl Live {
    /// Follows `entries` for one reader, if its token holder may open one more stream.
    pub fn respond<S>(
        &self,
        transport: Transport,
        entries: S,
        reader: Reader,
    ) -> Result<LiveResponse, ApiError>
    where
        S: Stream<Item = Result<Positioned, StoreError>> + Send + Unpin + 'static,
    {
        let Reader {
            feed,
            cursor,
            gap,
            batch_size,
            contiguous,
            expires_at,
            holder,
        } = reader;
        let permit = match holder {
            Some(holder) => Some(self.tail_quota.acquire(&holder).ok_or_else(|| {
                self.metrics.limited(Limit::TailsPerToken);
                ApiError::new(
                    ErrorCode::TooManyTails,
                    "This token holds as many live streams as it may; close one first",
                )
            })?),
            None => None,
        };
        let transport_label = match (feed, &transport) {
            (Feed::Lifecycle, _) => metrics::Transport::Lifecycle,
            (Feed::Session, Transport::WebSocket(_)) => metrics::Transport::WebSocket,
            (Feed::Session, Transport::ServerSentEvents) => metrics::Transport::Sse,
        };
        let gap = gap.map(|gap| (gap.reason, gap_json(&gap)));
        // The token's expiry as a deadline on this process's clock.
        let expires_at = expires_at.map(|at| {
            let left = at
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            tokio::time::Instant::now() + left
        });
        let follow = Follow {
            cursor,
            gap,
            batch_size,
            contiguous,
            idle: self.ping_interval,
            expires_at,
            shutdown: self.shutdown.clone(),
        };
        let items = crate::tail::follow(entries, follow);
        // The budget is in events: frames that carry a batch each get fewer places in the queue.
        let options = LiveOptions {
            arrays: batch_size > 1,
            buffer: (self.buffer / batch_size.max(1)).max(1),
            stall_timeout: self.stall_timeout,
        };
        let holder = Holder {
            stream: Arc::new(self.metrics.live_stream(transport_label)),
            _shutdown: self.shutdown.clone(),
            _open: self.figures.tail_opened(),
            _permit: permit,
        };
        Ok(transport.respond(items, options, holder))
    }
}

/// Which log a reader follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// A session's events.
    Session,
    /// The lifecycle feed.
    Lifecycle,
}

/// Where and how one reader follows a log.
pub struct Reader {
    pub feed: Feed,
    /// Deliver entries after this position.
    pub cursor: u64,
    /// Announced before any entry.
    pub gap: Option<Gap>,
    pub batch_size: usize,
    /// Positions are consecutive, so a jump is announced as a gap.
    pub contiguous: bool,
    /// When the reader's token expires (close 4001).
    pub expires_at: Option<std::time::SystemTime>,
    /// Whose quota of open streams this one counts against (`None`: nobody's).
    pub holder: Option<String>,
}

/// Held by a live connection until its last frame is written: shutdown waits for it, the
/// system page and the metrics count it.
struct Holder {
    stream: Arc<LiveStream>,
    _shutdown: Shutdown,
    _open: OpenTail,
    _permit: Option<TailPermit>,
}

/// How a live response frames and bounds its stream.
#[derive(Debug, Clone, Copy)]
pub struct LiveOptions {
    /// WebSocket frames carry a JSON array of entries instead of one object.
    pub arrays: bool,
    /// The most frames waiting for one reader.
    pub buffer: usize,
    /// How long a full buffer may stay full before the reader is cut off.
    pub stall_timeout: std::time::Duration,
}

/// What one tail item becomes on the wire (each frame with the number of events it carries),
/// and whether it is the last.
struct Frames<F> {
    frames: Vec<(F, usize)>,
    last: bool,
}

impl<F> Frames<F> {
    fn one(frame: F, last: bool) -> Frames<F> {
        Frames {
            frames: vec![(frame, 0)],
            last,
        }
    }
}

enum Outcome {
    Item(Result<TailItem, StoreError>),
    TooSlow,
}

/// Moves items into the reader's queue until the stream ends, waiting while it is full. A reader
/// that leaves it full for `stall_timeout` is too slow: the last frame tells it so. A normal
/// frame needs two free slots, so the slot for that last frame is always there.
async fn produce<S, F>(
    items: S,
    queue: mpsc::Sender<(F, usize)>,
    stall_timeout: std::time::Duration,
    render: impl Fn(Outcome) -> Frames<F>,
    stream: &LiveStream,
) where
    S: Stream<Item = Result<TailItem, StoreError>>,
{
    let mut items = std::pin::pin!(items);
    loop {
        // A reader that is gone frees its place at once, not at the next item.
        let item = tokio::select! {
            item = items.next() => item,
            () = queue.closed() => return,
        };
        let Some(item) = item else { return };
        match &item {
            Ok(TailItem::Gap(reason, _)) => stream.gap(gap_reason(*reason)),
            Ok(TailItem::TokenExpired) => stream.ends(Disconnect::TokenExpired),
            Ok(TailItem::ShuttingDown) => stream.ends(Disconnect::Shutdown),
            Err(_) => stream.ends(Disconnect::StorageError),
            Ok(TailItem::Entries(entries)) => {
                for entry in entries {
                    // Closed at once: what it records is the hand-over and its link.
                    drop(telemetry::delivery_span(entry.trace.as_deref()));
                }
            }
            Ok(TailItem::Heartbeat) => {}
        }
        let rendered = render(Outcome::Item(item));
        for frame in rendered.frames {
            // A queue with room takes the frame at once, without arming the stall timer.
            let reserved = match queue.try_reserve_many(2) {
                Ok(permits) => Ok(Ok(permits)),
                Err(mpsc::error::TrySendError::Closed(())) => return,
                Err(mpsc::error::TrySendError::Full(())) => {
                    tokio::time::timeout(stall_timeout, queue.reserve_many(2)).await
                }
            };
            match reserved {
                Ok(Ok(mut permits)) => {
                    if let Some(permit) = permits.next() {
                        permit.send(frame);
                    }
                }
                Ok(Err(_)) => return, // The reader is gone.
                Err(_) => {
                    stream.ends(Disconnect::SlowReader);
                    for overflow in render(Outcome::TooSlow).frames {
                        let _ = queue.try_send(overflow);
                    }
                    return;
                }
            }
        }
        if rendered.last {
            return;
        }
    }
}

fn sse_frames(outcome: Outcome) -> Frames<String> {
    match outcome {
        Outcome::Item(Ok(TailItem::Gap(_, gap))) => {
            Frames::one(format!("event: gap\ndata: {}\n\n", String::from_utf8_lossy(&gap)), false)
        }
        Outcome::Item(Ok(TailItem::Entries(entries))) => Frames {
            frames: entries
                .iter()
                .map(|entry| (format!("id: {}\ndata: {}\n\n", entry.position, String::from_utf8_lossy(&entry.json)), 1))
                .collect(),
            last: false,
        },
        Outcome::Item(Ok(TailItem::Heartbeat)) => Frames::one(": keep-alive\n\n".to_owned(), false),
        Outcome::Item(Ok(TailItem::TokenExpired)) => {
            Frames::one("event: token_expired\ndata: {\"reason\":\"token_expired\"}\n\n".to_owned(), true)
        }
        Outcome::Item(Ok(TailItem::ShuttingDown)) => Frames::one(
            "event: going_away\ndata: {\"reason\":\"gateway shutting down; reconnect with Last-Event-ID\"}\n\n".to_owned(),
            true,
        ),
        Outcome::Item(Err(err)) => {
            warn!(error = %err, "ending an event stream: {err}");
            Frames::one("event: storage_error\ndata: {\"error\":\"nats_unavailable\"}\n\n".to_owned(), true)
        }
        Outcome::TooSlow => Frames::one(
            "event: overflow\ndata: {\"reason\":\"too slow; reconnect with Last-Event-ID\"}\n\n".to_owned(),
            true,
        ),
    }
}

fn websocket_frames(outcome: Outcome, arrays: bool) -> Frames<Message> {
    // Stored events are the gateway's own JSON, so this validates and never replaces.
    let text = |json: Vec<u8>| {
        Message::Text(
            String::from_utf8(json)
                .unwrap_or_else(|invalid| String::from_utf8_lossy(invalid.as_bytes()).into_owned()),
        )
    };
    let close = |code: u16, reason: &str| {
        Frames::one(Message::close_with(CloseCode::from(code), reason), true)
    };
    match outcome {
        Outcome::Item(Ok(TailItem::Gap(_, gap))) => Frames::one(text(gap.to_vec()), false),
        Outcome::Item(Ok(TailItem::Entries(entries))) if arrays => {
            let mut array = Vec::with_capacity(
                entries
                    .iter()
                    .map(|entry| entry.json.len() + 1)
                    .sum::<usize>()
                    + 1,
            );
            array.push(b'[');
            for (n, entry) in entries.iter().enumerate() {
                if n > 0 {
                    array.push(b',');
                }
                array.extend_from_slice(&entry.json);
            }
            array.push(b']');
            Frames {
                frames: vec![(text(array), entries.len())],
                last: false,
            }
        }
        Outcome::Item(Ok(TailItem::Entries(entries))) => Frames {
            frames: entries
                .iter()
                .map(|entry| (text(entry.json.to_vec()), 1))
                .collect(),
            last: false,
        },
        Outcome::Item(Ok(TailItem::Heartbeat)) => Frames::one(Message::Ping(Vec::new()), false),
        Outcome::Item(Ok(TailItem::TokenExpired)) => close(TOKEN_EXPIRED, "token_expired"),
        Outcome::Item(Ok(TailItem::ShuttingDown)) => close(
            GOING_AWAY,
            "gateway shutting down; reconnect with your cursor",
        ),
        Outcome::Item(Err(err)) => {
            warn!(error = %err, "closing a live socket: {err}");
            close(
                STORAGE_FAILED,
                "storage unavailable; reconnect with your cursor",
            )
        }
        Outcome::TooSlow => close(TOO_SLOW, "too slow; reconnect with your cursor"),
    }
}

/// Socket buffers sized for a reader: tungstenite's defaults reserve 128 KiB to read, which
/// ten thousand idle tailers would pay for clients that only ever send a close or a pong.
fn reader_socket() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        // Every frame is flushed as it is sent; nothing waits to fill a buffer.
        .write_buffer_size(0)
        .max_message_size(Some(64 * 1024))
        .max_frame_size(Some(64 * 1024))
}

/// Feeds the socket from the queue while the producer fills it; both stop when the reader
/// leaves or the last frame is written (the holder lives until then).
async fn serve_websocket(
    socket: WebSocketStream,
    items: impl Stream<Item = Result<TailItem, StoreError>> + Send + 'static,
    options: LiveOptions,
    holder: Holder,
) {
    let (frames, mut queued) = mpsc::channel(options.buffer + 1);
    let stream = holder.stream.clone();
    // The producer, the writer and the watcher of the client's side are tasks of their own, so
    // that each event wakes only the producer and then the writer, and sending a frame never
    // polls the socket's read side; one task for all of them re-polled every part per frame.
    let producer = tokio::spawn(async move {
        let render = move |outcome| websocket_frames(outcome, options.arrays);
        produce(items, frames, options.stall_timeout, render, &stream).await;
    });
    let _stop_producing = AbortOnDrop(producer);
    let (mut outgoing, incoming) = socket.split();
    let (went_away, mut gone) = oneshot::channel();
    let watcher = tokio::spawn(async move {
        watch_for_close(incoming).await;
        let _ = went_away.send(());
    });
    let _stop_watching = AbortOnDrop(watcher);
    loop {
        tokio::select! {
            frame = queued.recv() => {
                let Some((frame, events)) = frame else { return };
                let closing = matches!(frame, Message::Close(_));
                // A reader that takes nothing for this long is gone; dropping the connection
                // frees what it holds. Most writes complete at once; only one that waits
                // needs a timer.
                let mut sending = outgoing.send(frame);
                let sent = match (&mut sending).now_or_never() {
                    Some(sent) => Ok(sent),
                    None => tokio::time::timeout(WRITE_TIMEOUT, sending).await,
                };
                match sent {
                    Ok(Ok(())) => holder.stream.sent(events),
                    Ok(Err(_)) => return,
                    Err(_) => {
                        holder.stream.ends(Disconnect::SlowReader);
                        return;
                    }
                }
                if closing {
                    return;
                }
            }
            _ = &mut gone => {
                debug!("live reader went away");
                return;
            }
        }
    }
}

/// Returns when the client has closed the socket or gone away; clients send nothing else we
/// act on. Reading on past a client's close is what sends tungstenite's answer to it (the
/// closing handshake), after which the stream ends.
async fn watch_for_close(mut incoming: impl Stream<Item = std::io::Result<Message>> + Unpin) {
    while let Some(Ok(_)) = incoming.next().await {}
}

/// Stops a task when its owner finishes.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The metrics' name for a gap's reason.
pub(crate) fn gap_reason(reason: GapReason) -> metrics::GapReason {
    match reason {
        GapReason::CursorExpired => metrics::GapReason::CursorExpired,
        GapReason::ResumeInvalidated => metrics::GapReason::ResumeInvalidated,
    }
}

/// A gap as its own frame: `{"type": "gap", "reason": …, …}`.
pub(crate) fn gap_json(gap: &Gap) -> Bytes {
    // Plain numbers and strings always serialize.
    serde_json::to_vec(gap).unwrap_or_default().into()
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
