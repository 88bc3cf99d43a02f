//! Live streams as Server-Sent Events: `id:` is the position, comments are the heartbeats,
//! and a last named event says why the stream ended.

use futures::Stream;
use poem::http::header;
use poem::{Body, Response};
use tokio::sync::mpsc;
use tracing::warn;

use super::queue::{Frames, Outcome, produce};
use super::{Holder, LiveOptions};
use crate::nats::StoreError;
use crate::tail::TailItem;

/// Streams `items` as the body of an SSE response.
pub(super) fn respond<S>(items: S, options: LiveOptions, holder: Holder) -> Response
where
    S: Stream<Item = Result<TailItem, StoreError>> + Send + 'static,
{
    let (frames, queued) = mpsc::channel(options.buffer + 1);
    let sent = holder.stream.clone();
    tokio::spawn(async move {
        let stream = &holder.stream;
        produce(items, frames, options.stall_timeout, sse_frames, stream).await;
        drop(holder);
    });
    // The body counts what it hands to the connection; it ends after the producer's last
    // frame, or is dropped when the client goes away.
    let body = futures::stream::unfold((queued, sent), |(mut queued, sent)| async move {
        let (frame, events) = queued.recv().await?;
        sent.sent(events);
        Some((Ok::<_, std::io::Error>(frame), (queued, sent)))
    });
    Response::builder()
        .content_type("text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .header("x-accel-buffering", "no")
        .body(Body::from_bytes_stream(body))
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
