//! A producer socket client: append requests go out as text frames and the gateway's answers
//! come back one per request, in order. Split into halves so a test can pipeline: one task
//! sends while another reads.

use std::time::Duration;

use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, client_async, connect_async};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the gateway sent, pings and pongs aside.
#[derive(Debug, Clone, PartialEq)]
pub enum ProducerFrame {
    /// An answer (or the `ready` frame).
    Text(Value),
    /// The gateway closed the socket, with this close code.
    Closed(Option<u16>),
    /// The connection broke without a close frame.
    Broken(String),
    TimedOut,
}

/// Sends append requests.
pub struct ProducerSender(SplitSink<Socket, Message>);

/// Reads the gateway's answers.
pub struct ProducerReplies(SplitStream<Socket>);

/// Opens a producer socket at `url` and returns its halves and its `ready` frame.
pub async fn connect_producer(url: &str) -> (ProducerSender, ProducerReplies, Value) {
    let (socket, response) = connect_async(url).await.unwrap();
    assert_eq!(response.status(), 101);
    opened(socket).await
}

/// Like `connect_producer`, with a receive buffer of a few KiB, so that answers the test does
/// not read back up into the gateway after a few of them, not after megabytes.
pub async fn connect_producer_reading_slowly(
    url: &str,
) -> (ProducerSender, ProducerReplies, Value) {
    let address = url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(address).await.unwrap();
    let (socket, response) = client_async(url, MaybeTlsStream::Plain(stream))
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
    opened(socket).await
}

async fn opened(socket: Socket) -> (ProducerSender, ProducerReplies, Value) {
    let (sink, stream) = socket.split();
    let mut replies = ProducerReplies(stream);
    let ready = replies.reply().await;
    assert_eq!(
        ready["type"], "ready",
        "the first frame must be `ready`: {ready}"
    );
    (ProducerSender(sink), replies, ready)
}

impl ProducerSender {
    /// Sends one request frame: an append body or an array of them.
    pub async fn send(&mut self, request: &Value) -> Result<(), String> {
        self.send_text(request.to_string()).await
    }

    /// Sends a frame exactly as given, valid JSON or not.
    pub async fn send_text(&mut self, text: String) -> Result<(), String> {
        self.0
            .send(Message::text(text))
            .await
            .map_err(|err| err.to_string())
    }

    pub async fn close(mut self) {
        let _ = self.0.close().await;
    }
}

impl ProducerReplies {
    /// The next frame within `wait`.
    pub async fn frame(&mut self, wait: Duration) -> ProducerFrame {
        loop {
            let message = match tokio::time::timeout(wait, self.0.next()).await {
                Err(_) => return ProducerFrame::TimedOut,
                Ok(None) => return ProducerFrame::Broken("the stream ended".into()),
                Ok(Some(Err(err))) => return ProducerFrame::Broken(err.to_string()),
                Ok(Some(Ok(message))) => message,
            };
            match message {
                Message::Text(text) => {
                    return ProducerFrame::Text(serde_json::from_str(&text).unwrap());
                }
                Message::Close(frame) => {
                    return ProducerFrame::Closed(frame.map(|frame| u16::from(frame.code)));
                }
                Message::Ping(_) | Message::Pong(_) | Message::Binary(_) | Message::Frame(_) => {
                    continue;
                }
            }
        }
    }

    /// The next answer; panics on anything else.
    pub async fn reply(&mut self) -> Value {
        match self.frame(Duration::from_secs(30)).await {
            ProducerFrame::Text(reply) => reply,
            other => panic!("expected an answer, got {other:?}"),
        }
    }
}
