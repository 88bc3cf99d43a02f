//! The producer socket: a producer streams append requests over one WebSocket without waiting
//! for each answer, and gets, for every request and in the order sent, exactly the answer
//! `POST /append` (or `append_batch`, for an array) would have given.
//!
//! Requests are queued in their session's writer in the order they are read, so they are
//! decided in that order and a hot socket rides the writer's group commits. At most `window`
//! requests are read and not yet answered: past that the socket is not read, and TCP makes the
//! client wait, so a client that never reads its answers costs a bounded amount of memory.
//! What the frames hold is in `frames`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use poem::web::websocket::{CloseCode, Message, WebSocket, WebSocketConfig, WebSocketStream};
use poem::{IntoResponse, Request, Response};
use poem_openapi::ApiResponse;
use poem_openapi::registry::{MetaResponse, MetaResponses, Registry};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;

mod frames;

use frames::{Echo, acknowledged, parse, ready, refused};

use crate::api::error::{ApiError, ErrorCode};
use crate::api::limits::{AppendRate, take_appends};
use crate::auth::Principal;
use crate::live::{self, GOING_AWAY, Live, LiveError, TOKEN_EXPIRED, TailPermit};
use crate::metrics::ProducerSocketOpen;
use crate::sessions::error::InvalidInput;
use crate::sessions::model::SessionId;
use crate::sessions::{ProducerPosition, SessionLog};

/// A frame larger than the gateway's body limit.
const TOO_BIG: u16 = 1009;
/// The most bytes of request frames one socket may have read and not yet answered, whatever
/// its window: with the window alone, 256 requests of a MiB each could wait in a session's
/// queue for one socket.
const MAX_UNANSWERED_BYTES: usize = 16 * 1024 * 1024;
/// How long one answer may wait for a client that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// What producer sockets share.
pub struct Producers {
    pub log: Arc<SessionLog>,
    pub live: Live,
    pub append_rate: Option<Arc<AppendRate>>,
    /// The most requests one socket may have read and not yet answered.
    pub window: usize,
    /// The largest frame accepted, as for a request body.
    pub max_frame_bytes: usize,
}

/// A producer socket whose checks passed before the upgrade.
pub struct ProducerStart {
    pub session: SessionId,
    pub principal: Principal,
    /// The producer the `ready` frame speaks of, and where it stands.
    pub producer: Option<(String, Option<ProducerPosition>)>,
    /// Its place in the token holder's quota of open streams.
    pub permit: Option<TailPermit>,
}

/// The WebSocket upgrade of a producer socket; `api` documents it in the spec.
pub struct ProducerSocket(Response);

impl IntoResponse for ProducerSocket {
    fn into_response(self) -> Response {
        self.0
    }
}

impl ApiResponse for ProducerSocket {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: vec![MetaResponse {
                description: "WebSocket upgrade: a `ready` frame, then one answer per request \
                              frame, in order",
                status: Some(101),
                status_range: None,
                content: vec![],
                headers: vec![],
            }],
        }
    }

    fn register(_registry: &mut Registry) {}
}

/// The request's WebSocket upgrade; a producer socket has no other transport.
pub async fn producer_upgrade(request: &Request) -> Result<WebSocket, ApiError> {
    live::websocket_upgrade(request)
        .await
        .map_err(|err| match err {
            LiveError::UpgradeRequired => ApiError::new(
                ErrorCode::InvalidWebsocketUpgrade,
                "WebSocket upgrade required",
            ),
            other => other.into(),
        })
}

/// One answer, computed when its turn to be written comes.
type Answer = Pin<Box<dyn Future<Output = String> + Send>>;

/// What the socket's writer sends, in order.
enum Outgoing {
    Frame(String),
    /// An answer, with the request's place in the window, freed once the answer is written.
    Answer(Answer, Place),
    Close(u16, &'static str),
}

/// A request's share of its socket's window and byte budget, held until it is answered.
struct Place {
    _request: OwnedSemaphorePermit,
    _bytes: OwnedSemaphorePermit,
}

/// How reading ended, and so how the socket closes.
enum Ending {
    ClientLeft,
    Close(u16, &'static str),
}

impl Producers {
    /// Upgrades the connection and serves the socket.
    pub fn respond(self: &Arc<Self>, websocket: WebSocket, start: ProducerStart) -> ProducerSocket {
        let producers = self.clone();
        // The upgrade callback must be `Sync`; a mutex makes the start shareable without ever
        // being contended.
        let start = std::sync::Mutex::new(start);
        let config = WebSocketConfig::default()
            .max_message_size(Some(self.max_frame_bytes))
            .max_frame_size(Some(self.max_frame_bytes))
            // Answers are flushed as they are sent; the window bounds what can wait.
            .write_buffer_size(0);
        let upgraded = websocket.config(config).on_upgrade(move |socket| {
            let start = start
                .into_inner()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            producers.serve(socket, start)
        });
        ProducerSocket(upgraded.into_response())
    }

    async fn serve(self: Arc<Self>, socket: WebSocketStream, start: ProducerStart) {
        let _open = Open {
            _socket: self.live.metrics.producer_socket(),
            _shutdown: self.live.shutdown.clone(),
            _permit: start.permit,
        };
        let (outgoing, mut incoming) = socket.split();
        let (sending, queued) = mpsc::unbounded_channel();
        let writer = tokio::spawn(write(outgoing, queued, self.live.ping_interval));
        let _ = sending.send(Outgoing::Frame(ready(start.producer.as_ref())));
        let window = Arc::new(Semaphore::new(self.window));
        let budget = Arc::new(Semaphore::new(MAX_UNANSWERED_BYTES));
        let expiry = live::deadline(start.principal.expires_at);
        let mut shutdown = self.live.shutdown.clone();
        let ending = loop {
            let stop = async {
                tokio::select! {
                    () = shutdown.wait() => Ending::Close(GOING_AWAY, "gateway shutting down; reconnect and resume"),
                    () = until(expiry) => Ending::Close(TOKEN_EXPIRED, "token_expired"),
                    // The writer gave up on a client that stopped reading.
                    () = sending.closed() => Ending::ClientLeft,
                }
            };
            // Nothing is read while the window or the byte budget is spent: the client's
            // sends wait on TCP.
            let next = async {
                let request = window.clone().acquire_owned().await.ok()?;
                let message = incoming.next().await;
                let size = match &message {
                    Some(Ok(Message::Text(text))) => text.len(),
                    Some(Ok(Message::Binary(bytes))) => bytes.len(),
                    _ => 0,
                };
                let size = u32::try_from(size.clamp(1, MAX_UNANSWERED_BYTES)).ok()?;
                let bytes = budget.clone().acquire_many_owned(size).await.ok()?;
                Some((
                    Place {
                        _request: request,
                        _bytes: bytes,
                    },
                    message,
                ))
            };
            let (place, message) = tokio::select! {
                ending = stop => break ending,
                next = next => match next {
                    Some(next) => next,
                    None => break Ending::ClientLeft,
                },
            };
            let text = match message {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Binary(bytes))) => match String::from_utf8(bytes) {
                    Ok(text) => text,
                    Err(_) => {
                        let refusal = InvalidInput::Event("a frame must be UTF-8 JSON".into());
                        let answer = refused(ApiError::from(refusal), &Echo::default());
                        let _ = sending.send(Outgoing::Answer(Box::pin(async { answer }), place));
                        continue;
                    }
                },
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Close(_))) | None => break Ending::ClientLeft,
                // tungstenite reports a frame over the limit only in its error's text.
                Some(Err(err)) if err.to_string().contains("too long") => {
                    break Ending::Close(TOO_BIG, "frame too big");
                }
                Some(Err(_)) => break Ending::ClientLeft,
            };
            let answer = self.request(&start.session, &start.principal, &text);
            if sending.send(Outgoing::Answer(answer, place)).is_err() {
                break Ending::ClientLeft;
            }
        };
        match ending {
            // Every request read is answered before the close that says why no more are.
            Ending::Close(code, reason) => {
                let _ = sending.send(Outgoing::Close(code, reason));
                drop(sending);
                let _ = writer.await;
            }
            // Nobody is left to answer: requests not yet decided are dropped with their
            // answers, so that none lands behind the back of a producer that resumes from its
            // `ready` frame on another socket.
            Ending::ClientLeft => {
                writer.abort();
                let _ = writer.await;
            }
        }
    }

    /// Validates one request frame and queues it in its session's writer at once, so that
    /// requests are decided in the order they were read; the answer is awaited later.
    fn request(&self, session: &SessionId, principal: &Principal, text: &str) -> Answer {
        let subject = principal
            .authenticated
            .then_some(principal.subject.as_str());
        let (events, echo) = match parse(text, subject) {
            Ok(parsed) => parsed,
            Err((refusal, echo)) => {
                let answer = refused(ApiError::from(refusal), &echo);
                return Box::pin(async { answer });
            }
        };
        let rate = self.append_rate.as_deref();
        let metrics = &self.live.metrics;
        if let Err(limited) = take_appends(rate, metrics, &principal.tenant, events.len()) {
            let answer = refused(limited, &echo);
            return Box::pin(async { answer });
        }
        let single = !echo.batch;
        let answer = self.log.submit(session, events);
        let figures = self.live.figures.clone();
        Box::pin(async move {
            match answer.await {
                Ok(appended) => {
                    figures.appended(appended.iter().filter(|event| !event.deduped).count());
                    acknowledged(appended, &echo, single)
                }
                Err(err) => refused(ApiError::from(err), &echo),
            }
        })
    }
}

/// Held while a socket is open: it counts in the metrics and in its token's quota, and
/// shutdown waits for it.
struct Open {
    _socket: ProducerSocketOpen,
    _shutdown: crate::shutdown::Shutdown,
    _permit: Option<TailPermit>,
}

/// Writes what the reader queued, in order, awaiting each answer in turn; pings while idle.
async fn write(
    mut outgoing: futures::stream::SplitSink<WebSocketStream, Message>,
    mut queued: mpsc::UnboundedReceiver<Outgoing>,
    ping_interval: Duration,
) {
    loop {
        let next = tokio::select! {
            next = queued.recv() => next,
            () = tokio::time::sleep(ping_interval) => {
                if send(&mut outgoing, Message::Ping(Vec::new())).await {
                    continue;
                }
                return;
            }
        };
        let (message, closing, place) = match next {
            None => return,
            Some(Outgoing::Frame(text)) => (Message::Text(text), false, None),
            Some(Outgoing::Answer(answer, place)) => {
                (Message::Text(answer.await), false, Some(place))
            }
            Some(Outgoing::Close(code, reason)) => (
                Message::close_with(CloseCode::from(code), reason),
                true,
                None,
            ),
        };
        if !send(&mut outgoing, message).await || closing {
            return;
        }
        drop(place);
    }
}

/// Sends one message; false when the client is gone or has not read for `WRITE_TIMEOUT`.
async fn send(
    outgoing: &mut futures::stream::SplitSink<WebSocketStream, Message>,
    message: Message,
) -> bool {
    matches!(
        tokio::time::timeout(WRITE_TIMEOUT, outgoing.send(message)).await,
        Ok(Ok(()))
    )
}

/// Resolves at `deadline`, or never.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
