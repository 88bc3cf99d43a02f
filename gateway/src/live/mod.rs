//! Live responses: a tail stream delivered to one reader over a WebSocket (one text frame per
//! entry, pings while idle) or as Server-Sent Events (`id:` = position, comment heartbeats),
//! through a bounded queue per reader, and counted by transport while open. The public API and
//! the console both answer with them.

mod queue;
mod quota;
mod sse;
mod websocket;

use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;
use poem::http::header;
use poem::web::websocket::WebSocket;
use poem::{IntoResponse, Request, Response};

use crate::figures::{Figures, OpenTail};
use crate::metrics::{self, Limit, LiveStream, Metrics};
use crate::nats::StoreError;
use crate::sessions::error::InvalidInput;
use crate::sessions::input;
use crate::sessions::model::{Gap, GapReason};
use crate::shutdown::Shutdown;
use crate::tail::{Follow, Positioned, TailItem};
pub use quota::{TailPermit, TailQuota};

/// Why a live stream is refused before it starts.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("WebSocket upgrade required (or send Accept: text/event-stream)")]
    UpgradeRequired,
    #[error("WebSocket upgrade failed: {0}")]
    UpgradeFailed(String),
    #[error("This token holds as many live streams as it may; close one first")]
    TooManyTails,
}

/// How a reader asked to receive a live stream.
pub enum Transport {
    WebSocket(WebSocket),
    ServerSentEvents,
}

impl Transport {
    /// SSE when the client accepts `text/event-stream`, else a WebSocket upgrade.
    pub async fn of(request: &Request) -> Result<Transport, LiveError> {
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
        Ok(Transport::WebSocket(websocket_upgrade(request).await?))
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
        LiveResponse(match self {
            Transport::WebSocket(websocket) => {
                websocket::respond(websocket, items, options, holder)
            }
            Transport::ServerSentEvents => sse::respond(items, options, holder),
        })
    }
}

/// The gateway is going away: reconnect, to any gateway, and resume.
pub const GOING_AWAY: u16 = 1001;
/// The token the socket was opened with expired: reconnect with a fresh one.
pub const TOKEN_EXPIRED: u16 = 4001;

/// A token's expiry as a deadline on this process's clock.
pub fn deadline(expires_at: Option<std::time::SystemTime>) -> Option<tokio::time::Instant> {
    expires_at.map(|at| {
        let left = at
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default();
        tokio::time::Instant::now() + left
    })
}

/// The request's WebSocket upgrade, if it is one.
pub async fn websocket_upgrade(request: &Request) -> Result<WebSocket, LiveError> {
    let upgrade = request.headers().get(header::UPGRADE);
    if !upgrade.is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"websocket")) {
        return Err(LiveError::UpgradeRequired);
    }
    <WebSocket as poem::FromRequest>::from_request_without_body(request)
        .await
        .map_err(|err| LiveError::UpgradeFailed(err.to_string()))
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
    /// A place for one more stream of `holder` (`None`: counted against nobody's quota), if
    /// it may open one.
    pub fn admit(&self, holder: Option<String>) -> Result<Option<TailPermit>, LiveError> {
        match holder {
            Some(holder) => match self.tail_quota.acquire(&holder) {
                Some(permit) => Ok(Some(permit)),
                None => {
                    self.metrics.limited(Limit::TailsPerToken);
                    Err(LiveError::TooManyTails)
                }
            },
            None => Ok(None),
        }
    }

    /// Follows `entries` for one reader.
    pub fn respond<S>(&self, transport: Transport, entries: S, reader: Reader) -> LiveResponse
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
            permit,
        } = reader;
        let transport_label = match (feed, &transport) {
            (Feed::Lifecycle, _) => metrics::Transport::Lifecycle,
            (Feed::Session, Transport::WebSocket(_)) => metrics::Transport::WebSocket,
            (Feed::Session, Transport::ServerSentEvents) => metrics::Transport::Sse,
        };
        let gap = gap.map(|gap| (gap.reason, gap_json(&gap)));
        let expires_at = deadline(expires_at);
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
        transport.respond(items, options, holder)
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
    /// Its place in its token holder's quota of open streams (`Live::admit`), if it counts
    /// against one.
    pub permit: Option<TailPermit>,
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
struct LiveOptions {
    /// WebSocket frames carry a JSON array of entries instead of one object.
    arrays: bool,
    /// The most frames waiting for one reader.
    buffer: usize,
    /// How long a full buffer may stay full before the reader is cut off.
    stall_timeout: std::time::Duration,
}

/// The metrics' name for a gap's reason.
pub fn gap_reason(reason: GapReason) -> metrics::GapReason {
    match reason {
        GapReason::CursorExpired => metrics::GapReason::CursorExpired,
        GapReason::ResumeInvalidated => metrics::GapReason::ResumeInvalidated,
    }
}

/// A gap as its own frame: `{"type": "gap", "reason": …, …}`.
fn gap_json(gap: &Gap) -> Bytes {
    // Plain numbers and strings always serialize.
    serde_json::to_vec(gap).unwrap_or_default().into()
}

/// A WebSocket upgrade or an SSE stream; `api` documents it in the spec.
pub struct LiveResponse(Response);

impl IntoResponse for LiveResponse {
    fn into_response(self) -> Response {
        self.0
    }
}
