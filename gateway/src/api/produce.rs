//! The producer socket: a producer streams append requests over one WebSocket without waiting
//! for each answer, and gets, for every request and in the order sent, exactly the answer
//! `POST /append` (or `append_batch`, for an array) would have given.
//!
//! Requests are queued in their session's writer in the order they are read, so they are
//! decided in that order and a hot socket rides the writer's group commits. At most `window`
//! requests are read and not yet answered: past that the socket is not read, and TCP makes the
//! client wait, so a client that never reads its answers costs a bounded amount of memory.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use poem::web::websocket::{CloseCode, Message, WebSocket, WebSocketConfig, WebSocketStream};
use poem::{IntoResponse, Request, Response};
use poem_openapi::ApiResponse;
use poem_openapi::registry::{MetaResponse, MetaResponses, Registry};
use poem_openapi::types::ToJSON;
use serde_json::{Map, Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;

use super::error::{ApiError, ErrorCode};
use super::limits::{AppendRate, take_appends};
use super::sessions::AppendReply;
use crate::auth::Principal;
use crate::live::{self, Live, LiveError, TailPermit};
use crate::metrics::ProducerSocketOpen;
use crate::sessions::error::InvalidInput;
use crate::sessions::model::{NewEvent, SessionId};
use crate::sessions::{Appended, ProducerPosition, SessionLog, input};

/// The gateway is going away: reconnect, to any gateway, and resume from the `ready` frame.
const GOING_AWAY: u16 = 1001;
/// A frame larger than the gateway's body limit.
const TOO_BIG: u16 = 1009;
/// The token the socket was opened with expired: reconnect with a fresh one.
const TOKEN_EXPIRED: u16 = 4001;
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
    Answer(Answer, OwnedSemaphorePermit),
    Close(u16, &'static str),
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
        let expiry = start.principal.expires_at.map(|at| {
            let left = at
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            Instant::now() + left
        });
        let mut shutdown = self.live.shutdown.clone();
        let ending = loop {
            let stop = async {
                tokio::select! {
                    () = shutdown.wait() => Ending::Close(GOING_AWAY, "gateway shutting down; reconnect and resume"),
                    () = until(expiry) => Ending::Close(TOKEN_EXPIRED, "token_expired"),
                }
            };
            // Nothing is read while the window is full: the client's sends wait on TCP.
            let next = async {
                let Ok(place) = window.clone().acquire_owned().await else {
                    return None;
                };
                Some((place, incoming.next().await))
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
            Ending::ClientLeft => writer.abort(),
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

/// Which producer requests a frame carried, for its answer: each event's `(producer_id,
/// producer_seq)` as the client sent them, when readable.
#[derive(Debug, Default)]
struct Echo {
    batch: bool,
    producers: Vec<(Value, Value)>,
}

impl Echo {
    fn of(request: &Value) -> Echo {
        let one = |event: &Value| {
            let field = |name: &str| event.get(name).cloned().unwrap_or(Value::Null);
            (field("producer_id"), field("producer_seq"))
        };
        match request {
            Value::Array(events) => Echo {
                batch: true,
                producers: events.iter().map(one).collect(),
            },
            event => Echo {
                batch: false,
                producers: vec![one(event)],
            },
        }
    }

    /// The producer fields of the frame's answer: its last event's.
    fn last(&self) -> (Value, Value) {
        self.producers
            .last()
            .cloned()
            .unwrap_or((Value::Null, Value::Null))
    }
}

/// A frame's events, read by the rules of `POST /append` (an object) or `append_batch` (an
/// array).
fn parse(text: &str, subject: Option<&str>) -> Result<(Vec<NewEvent>, Echo), (InvalidInput, Echo)> {
    let request: Value = serde_json::from_str(text).map_err(|err| {
        let refusal = InvalidInput::Event(format!("the frame is not JSON: {err}"));
        (refusal, Echo::default())
    })?;
    let echo = Echo::of(&request);
    let events = match request {
        Value::Array(events) => input::new_events(Some(json!({ "events": events })), subject),
        event => input::new_event(Some(event), subject).map(|event| vec![event]),
    };
    match events {
        Ok(events) => Ok((events, echo)),
        Err(refusal) => Err((refusal, echo)),
    }
}

/// The first frame: where the socket's producer stands in the session.
fn ready(producer: Option<&(String, Option<ProducerPosition>)>) -> String {
    let (producer_id, position) = match producer {
        Some((producer_id, position)) => (Value::from(producer_id.as_str()), *position),
        None => (Value::Null, None),
    };
    json!({
        "type": "ready",
        "producer_id": producer_id,
        "producer_seq": position.map(|position| position.producer_seq),
        "seq": position.map(|position| position.seq),
    })
    .to_string()
}

/// An accepted request's answer: `POST /append`'s reply, or `append_batch`'s for an array,
/// with the producer fields.
fn acknowledged(appended: Vec<Appended>, echo: &Echo, single: bool) -> String {
    let reply = |appended: Appended, (producer_id, producer_seq): (Value, Value)| {
        let mut reply = match AppendReply::from(appended).to_json() {
            Some(Value::Object(reply)) => reply,
            _ => Map::new(),
        };
        reply.insert("producer_id".into(), producer_id);
        reply.insert("producer_seq".into(), producer_seq);
        reply
    };
    let last_seq = appended.last().map_or(0, |event| event.last_seq);
    let mut answers: Vec<Map<String, Value>> = appended
        .into_iter()
        .zip(echo.producers.iter().cloned())
        .map(|(appended, producer)| reply(appended, producer))
        .collect();
    if single && let Some(answer) = answers.pop() {
        return Value::Object(answer).to_string();
    }
    let (producer_id, producer_seq) = echo.last();
    json!({
        "events": answers,
        "last_seq": last_seq,
        "producer_id": producer_id,
        "producer_seq": producer_seq,
    })
    .to_string()
}

/// A refused request's answer: the error body HTTP would have sent, with the producer fields
/// and, where HTTP would send `Retry-After`, `retry_after`.
fn refused(err: ApiError, echo: &Echo) -> String {
    let (body, retry_after) = err.into_body();
    let mut answer = match body.to_json() {
        Some(Value::Object(answer)) => answer,
        _ => Map::new(),
    };
    let (producer_id, producer_seq) = echo.last();
    answer.insert("producer_id".into(), producer_id);
    answer.insert("producer_seq".into(), producer_seq);
    if let Some(seconds) = retry_after {
        answer.insert("retry_after".into(), seconds.into());
    }
    Value::Object(answer).to_string()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event(producer_seq: u64) -> Value {
        json!({
            "type": "message",
            "payload": {"text": "hi"},
            "actor": "agent:a",
            "producer_id": "p",
            "producer_seq": producer_seq,
        })
    }

    #[test]
    fn a_frame_is_one_append_or_an_array_of_them() {
        let (events, echo) = parse(&event(3).to_string(), None).unwrap();
        assert_eq!(events.len(), 1);
        assert!(!echo.batch);
        assert_eq!(echo.last(), (json!("p"), json!(3)));
        let batch = json!([event(4), event(5)]).to_string();
        let (events, echo) = parse(&batch, None).unwrap();
        assert_eq!(events.len(), 2);
        assert!(echo.batch);
        assert_eq!(echo.last(), (json!("p"), json!(5)));
    }

    #[test]
    fn a_refused_frame_echoes_what_it_could_read() {
        let (refusal, echo) = parse("{not json", None).unwrap_err();
        assert!(matches!(refusal, InvalidInput::Event(_)));
        assert_eq!(echo.last(), (Value::Null, Value::Null));
        let mut untyped = event(7);
        untyped.as_object_mut().unwrap().remove("type");
        let (refusal, echo) = parse(&untyped.to_string(), None).unwrap_err();
        let answer: Value = serde_json::from_str(&refused(refusal.into(), &echo)).unwrap();
        assert_eq!(answer["error"], "invalid_event");
        assert_eq!(answer["producer_id"], "p");
        assert_eq!(answer["producer_seq"], 7);
        assert!(answer["message"].is_string());
        assert!(answer.get("retry_after").is_none());
        let (refusal, _) = parse("[]", None).unwrap_err();
        assert!(matches!(refusal, InvalidInput::Event(_)));
    }

    #[test]
    fn answers_carry_the_append_reply_and_the_producer_fields() {
        let appended = |seq| Appended {
            seq,
            last_seq: 9,
            deduped: false,
        };
        let echo = Echo::of(&event(3));
        let single: Value =
            serde_json::from_str(&acknowledged(vec![appended(8)], &echo, true)).unwrap();
        assert_eq!(
            single,
            json!({"seq": 8, "last_seq": 9, "deduped": false, "cursor": 8,
                   "committed_cursor": 9, "producer_id": "p", "producer_seq": 3})
        );
        let echo = Echo::of(&json!([event(4), event(5)]));
        let batch: Value =
            serde_json::from_str(&acknowledged(vec![appended(8), appended(9)], &echo, false))
                .unwrap();
        assert_eq!(batch["last_seq"], 9);
        assert_eq!(batch["producer_seq"], 5);
        assert_eq!(batch["events"][0]["producer_seq"], 4);
        assert_eq!(batch["events"][1]["seq"], 9);
        let limited = refused(ApiError::rate_limited(Duration::from_millis(1500)), &echo);
        let limited: Value = serde_json::from_str(&limited).unwrap();
        assert_eq!(limited["error"], "rate_limited");
        assert_eq!(limited["retry_after"], 2);
    }

    #[test]
    fn the_ready_frame_says_where_the_producer_stands() {
        let position = ProducerPosition {
            producer_seq: 12,
            seq: 40,
        };
        let ready_frame: Value =
            serde_json::from_str(&ready(Some(&("p".to_owned(), Some(position))))).unwrap();
        assert_eq!(
            ready_frame,
            json!({"type": "ready", "producer_id": "p", "producer_seq": 12, "seq": 40})
        );
        let unknown: Value = serde_json::from_str(&ready(Some(&("q".to_owned(), None)))).unwrap();
        assert_eq!(
            unknown,
            json!({"type": "ready", "producer_id": "q", "producer_seq": null, "seq": null})
        );
        let anonymous: Value = serde_json::from_str(&ready(None)).unwrap();
        assert_eq!(anonymous["producer_id"], Value::Null);
    }
}
