//! A Server-Sent Events reader that sees frames the way `EventSource` does.

use std::time::Duration;

use futures::{Stream, StreamExt};
use serde_json::Value;

/// One SSE frame: an event with its id and name, or a comment.
#[derive(Debug, Clone, PartialEq)]
pub enum SseFrame {
    Event {
        id: Option<String>,
        event: Option<String>,
        data: Value,
    },
    Comment(String),
    /// The response body ended.
    Ended,
    /// Reading the body failed: the connection broke mid-stream.
    Failed(String),
    TimedOut,
}

pub struct SseClient {
    body: std::pin::Pin<Box<dyn Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
}

impl SseClient {
    /// Opens `url` with `Accept: text/event-stream` and, if given, `Last-Event-ID`.
    pub async fn connect(
        client: &reqwest::Client,
        url: &str,
        last_event_id: Option<&str>,
    ) -> SseClient {
        let mut request = client.get(url).header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        SseClient {
            body: Box::pin(response.bytes_stream()),
            buffer: String::new(),
        }
    }

    /// Reads an already opened event stream.
    pub fn from_response(response: reqwest::Response) -> SseClient {
        assert_eq!(response.status(), 200);
        SseClient {
            body: Box::pin(response.bytes_stream()),
            buffer: String::new(),
        }
    }

    pub async fn frame(&mut self, wait: Duration) -> SseFrame {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                return parse(&block);
            }
            match tokio::time::timeout(wait, self.body.next()).await {
                Err(_) => return SseFrame::TimedOut,
                Ok(None) => return SseFrame::Ended,
                Ok(Some(Err(err))) => return SseFrame::Failed(err.to_string()),
                Ok(Some(Ok(chunk))) => self.buffer.push_str(std::str::from_utf8(&chunk).unwrap()),
            }
        }
    }

    /// The next event's id and data, skipping comments.
    pub async fn event(&mut self) -> (String, Value) {
        loop {
            match self.frame(Duration::from_secs(10)).await {
                SseFrame::Event { id, data, .. } => return (id.unwrap_or_default(), data),
                SseFrame::Comment(_) => continue,
                other => panic!("expected an event, got {other:?}"),
            }
        }
    }
}

fn parse(block: &str) -> SseFrame {
    let (mut id, mut event, mut data) = (None, None, String::new());
    for line in block.lines() {
        if let Some(comment) = line.strip_prefix(':') {
            return SseFrame::Comment(comment.trim().to_owned());
        }
        let (field, value) = line
            .split_once(':')
            .map_or((line, ""), |(f, v)| (f, v.trim_start()));
        match field {
            "id" => id = Some(value.to_owned()),
            "event" => event = Some(value.to_owned()),
            "data" => data.push_str(value),
            _ => {}
        }
    }
    SseFrame::Event {
        id,
        event,
        data: serde_json::from_str(&data).unwrap(),
    }
}
