//! A stream read as Server-Sent Events: `event: data` with an append's messages (a JSON array,
//! text, or base64 for binary streams), then `event: control` with the offset to resume from;
//! stored appends first, then live ones from the session's shared feed, until the stream
//! closes, the client goes or the gateway shuts down.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use futures::{FutureExt, StreamExt};
use lru::LruCache;
use poem::http::header;
use poem::{Body, Response};
use tokio::sync::mpsc;

use super::response_cursor;
use crate::live::TailPermit;
use crate::sessions::SessionLog;
use crate::sessions::error::ReadError;
use crate::sessions::limits::MAX_PAGE_SIZE;
use crate::sessions::model::{CLOSE_EVENT_TYPE, Seq, SessionId};
use crate::sessions::streams::{MessageFormat, Messages, StreamStatus, stored_messages};
use crate::shutdown::Shutdown;

/// Frames written ahead of a slow client; then the reading waits for it.
const BUFFERED_FRAMES: usize = 64;

/// One SSE reader of a stream.
pub struct Reading {
    pub log: Arc<SessionLog>,
    pub id: SessionId,
    pub status: StreamStatus,
    /// The seq the reader has everything up to.
    pub after: Seq,
    /// The client's `cursor`, echoed back moved on.
    pub cursor: Option<String>,
    /// How long an idle stream waits before a control event says it is still up to date.
    pub idle: Duration,
    pub shutdown: Shutdown,
    /// The reader's place in its token's quota of live streams, held while it is open.
    pub permit: Option<TailPermit>,
    pub rendered: Arc<RenderedAppends>,
    /// This incarnation of the stream among rendered appends (`incarnation`).
    pub incarnation: Arc<str>,
}

/// How a stream's data events carry its messages.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Encoding {
    Json,
    Text,
    Base64,
}

/// What names one incarnation of a stream among rendered appends: its id and creation, one
/// shared string for every lookup of a reader.
pub fn incarnation(id: &SessionId, created_at: &str) -> Arc<str> {
    Arc::from(format!("{id}\0{created_at}"))
}

pub fn respond(mut reading: Reading) -> Response {
    let content_type = reading.status.session.content_type.as_deref();
    let encoding = match reading.status.format() {
        MessageFormat::Json => Encoding::Json,
        MessageFormat::Bytes
            if content_type.is_some_and(|content_type| {
                content_type
                    .trim()
                    .to_ascii_lowercase()
                    .starts_with("text/")
            }) =>
        {
            Encoding::Text
        }
        MessageFormat::Bytes => Encoding::Base64,
    };
    let (frames, queued) = mpsc::channel::<Bytes>(BUFFERED_FRAMES);
    tokio::spawn(async move {
        let permit = reading.permit.take();
        if let Err(err) = reading.run(encoding, &frames).await {
            tracing::debug!(error = %err, "ending a stream's event stream: {err}");
        }
        drop(permit);
    });
    let body = futures::stream::unfold(queued, |mut queued| async move {
        let frame = queued.recv().await?;
        Some((Ok::<_, std::io::Error>(frame), queued))
    });
    let mut builder = Response::builder()
        .content_type("text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .header("x-accel-buffering", "no");
    if let Encoding::Base64 = encoding {
        builder = builder.header("stream-sse-data-encoding", "base64");
    }
    builder.body(Body::from_bytes_stream(body))
}

/// Why a reading stopped early.
#[derive(Debug, thiserror::Error)]
enum Stopped {
    #[error("the client went away")]
    ClientGone,
    #[error(transparent)]
    Read(#[from] ReadError),
}

impl Reading {
    async fn run(
        mut self,
        encoding: Encoding,
        frames: &mpsc::Sender<Bytes>,
    ) -> Result<(), Stopped> {
        // Stored appends, a page at a time, each page closed by a control event.
        loop {
            let page = self
                .log
                .read_page(&self.id, self.after, MAX_PAGE_SIZE as usize)
                .await?;
            let last = page.events.len();
            let mut out = BytesMut::new();
            for (index, event) in page.events.iter().enumerate() {
                // A page is contiguous up to its last seq.
                self.after = page.next_cursor - (last - 1 - index) as u64;
                let at_end = index + 1 == last;
                let rendered = self.rendered(event, encoding)?;
                let closed = rendered.closes || (at_end && self.status.closed && page.caught_up);
                rendered.write(&mut out);
                self.control(at_end && page.caught_up, closed, &mut out);
                if closed {
                    return send(frames, out).await;
                }
            }
            if page.events.is_empty() {
                self.after = page.next_cursor;
                let closed = self.status.closed && page.caught_up;
                self.control(page.caught_up, closed, &mut out);
                if closed {
                    return send(frames, out).await;
                }
            }
            send(frames, out).await?;
            if page.caught_up {
                break;
            }
        }
        // Then live, from the session's feed, a burst of events at a time, written at once.
        let mut entries = self.log.open_tail(&self.id, self.after).await?.entries;
        let mut shutdown = self.shutdown.clone();
        loop {
            let first = tokio::select! {
                entry = tokio::time::timeout(self.idle, entries.next()) => entry,
                _ = shutdown.wait() => return Ok(()),
                _ = frames.closed() => return Err(Stopped::ClientGone),
            };
            let mut out = BytesMut::new();
            let first = match first {
                Err(_) => {
                    self.control(true, false, &mut out);
                    send(frames, out).await?;
                    continue;
                }
                Ok(None) => return Ok(()),
                Ok(Some(entry)) => entry.map_err(ReadError::from)?,
            };
            // Each append as it comes, and every one already waiting, in one write; only the
            // last one's control event can say the reader is up to date.
            let mut current = first;
            loop {
                let following = match entries.next().now_or_never() {
                    Some(Some(entry)) => Some(entry.map_err(ReadError::from)?),
                    _ => None,
                };
                if current.position > self.after {
                    self.after = current.position;
                    let rendered = self.rendered(&current.json, encoding)?;
                    rendered.write(&mut out);
                    self.control(following.is_none(), rendered.closes, &mut out);
                    if rendered.closes {
                        return send(frames, out).await;
                    }
                }
                match following {
                    Some(entry) => current = entry,
                    None => break,
                }
            }
            send(frames, out).await?;
        }
    }

    /// The data event of the append at `self.after`, rendered once for all its readers.
    fn rendered(&self, event: &Bytes, encoding: Encoding) -> Result<Rendered, ReadError> {
        let key = RenderKey {
            stream: self.incarnation.clone(),
            seq: self.after,
            encoding,
        };
        if let Some(rendered) = lock(&self.rendered.0).get(&key) {
            return Ok(rendered.clone());
        }
        let rendered = render(event, self.status.format(), encoding)?;
        lock(&self.rendered.0).put(key, rendered.clone());
        Ok(rendered)
    }

    /// The control event after `self.after` (its offset in the 20 digits of `parse::offset`),
    /// written straight into `out`: offsets and cursors are digits, so the JSON needs no
    /// escaping and holds no line break.
    fn control(&self, up_to_date: bool, closed: bool, out: &mut BytesMut) {
        use std::fmt::Write as _;
        let offset = self.after;
        // Writing into a growable buffer cannot fail.
        let _ = if closed {
            write!(
                out,
                "event: control\ndata:{{\"streamNextOffset\":\"{offset:020}\",\"streamClosed\":true}}\n\n"
            )
        } else {
            let cursor = response_cursor(self.cursor.as_deref());
            let up_to_date = if up_to_date {
                r#","upToDate":true"#
            } else {
                ""
            };
            write!(
                out,
                "event: control\ndata:{{\"streamNextOffset\":\"{offset:020}\",\"streamCursor\":\"{cursor}\"{up_to_date}}}\n\n"
            )
        };
    }
}

/// An append as its readers receive it: its data event (none for an append that holds no
/// messages), and whether it closed the stream.
#[derive(Clone)]
struct Rendered {
    frame: Option<Bytes>,
    closes: bool,
}

impl Rendered {
    fn write(&self, out: &mut BytesMut) {
        if let Some(frame) = &self.frame {
            out.extend_from_slice(frame);
        }
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct RenderKey {
    /// The session and its creation (one deleted and created again reuses its seqs).
    stream: Arc<str>,
    seq: Seq,
    encoding: Encoding,
}

/// The appends rendered lately, shared by every SSE reader of this gateway: a thousand readers
/// of one stream render each append once.
pub struct RenderedAppends(Mutex<LruCache<RenderKey, Rendered>>);

impl Default for RenderedAppends {
    fn default() -> RenderedAppends {
        let capacity = NonZeroUsize::new(4096).unwrap_or(NonZeroUsize::MIN);
        RenderedAppends(Mutex::new(LruCache::new(capacity)))
    }
}

fn render(event: &Bytes, format: MessageFormat, encoding: Encoding) -> Result<Rendered, ReadError> {
    let payload = match (stored_messages(event, format)?, encoding) {
        (Messages::Json(values), _) if values.is_empty() => None,
        (Messages::Json(values), _) => Some(serde_json::Value::Array(values).to_string()),
        (Messages::Bytes(bytes), _) if bytes.is_empty() => None,
        (Messages::Bytes(bytes), Encoding::Base64) => {
            Some(base64::engine::general_purpose::STANDARD.encode(&bytes))
        }
        (Messages::Bytes(bytes), _) => Some(String::from_utf8_lossy(&bytes).into_owned()),
    };
    Ok(Rendered {
        frame: payload.map(|payload| Bytes::from(event_frame("data", &payload))),
        closes: is_close(event),
    })
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn is_close(event: &bytes::Bytes) -> bool {
    #[derive(serde::Deserialize)]
    struct Kind {
        #[serde(rename = "type")]
        kind: String,
    }
    serde_json::from_slice::<Kind>(event).is_ok_and(|event| event.kind == CLOSE_EVENT_TYPE)
}

/// An SSE event whose data keeps every line break of `payload` as a line break of the data,
/// so no payload can end the event early or forge another.
fn event_frame(name: &str, payload: &str) -> String {
    let mut frame = format!("event: {name}\n");
    let normalized = payload.replace("\r\n", "\n").replace('\r', "\n");
    for line in normalized.split('\n') {
        frame.push_str("data:");
        frame.push_str(line);
        frame.push('\n');
    }
    frame.push('\n');
    frame
}

async fn send(frames: &mpsc::Sender<Bytes>, out: BytesMut) -> Result<(), Stopped> {
    if out.is_empty() {
        return Ok(());
    }
    frames
        .send(out.freeze())
        .await
        .map_err(|_| Stopped::ClientGone)
}

#[cfg(test)]
mod tests {
    use super::event_frame;

    #[test]
    fn line_breaks_in_a_payload_stay_inside_its_event() {
        assert_eq!(
            event_frame("data", "a\r\n\r\nevent: x\rb\nc"),
            "event: data\ndata:a\ndata:\ndata:event: x\ndata:b\ndata:c\n\n"
        );
    }
}
