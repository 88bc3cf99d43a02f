//! A WebSocket tail reader that sees frames the way a client does.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

pub struct TailClient {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What arrived on the socket, pongs and our own frames aside.
#[derive(Debug, Clone, PartialEq)]
pub enum TailFrame {
    Event(Value),
    Ping,
    /// The closing handshake, with the peer's code if it sent one.
    Closed(Option<u16>),
    /// The connection broke without a closing handshake (a reset, a protocol error): never
    /// what a gateway that closes cleanly sends.
    Failed(String),
    TimedOut,
}

impl TailClient {
    pub async fn connect(url: &str) -> TailClient {
        let (socket, response) = connect_async(url).await.unwrap();
        assert_eq!(response.status(), 101);
        TailClient { socket }
    }

    /// The next frame within `wait`.
    pub async fn frame(&mut self, wait: Duration) -> TailFrame {
        self.raw_frame(wait).await.0
    }

    /// The next frame and, for events, its exact text.
    pub async fn raw_frame(&mut self, wait: Duration) -> (TailFrame, Option<String>) {
        loop {
            let message = match tokio::time::timeout(wait, self.socket.next()).await {
                Err(_) => return (TailFrame::TimedOut, None),
                Ok(None) => return (TailFrame::Closed(None), None),
                Ok(Some(Err(err))) => return (TailFrame::Failed(err.to_string()), None),
                Ok(Some(Ok(message))) => message,
            };
            match message {
                Message::Text(text) => {
                    let text = text.to_string();
                    return (
                        TailFrame::Event(serde_json::from_str(&text).unwrap()),
                        Some(text),
                    );
                }
                Message::Ping(_) => return (TailFrame::Ping, None),
                Message::Close(frame) => {
                    return (TailFrame::Closed(frame.map(|f| u16::from(f.code))), None);
                }
                Message::Pong(_) | Message::Binary(_) | Message::Frame(_) => continue,
            }
        }
    }

    /// The next event, skipping pings; panics on anything else.
    pub async fn event(&mut self) -> Value {
        loop {
            match self.frame(Duration::from_secs(10)).await {
                TailFrame::Event(event) => return event,
                TailFrame::Ping => continue,
                other => panic!("expected an event, got {other:?}"),
            }
        }
    }

    /// The seqs of the next `count` events.
    pub async fn seqs(&mut self, count: usize) -> Vec<u64> {
        let mut seqs = Vec::with_capacity(count);
        for _ in 0..count {
            seqs.push(self.event().await["seq"].as_u64().unwrap());
        }
        seqs
    }

    /// Asserts that no event arrives within `wait` (pings are fine).
    pub async fn expect_no_event(&mut self, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.frame(left).await {
                TailFrame::TimedOut => return,
                TailFrame::Ping => continue,
                other => panic!("expected silence, got {other:?}"),
            }
        }
    }

    /// Reads until the gateway closes the socket: the events before the close and its code.
    /// Panics if nothing arrives for `wait` or the connection breaks without a close.
    pub async fn until_closed(&mut self, wait: Duration) -> (Vec<Value>, Option<u16>) {
        let mut events = Vec::new();
        loop {
            match self.frame(wait).await {
                TailFrame::Event(event) => events.push(event),
                TailFrame::Ping => continue,
                TailFrame::Closed(code) => return (events, code),
                other => panic!("expected the gateway to close the tail, got {other:?}"),
            }
        }
    }

    /// Starts the closing handshake with a normal close (1000).
    pub async fn close(&mut self) {
        let normal = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        self.socket.close(Some(normal)).await.unwrap();
    }

    pub async fn send_text(&mut self, text: &str) {
        self.socket.send(Message::text(text)).await.unwrap();
    }
}
