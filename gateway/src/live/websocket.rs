//! Live streams over a WebSocket: one text frame per entry (or a JSON array of a batch),
//! pings while idle, and a close code that says why the stream ended.

use futures::{FutureExt, SinkExt, Stream, StreamExt};
use poem::web::websocket::{CloseCode, Message, WebSocket, WebSocketConfig, WebSocketStream};
use poem::{IntoResponse, Response};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use super::queue::{Frames, Outcome, produce};
use super::{GOING_AWAY, Holder, LiveOptions, TOKEN_EXPIRED};
use crate::metrics::Disconnect;
use crate::nats::StoreError;
use crate::tail::TailItem;

/// Reading the log failed: reconnect with the last position you processed.
const STORAGE_FAILED: u16 = 1011;
/// The reader fell more than its buffer behind: reconnect with the last position processed.
const TOO_SLOW: u16 = 4002;
/// How long one frame may wait for a reader that does not read.
const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Upgrades the connection and writes `items` to the socket.
pub(super) fn respond<S>(
    websocket: WebSocket,
    items: S,
    options: LiveOptions,
    holder: Holder,
) -> Response
where
    S: Stream<Item = Result<TailItem, StoreError>> + Send + 'static,
{
    // The upgrade callback must be `Sync`; the stream is only `Send`, and a mutex makes it
    // shareable without ever being contended.
    let items = std::sync::Mutex::new(items);
    websocket
        .config(reader_socket())
        .on_upgrade(move |socket| {
            let items = items
                .into_inner()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            serve_websocket(socket, items, options, holder)
        })
        .into_response()
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
