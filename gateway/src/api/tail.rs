//! Pumps a tail stream into a WebSocket: one text frame per event, pings while idle.

use futures::{SinkExt, Stream, StreamExt};
use poem::web::websocket::{CloseCode, Message, WebSocketStream};
use tracing::{debug, warn};

use crate::nats::StoreError;
use crate::tail::TailItem;

/// The gateway is going away: reconnect, to any gateway, with the last seq you processed.
const GOING_AWAY: u16 = 1001;
/// Reading the log failed: reconnect with the last seq you processed.
const STORAGE_FAILED: u16 = 1011;

pub async fn pump(
    socket: WebSocketStream,
    items: impl Stream<Item = Result<TailItem, StoreError>>,
) {
    let (mut outgoing, mut incoming) = socket.split();
    let mut items = std::pin::pin!(items);
    loop {
        tokio::select! {
            item = items.next() => {
                let message = match item {
                    Some(Ok(TailItem::Event { json, .. })) => Message::Text(String::from_utf8_lossy(&json).into_owned()),
                    Some(Ok(TailItem::Heartbeat)) => Message::Ping(Vec::new()),
                    Some(Ok(TailItem::ShuttingDown)) => {
                        close(&mut outgoing, GOING_AWAY, "gateway shutting down; reconnect with your cursor").await;
                        return;
                    }
                    Some(Err(err)) => {
                        warn!(error = %err, "closing a tail: {err}");
                        close(&mut outgoing, STORAGE_FAILED, "storage unavailable; reconnect with your cursor").await;
                        return;
                    }
                    None => return,
                };
                if outgoing.send(message).await.is_err() {
                    debug!("tail reader went away");
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
