//! The Durable Streams protocol at `/v1/stream/{name}`: a stream is the session named `name`,
//! an offset is a seq (docs/api.md, "Durable Streams"). Plain poem handlers over the session
//! log; the protocol speaks in headers, not JSON bodies, so it stays out of the OpenAPI spec.
//! Errors keep the API's JSON shape, with the protocol's headers beside it.

mod parse;
mod sse;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::StreamExt;
use poem::http::{HeaderValue, Method, StatusCode, header};
use poem::{Endpoint, IntoResponse, Request, Response};

use super::auth::{authorize, holder, own};
use super::error::{ApiError, ErrorCode};
use super::limits::{AppendRate, take_appends};
use super::raw_input::BodyLimit;
use super::sessions::session_id;
use crate::auth::{Principal, Scope};
use crate::catalog::Catalog;
use crate::live::Live;
use crate::sessions::error::{CreateError, ReadError};
use crate::sessions::model::{NewSession, Seq, SessionId};
use crate::sessions::streams::{
    ForkError, InvalidMessages, JSON, MessageFormat, Messages, ProducerRefusal, StreamAppend,
    StreamAppendError, StreamAppended, StreamStatus, media_type, stored_messages,
};
use crate::sessions::{SessionLog, limits};
use parse::{LiveMode, Start, offset};

/// Where the protocol is served; the rest of the path is the stream's name.
pub const PREFIX: &str = "/v1/stream/";

const ALLOWED_HEADERS: &str = "content-type, authorization, if-none-match, stream-seq, stream-ttl, \
     stream-expires-at, stream-closed, producer-id, producer-epoch, producer-seq, \
     stream-forked-from, stream-fork-offset, stream-fork-sub-offset";
const EXPOSED_HEADERS: &str = "stream-next-offset, stream-cursor, stream-up-to-date, \
     stream-closed, stream-ttl, stream-expires-at, stream-sse-data-encoding, producer-epoch, \
     producer-seq, producer-expected-seq, producer-received-seq, etag, content-type, location";

/// The protocol's endpoint.
pub struct DurableStreams {
    pub log: Arc<SessionLog>,
    pub catalog: Arc<Catalog>,
    pub live: Live,
    pub append_rate: Option<Arc<AppendRate>>,
    /// How long a long-poll read (or an idle SSE stream, between control events) waits.
    pub long_poll_timeout: Duration,
    pub rendered: Arc<sse::RenderedAppends>,
}

impl Endpoint for DurableStreams {
    type Output = Response;

    async fn call(&self, request: Request) -> poem::Result<Response> {
        let mut response = match self.serve(request).await {
            Ok(response) => response,
            Err(refusal) => refusal.into_response(),
        };
        browser_headers(response.headers_mut());
        Ok(response)
    }
}

/// A refusal: the API's error, and the protocol's headers that go with it.
struct Refusal {
    error: ApiError,
    headers: Vec<(&'static str, String)>,
}

impl<E: Into<ApiError>> From<E> for Refusal {
    fn from(error: E) -> Refusal {
        Refusal {
            error: error.into(),
            headers: Vec::new(),
        }
    }
}

impl Refusal {
    /// A deleted stream kept while forks of it remain: 410, which only the protocol answers
    /// (the API's error type has no variant for it, so its status is set here).
    fn gone() -> Refusal {
        let code = ErrorCode::StreamGone;
        Refusal::from(ApiError::new(code, "The stream was deleted"))
    }

    fn into_response(self) -> Response {
        let gone = matches!(
            &self.error,
            ApiError::Internal(body) if body.error == ErrorCode::StreamGone
        );
        let mut response = self.error.into_response();
        if gone {
            response.set_status(StatusCode::GONE);
        }
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                response.headers_mut().insert(name, value);
            }
        }
        response
    }
}

/// CORS for browsers on any origin, and the headers that keep a browser from sniffing or
/// embedding a stream's bytes as something else.
fn browser_headers(headers: &mut poem::http::HeaderMap) {
    let fixed = [
        ("access-control-allow-origin", "*"),
        (
            "access-control-allow-methods",
            "GET, POST, PUT, DELETE, HEAD, OPTIONS",
        ),
        ("access-control-allow-headers", ALLOWED_HEADERS),
        ("access-control-expose-headers", EXPOSED_HEADERS),
        ("x-content-type-options", "nosniff"),
        ("cross-origin-resource-policy", "cross-origin"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

impl DurableStreams {
    async fn serve(&self, request: Request) -> Result<Response, Refusal> {
        if request.method() == Method::OPTIONS {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        let principal = request
            .data::<Principal>()
            .cloned()
            .unwrap_or_else(Principal::local);
        let path = request.uri().path();
        let name = path.strip_prefix(PREFIX).unwrap_or_default();
        let name = percent_encoding::percent_decode_str(name)
            .decode_utf8()
            .map_err(|_| ApiError::from(crate::sessions::error::InvalidInput::SessionId))?;
        let id = session_id(&name)?;
        match request.method().clone() {
            Method::PUT => self.create(request, &principal, id).await,
            Method::POST => self.append(request, &principal, id).await,
            Method::GET => self.read(request, &principal, id).await,
            Method::HEAD => self.head(&principal, id).await,
            Method::DELETE => {
                authorize(&principal, Scope::Create, Some(&id))?;
                own(&self.log, &principal, &id).await?;
                // An expired stream is as gone as a deleted one.
                let session = self.log.stream_header(&id, None, false).await?;
                if session.retired {
                    return Err(Refusal::gone());
                }
                self.log.delete_stream(&id).await?;
                Ok(StatusCode::NO_CONTENT.into_response())
            }
            _ => Err(ApiError::new(ErrorCode::MethodNotAllowed, "Method not allowed").into()),
        }
    }

    /// PUT: creates the stream (201), or confirms one created with the same settings (200).
    async fn create(
        &self,
        mut request: Request,
        principal: &Principal,
        id: SessionId,
    ) -> Result<Response, Refusal> {
        authorize(principal, Scope::Create, Some(&id))?;
        let location = match parse::header(&request, "host")? {
            Some(host) => format!("http://{host}{}", encoded_path(&id)),
            None => encoded_path(&id),
        };
        let fork = parse::fork(&request)?;
        let content_type = parse::content_type(&request)?;
        let mut new_session = NewSession {
            id: Some(id.clone()),
            title: None,
            metadata: Default::default(),
            // A fork without one takes its source's.
            content_type: match (&fork, content_type) {
                (None, None) => Some("application/octet-stream".to_owned()),
                (_, content_type) => content_type,
            },
            expiry: parse::expiry(&request)?,
            forked_from: None,
        };
        let close = parse::closes(&request)?;
        let body = body(&mut request).await?;
        if let Some(source) = fork {
            authorize(principal, Scope::Read, Some(&source.session))?;
            own(&self.log, principal, &source.session).await?;
            self.log
                .fork_point(&mut new_session, source)
                .await
                .map_err(|err| match err {
                    ForkError::BeyondEnd | ForkError::SubOffsetBeyond => {
                        ApiError::new(ErrorCode::InvalidRequest, err.to_string())
                    }
                    ForkError::ContentTypeDiffers | ForkError::SourceRetired => {
                        ApiError::new(ErrorCode::StreamConflict, err.to_string())
                    }
                    ForkError::Read(err) => err.into(),
                })?;
        }
        let content_type = new_session
            .content_type
            .clone()
            .unwrap_or_else(|| JSON.to_owned());
        let messages = match Messages::parse(MessageFormat::of(Some(&content_type)), body.clone()) {
            _ if body.is_empty() => None,
            Ok(messages) => Some(messages),
            // Creating with `[]` creates an empty stream.
            Err(InvalidMessages::EmptyArray) => None,
            Err(err) => return Err(invalid_body(err).into()),
        };
        let forked_from = new_session.forked_from.clone();
        let expiry = new_session.expiry.clone();
        let tenant = principal.authenticated.then(|| principal.tenant.clone());
        match self.log.create(new_session, tenant).await {
            Ok(_) => {}
            Err(CreateError::SessionExists(_)) => {
                own(&self.log, principal, &id).await?;
                let status = self.log.stream_status(&id, true).await?;
                let same = !status.session.retired
                    && status.session.content_type.as_deref().map(media_type)
                        == Some(media_type(&content_type))
                    && status.session.expiry == expiry
                    && status.session.forked_from == forked_from
                    && status.closed == close;
                if !same {
                    return Err(ApiError::new(
                        ErrorCode::StreamConflict,
                        "A stream with other settings exists at this path",
                    )
                    .into());
                }
                return Ok(
                    stream_headers(Response::builder().status(StatusCode::OK), &status).finish(),
                );
            }
            Err(err) => return Err(err.into()),
        }
        let mut last_seq = match &forked_from {
            Some(point) => self.log.copy_fork(&id, point).await?,
            None => 0,
        };
        if messages.is_some() || close {
            let append = StreamAppend {
                messages,
                close,
                producer: None,
                writer_seq: None,
                actor: actor(principal),
            };
            last_seq = self
                .log
                .append_messages(&id, append)
                .await
                .map_err(|err| refusal(err, None))?
                .last_seq;
        }
        let mut builder = Response::builder()
            .status(StatusCode::CREATED)
            .header(header::CONTENT_TYPE, content_type)
            .header(header::LOCATION, location)
            .header("stream-next-offset", offset(last_seq));
        if close {
            builder = builder.header("stream-closed", "true");
        }
        Ok(builder.finish())
    }

    /// POST: appends one message (bytes) or one per element of a JSON array, closes, or both.
    async fn append(
        &self,
        mut request: Request,
        principal: &Principal,
        id: SessionId,
    ) -> Result<Response, Refusal> {
        authorize(principal, Scope::Append, Some(&id))?;
        let close = parse::closes(&request)?;
        let producer = parse::producer(&request)?;
        let writer_seq = parse::header(&request, "stream-seq")?.map(str::to_owned);
        let content_type = parse::content_type(&request)?;
        let body = body(&mut request).await?;
        if body.is_empty() && !close {
            return Err(ApiError::new(ErrorCode::InvalidRequest, "An append needs a body").into());
        }
        if !body.is_empty() && content_type.is_none() {
            return Err(
                ApiError::new(ErrorCode::InvalidRequest, "An append needs a Content-Type").into(),
            );
        }
        own(&self.log, principal, &id).await?;
        // The catalog's header: its content type and expiry never change, and an append to
        // a session deleted meanwhile is refused by the log.
        let known = self.catalog.header(&id);
        let session = self.log.stream_header(&id, known, true).await?;
        if session.retired {
            return Err(Refusal::gone());
        }
        let messages = match (body.is_empty(), &content_type) {
            (false, Some(content_type)) => {
                let stream_type = session.content_type.as_deref().unwrap_or(JSON);
                if media_type(content_type) != media_type(stream_type) {
                    return Err(ApiError::new(
                        ErrorCode::StreamConflict,
                        format!("The stream's content type is {stream_type}"),
                    )
                    .into());
                }
                let format = MessageFormat::of(Some(stream_type));
                Some(Messages::parse(format, body).map_err(invalid_body)?)
            }
            _ => None,
        };
        take_appends(
            self.append_rate.as_deref(),
            &self.live.metrics,
            &principal.tenant,
            1,
        )?;
        let had_messages = messages.is_some();
        let echo = producer
            .as_ref()
            .map(|producer| (producer.epoch, producer.seq));
        let append = StreamAppend {
            messages,
            close,
            producer,
            writer_seq,
            actor: actor(principal),
        };
        let appended = match self.log.append_messages(&id, append).await {
            Ok(appended) => appended,
            // The catalog's header may be older than a delete that retired the stream and
            // closed its log: the header read afresh tells which refusal this is.
            Err(err @ StreamAppendError::Closed { .. }) => {
                let fresh = self.log.stream_header(&id, None, false).await?;
                return Err(if fresh.retired {
                    Refusal::gone()
                } else {
                    refusal(err, echo)
                });
            }
            Err(err) => return Err(refusal(err, echo)),
        };
        if appended.duplicate_of.is_none() {
            self.live.figures.appended(1);
        }
        Ok(appended_response(appended, echo, had_messages))
    }

    /// HEAD: the stream's settings and tail, without touching its idle expiry.
    async fn head(&self, principal: &Principal, id: SessionId) -> Result<Response, Refusal> {
        authorize(principal, Scope::Read, Some(&id))?;
        own(&self.log, principal, &id).await?;
        let status = self.log.stream_status(&id, false).await?;
        if status.session.retired {
            return Err(Refusal::gone());
        }
        let mut builder = stream_headers(Response::builder().status(StatusCode::OK), &status)
            .header(header::CACHE_CONTROL, "no-store")
            .header(header::ETAG, etag(&status, "-1", status.last_seq));
        match &status.session.expiry {
            Some(crate::sessions::model::Expiry::IdleSeconds(seconds)) => {
                builder = builder.header("stream-ttl", seconds.to_string());
            }
            Some(crate::sessions::model::Expiry::At(at)) => {
                builder = builder.header("stream-expires-at", at.as_str());
            }
            None => {}
        }
        Ok(builder.finish())
    }

    /// GET: the messages after an offset, at once, by long-poll or as Server-Sent Events.
    async fn read(
        &self,
        request: Request,
        principal: &Principal,
        id: SessionId,
    ) -> Result<Response, Refusal> {
        let query = parse::read_query(&request)?;
        authorize(principal, Scope::Read, Some(&id))?;
        own(&self.log, principal, &id).await?;
        let status = self.log.stream_status(&id, true).await?;
        if status.session.retired {
            return Err(Refusal::gone());
        }
        let after = match query.start {
            Start::After(seq) => seq,
            Start::Now => status.last_seq,
        };
        if query.live == LiveMode::ServerSentEvents {
            let permit = self.live.admit(holder(principal))?;
            let incarnation = sse::incarnation(&id, &status.session.created_at);
            return Ok(sse::respond(sse::Reading {
                log: self.log.clone(),
                id,
                status,
                after,
                cursor: query.cursor,
                idle: self.long_poll_timeout,
                shutdown: self.live.shutdown.clone(),
                permit,
                rendered: self.rendered.clone(),
                incarnation,
            }));
        }
        if query.start == Start::Now && query.live == LiveMode::CatchUp {
            let page = Page::empty(after, &status);
            return Ok(page_response(&status, page, None, None));
        }
        let mut page = Page::read(&self.log, &id, after, &status).await?;
        let mut status = status;
        if query.live == LiveMode::LongPoll && page.messages_empty() && page.up_to_date {
            let cursor = response_cursor(query.cursor.as_deref()).to_string();
            if status.closed {
                return Ok(long_poll_timeout(page.next, Some(cursor), true));
            }
            let mut tail = self.log.open_tail(&id, page.next).await?.entries;
            match tokio::time::timeout(self.long_poll_timeout, tail.next()).await {
                Err(_) => return Ok(long_poll_timeout(page.next, Some(cursor), false)),
                Ok(_) => {
                    status = self.log.stream_status(&id, true).await?;
                    page = Page::read(&self.log, &id, after, &status).await?;
                }
            }
        }
        let cursor = (query.live == LiveMode::LongPoll)
            .then(|| response_cursor(query.cursor.as_deref()).to_string());
        let tag = etag(&status, &query.offset_text, page.next);
        let matches = request
            .headers()
            .get(header::IF_NONE_MATCH)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value == tag);
        if matches {
            return Ok(Response::builder()
                .status(StatusCode::NOT_MODIFIED)
                .header(header::ETAG, tag)
                .finish());
        }
        Ok(page_response(&status, page, cursor, Some(tag)))
    }
}

/// The request body, within the gateway's limit. A larger one is read to its end (up to a
/// bound) before it is refused, so the client hears the 413 instead of a reset connection.
async fn body(request: &mut Request) -> Result<Bytes, ApiError> {
    const DRAINED_AT_MOST: usize = 64 * 1024 * 1024;
    let limit = request
        .data::<BodyLimit>()
        .map_or(usize::MAX, |limit| limit.0);
    let mut chunks = request.take_body().into_bytes_stream();
    let mut body = Vec::new();
    let mut read = 0;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|err| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                format!("Reading the body: {err}"),
            )
        })?;
        read += chunk.len();
        if read <= limit {
            body.extend_from_slice(&chunk);
        } else if read > DRAINED_AT_MOST {
            break;
        }
    }
    if read > limit {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("The body is larger than {limit} bytes"),
        ));
    }
    Ok(Bytes::from(body))
}

fn invalid_body(err: InvalidMessages) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, format!("Invalid body: {err}"))
}

/// Who appends: the token's subject, or the protocol for anonymous callers.
fn actor(principal: &Principal) -> String {
    if principal.authenticated {
        principal.subject.clone()
    } else {
        "durable-streams".to_owned()
    }
}

/// The stream's path: its name with what cannot stand in one path segment escaped.
fn encoded_path(id: &SessionId) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
        .add(b' ')
        .add(b'"')
        .add(b'#')
        .add(b'%')
        .add(b'/')
        .add(b'<')
        .add(b'>')
        .add(b'?')
        .add(b'`')
        .add(b'{')
        .add(b'}');
    let encoded = percent_encoding::utf8_percent_encode(id.as_str(), SEGMENT);
    format!("{PREFIX}{encoded}")
}

/// The headers every answer about a stream carries: its content type, tail and closure.
fn stream_headers(builder: poem::ResponseBuilder, status: &StreamStatus) -> poem::ResponseBuilder {
    let content_type = status
        .session
        .content_type
        .clone()
        .unwrap_or_else(|| JSON.to_owned());
    let builder = builder
        .header(header::CONTENT_TYPE, content_type)
        .header("stream-next-offset", offset(status.last_seq));
    if status.closed {
        builder.header("stream-closed", "true")
    } else {
        builder
    }
}

/// Names what a read returned: the stream's incarnation (a stream created again at the same
/// path starts over at the same offsets), where the read started and where it ended.
fn etag(status: &StreamStatus, start: &str, end: Seq) -> String {
    let closed = if status.closed && end >= status.last_seq {
        ":c"
    } else {
        ""
    };
    format!(
        "\"{}:{start}:{}{closed}\"",
        status.session.created_at,
        offset(end)
    )
}

/// `Stream-Cursor`: the current 20-second interval since a fixed epoch, or, when the client
/// is already there (a cached answer would loop), a later one, so that CDN collapsing never
/// hands a client back its own request.
fn response_cursor(client: Option<&str>) -> u64 {
    const EPOCH_SECONDS: u64 = 1_728_432_000; // 2024-10-09T00:00:00Z
    const INTERVAL_SECONDS: u64 = 20;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let current = now.saturating_sub(EPOCH_SECONDS) / INTERVAL_SECONDS;
    match client.and_then(|client| client.parse::<u64>().ok()) {
        Some(client) if client >= current => {
            let jitter = 1 + rand::random::<u64>() % (3600 / INTERVAL_SECONDS);
            client + jitter
        }
        _ => current,
    }
}

/// A long-poll that found nothing new.
fn long_poll_timeout(next: Seq, cursor: Option<String>, closed: bool) -> Response {
    let mut builder = Response::builder()
        .status(StatusCode::NO_CONTENT)
        .header("stream-next-offset", offset(next))
        .header("stream-up-to-date", "true");
    if let Some(cursor) = cursor {
        builder = builder.header("stream-cursor", cursor);
    }
    if closed {
        builder = builder.header("stream-closed", "true");
    }
    builder.finish()
}

/// Messages read from a stream, rendered for its format.
struct Page {
    body: Vec<u8>,
    count: usize,
    /// The offset after the last event read.
    next: Seq,
    up_to_date: bool,
}

impl Page {
    fn empty(at: Seq, status: &StreamStatus) -> Page {
        Page {
            body: Vec::new(),
            count: 0,
            next: at,
            up_to_date: at >= status.last_seq,
        }
    }

    async fn read(
        log: &SessionLog,
        id: &SessionId,
        after: Seq,
        status: &StreamStatus,
    ) -> Result<Page, ReadError> {
        let page = log
            .read_page(id, after, limits::MAX_PAGE_SIZE as usize)
            .await?;
        let mut rendered = Page::empty(page.next_cursor, status);
        rendered.up_to_date = page.caught_up;
        for event in &page.events {
            rendered.push(stored_messages(event, status.format())?);
        }
        Ok(rendered)
    }

    fn push(&mut self, messages: Messages) {
        match messages {
            Messages::Json(values) => {
                for value in values {
                    if self.count > 0 {
                        self.body.push(b',');
                    }
                    // A value parsed from JSON always serializes.
                    self.body
                        .extend(serde_json::to_vec(&value).unwrap_or_default());
                    self.count += 1;
                }
            }
            Messages::Bytes(bytes) => {
                self.body.extend_from_slice(&bytes);
                self.count += usize::from(!bytes.is_empty());
            }
        }
    }

    fn messages_empty(&self) -> bool {
        self.count == 0
    }

    fn closed_at_tail(&self, status: &StreamStatus) -> bool {
        status.closed && self.up_to_date && self.next >= status.last_seq
    }

    fn into_body(self, format: MessageFormat) -> Vec<u8> {
        match format {
            MessageFormat::Json => {
                let mut body = Vec::with_capacity(self.body.len() + 2);
                body.push(b'[');
                body.extend(self.body);
                body.push(b']');
                body
            }
            MessageFormat::Bytes => self.body,
        }
    }
}

fn page_response(
    status: &StreamStatus,
    page: Page,
    cursor: Option<String>,
    etag: Option<String>,
) -> Response {
    let content_type = status
        .session
        .content_type
        .clone()
        .unwrap_or_else(|| JSON.to_owned());
    let mut builder = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header("stream-next-offset", offset(page.next));
    if page.up_to_date {
        builder = builder.header("stream-up-to-date", "true");
    }
    if page.closed_at_tail(status) {
        builder = builder.header("stream-closed", "true");
    }
    if let Some(cursor) = cursor {
        builder = builder.header("stream-cursor", cursor);
    }
    match etag {
        Some(etag) => builder = builder.header(header::ETAG, etag),
        None => builder = builder.header(header::CACHE_CONTROL, "no-store"),
    }
    builder.body(page.into_body(status.format()))
}

/// 200 for a producer's new messages, 204 for anything else (a duplicate, a close, an
/// append without a producer).
fn appended_response(
    appended: StreamAppended,
    producer: Option<(u64, u64)>,
    had_messages: bool,
) -> Response {
    let status = match (producer, appended.duplicate_of) {
        (Some(_), None) if had_messages => StatusCode::OK,
        _ => StatusCode::NO_CONTENT,
    };
    let mut builder = Response::builder()
        .status(status)
        .header("stream-next-offset", offset(appended.last_seq));
    if let Some((epoch, seq)) = producer {
        let seq = appended.duplicate_of.unwrap_or(seq);
        builder = builder
            .header("producer-epoch", epoch.to_string())
            .header("producer-seq", seq.to_string());
    }
    if appended.closed {
        builder = builder.header("stream-closed", "true");
    }
    builder.finish()
}

/// A refused stream append, with the headers the protocol answers it with.
fn refusal(err: StreamAppendError, producer: Option<(u64, u64)>) -> Refusal {
    let message = err.to_string();
    let (code, headers) = match err {
        StreamAppendError::Closed { last_seq } => (
            ErrorCode::SessionClosed,
            vec![
                ("stream-closed", "true".to_owned()),
                ("stream-next-offset", offset(last_seq)),
            ],
        ),
        StreamAppendError::Producer(ProducerRefusal::StaleEpoch { current_epoch }) => (
            ErrorCode::ProducerEpochStale,
            vec![("producer-epoch", current_epoch.to_string())],
        ),
        StreamAppendError::Producer(ProducerRefusal::NewEpochNotAtZero) => {
            (ErrorCode::InvalidRequest, Vec::new())
        }
        StreamAppendError::Producer(ProducerRefusal::SeqGap { expected, received }) => (
            ErrorCode::ProducerSeqConflict,
            vec![
                ("producer-expected-seq", expected.to_string()),
                ("producer-received-seq", received.to_string()),
            ],
        ),
        StreamAppendError::WriterSeqNotAfter { .. } => (ErrorCode::StreamSeqConflict, Vec::new()),
        StreamAppendError::Append(err) => return err.into(),
    };
    let mut headers = headers;
    if let (Some((epoch, _)), ErrorCode::ProducerSeqConflict) = (producer, code) {
        headers.push(("producer-epoch", epoch.to_string()));
    }
    Refusal {
        error: ApiError::new(code, message),
        headers,
    }
}
