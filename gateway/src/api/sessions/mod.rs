//! Session operations: parse, call the session log, map its answer. Nothing else.
//!
//! Every `/v1/sessions…` operation is in the one `#[OpenApi]` impl below, as poem-openapi keeps
//! one path item per API; their doc comments are the spec's descriptions and most of this file.
//! The bodies they take and answer are in `bodies`.

mod bodies;

pub(crate) use bodies::AppendReply;

use std::sync::Arc;

use poem::Request;
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::{OpenApi, payload::Json};
use serde_json::Value;

use super::ApiTags;
use super::auth::{authorize, holder, own};
use super::error::ApiError;
use super::limits::{AppendRate, take_appends};
use super::nullable::Nullable;
use super::produce::{ProducerSocket, ProducerStart, Producers, producer_upgrade};
use super::raw_input::{
    ArchivedChoice, IdCursor, JsonBody, PageSize, Position, Raw, SessionPatchBody, WaitSeconds,
};
use crate::auth::{Principal, Scope};
use crate::catalog::Catalog;
use crate::catalog::input as catalog_input;
use crate::live::{Feed, Live, LiveResponse, Reader, Transport, gap_reason};
use crate::sessions::error::InvalidInput;
use crate::sessions::model::{NewEvent, SessionId};
use crate::sessions::{Appended, SessionLog, input, limits};
use bodies::{
    AppendBatchReply, AppendBatchRequest, AppendRequest, AppendedEvent, AppendedEvents,
    CreateSessionRequest, CreatedSession, EventBody, EventPageBody, GapBody, SessionBody,
    SessionPage,
};

pub struct SessionsApi {
    pub log: Arc<SessionLog>,
    pub catalog: Arc<Catalog>,
    pub live: Live,
    pub append_rate: Option<Arc<AppendRate>>,
    pub producers: Arc<Producers>,
}

pub fn session_id(raw: &str) -> Result<SessionId, ApiError> {
    SessionId::parse(raw).map_err(|_| InvalidInput::SessionId.into())
}

impl SessionsApi {
    /// What both append operations share: the caller's right to append here, the body read
    /// by `parse` before anything touches NATS (a rejected append leaves nothing
    /// half-written), the tenant's rate, then the append.
    async fn append_parsed(
        &self,
        principal: &Principal,
        id: &str,
        body: Result<Option<Value>, String>,
        parse: impl FnOnce(Option<Value>, Option<&str>) -> Result<Vec<NewEvent>, InvalidInput>,
    ) -> Result<Vec<Appended>, ApiError> {
        let id = session_id(id)?;
        authorize(principal, Scope::Append, Some(&id))?;
        let body = body.map_err(InvalidInput::Event)?;
        let subject = principal
            .authenticated
            .then_some(principal.subject.as_str());
        let events = parse(body, subject)?;
        own(&self.log, principal, &id).await?;
        let rate = self.append_rate.as_deref();
        take_appends(rate, &self.live.metrics, &principal.tenant, events.len())?;
        let appended = self.log.append_all(&id, events).await?;
        let written = appended.iter().filter(|event| !event.deduped).count();
        self.live.figures.appended(written);
        Ok(appended)
    }

    /// The session a request names, if the caller may `scope` it: its scope and pin first,
    /// then its tenant (another tenant's session is as missing as an unknown one).
    async fn session_for(
        &self,
        principal: &Principal,
        raw: &str,
        scope: Scope,
    ) -> Result<SessionId, ApiError> {
        let id = session_id(raw)?;
        authorize(principal, scope, Some(&id))?;
        own(&self.log, principal, &id).await?;
        Ok(id)
    }

    async fn set_archived(
        &self,
        principal: &Principal,
        raw: &str,
        archived: bool,
    ) -> Result<Json<SessionBody>, ApiError> {
        let id = self.session_for(principal, raw, Scope::Create).await?;
        Ok(Json(self.catalog.set_archived(&id, archived).await?.into()))
    }
}

#[OpenApi(tag = "ApiTags::Sessions")]
impl SessionsApi {
    /// Create a session.
    ///
    /// Every field is optional: `id` (any non-empty string up to 256 bytes; a `ses_…` id is
    /// generated when absent), `title` (up to 4 KiB) and `metadata` (a JSON object up to 16 KiB and
    /// 32 levels deep). The reply is the new session at `version` 1 with `last_seq` 0; it is in
    /// every gateway's lists from then on.
    ///
    /// An id already taken answers 409 `session_exists` and leaves that session as it was; invalid
    /// input answers 400 and creates nothing. To retry safely after a 503 or a lost answer, choose
    /// the id yourself and send the same request again: 409 `session_exists` then means the first
    /// attempt created it. Without an id, a retry may create a second session. With authentication
    /// on, it needs scope `session:create`, the session belongs to the token's tenant, and a token
    /// pinned to one session creates that one (403 `forbidden_session` for another id).
    #[oai(
        path = "/v1/sessions",
        method = "post",
        operation_id = "create_session"
    )]
    async fn create(
        &self,
        principal: Data<&Principal>,
        body: JsonBody<CreateSessionRequest>,
    ) -> Result<CreatedSession, ApiError> {
        authorize(&principal, Scope::Create, None)?;
        let body = body.into_value().map_err(InvalidInput::Session)?;
        let mut new_session = input::new_session(body)?;
        // A token pinned to one session creates that one, or nothing.
        if let Some(pinned) = &principal.session {
            authorize(&principal, Scope::Create, new_session.id.as_ref())?;
            new_session.id = Some(pinned.clone());
        }
        let tenant = principal.authenticated.then(|| principal.tenant.clone());
        let summary = self.log.create(new_session, tenant).await?;
        Ok(CreatedSession::Created(Json(summary.into())))
    }

    /// Get a session's header and `last_seq`.
    ///
    /// `last_seq` counts every append acknowledged before this request arrived, through any
    /// gateway; `version` counts header changes (PATCH), and archived sessions are returned like
    /// any other. An unknown id, and with authentication on another tenant's session, answers 404
    /// `session_not_found`. Reading changes nothing, so any failure can be retried as is. Needs
    /// scope `session:read`.
    #[oai(
        path = "/v1/sessions/:id",
        method = "get",
        operation_id = "get_session"
    )]
    async fn get(
        &self,
        principal: Data<&Principal>,
        id: Path<String>,
    ) -> Result<Json<SessionBody>, ApiError> {
        let id = self.session_for(&principal, &id, Scope::Read).await?;
        Ok(Json(self.log.get(&id).await?.into()))
    }

    /// Append one event.
    ///
    /// The event is committed to JetStream before this returns. Its `seq` is its place in the
    /// session: strictly increasing, gapless and starting at 1, whichever gateway is asked.
    /// `(producer_id, producer_seq)` makes retries safe: a producer's `producer_seq` must be its
    /// previous one plus 1 (a producer the session has not seen may start anywhere), and sending
    /// its latest request again answers 201 with `deduped: true` and the original `seq`, appending
    /// nothing. The same `producer_seq` with other content is 409 `producer_replay_conflict`; any
    /// other `producer_seq` is 409 `producer_seq_conflict`. `expected_seq` appends only if the
    /// session's `last_seq` equals it (409 `expected_seq_conflict` otherwise); it is checked before
    /// dedupe, so a retry that carries it answers that 409 when the first attempt was committed.
    ///
    /// After a 503 (with `nats_timeout` the outcome is unknown), a 500 or no answer at all, send
    /// the same request again (after `Retry-After` seconds for a 503): the event is stored once.
    /// Every 4xx means nothing was written: 400 for an invalid event (checked before the session is
    /// looked up), 404 `session_not_found`, 413 for a body over the gateway's limit or an event
    /// over NATS's message size, 429 `rate_limited` when the tenant's append rate is spent (retry
    /// after `Retry-After`). Archived sessions accept appends. Each session remembers its 10,000
    /// most recently active producers: one dropped from them counts as new again, so a retry of its
    /// last request would be appended a second time. Needs scope `session:append`; with
    /// authentication on, `actor` defaults to the token's `sub` and must equal it when given.
    #[oai(
        path = "/v1/sessions/:id/append",
        method = "post",
        operation_id = "append_event"
    )]
    async fn append(
        &self,
        principal: Data<&Principal>,
        id: Path<String>,
        body: JsonBody<AppendRequest>,
    ) -> Result<AppendedEvent, ApiError> {
        let parse = |body: Option<Value>, subject: Option<&str>| {
            input::new_event(body, subject).map(|event| vec![event])
        };
        let mut appended = self
            .append_parsed(&principal, &id, body.into_value(), parse)
            .await?;
        let appended = appended
            .pop()
            .ok_or_else(|| ApiError::internal(&"an append went unanswered"))?;
        Ok(AppendedEvent::Created(Json(appended.into())))
    }

    /// Append up to 1,000 events (1 MiB) in one request, all or none, in order.
    ///
    /// Each event is deduplicated and checked (`producer_seq`, `expected_seq`) as if appended alone
    /// right after the one before it, and answered as a single append would be, in order; the
    /// events are committed to JetStream as one atomic batch before this returns. One rejected
    /// event rejects the batch (400 or 409; an `invalid_event` message names `events[i]`) and
    /// nothing is written; an empty batch or one over 1,000 events is 400 `invalid_event`.
    ///
    /// Retrying after a 503, a 500 or no answer: only each producer's latest request is retry-safe,
    /// so a batch whose events come from distinct producers is answered with the original seqs
    /// (`deduped: true`), while one carrying several events of one producer answers 409
    /// `producer_seq_conflict` if the first attempt was committed; send that producer's last event
    /// alone to learn its seq. Errors, rate limits (each event counts) and the scope needed are
    /// those of a single append.
    #[oai(
        path = "/v1/sessions/:id/append_batch",
        method = "post",
        operation_id = "append_events"
    )]
    async fn append_batch(
        &self,
        principal: Data<&Principal>,
        id: Path<String>,
        body: JsonBody<AppendBatchRequest>,
    ) -> Result<AppendedEvents, ApiError> {
        let appended = self
            .append_parsed(&principal, &id, body.into_value(), input::new_events)
            .await?;
        let last_seq = appended.last().map_or(0, |event| event.last_seq);
        Ok(AppendedEvents::Created(Json(AppendBatchReply {
            events: appended.into_iter().map(AppendReply::from).collect(),
            last_seq,
        })))
    }

    /// List sessions sorted by id, a page at a time.
    ///
    /// Filter by metadata with `metadata[key]=value` or `metadata.key=value` (repeatable, ANDed,
    /// exact match on string values only); `archived` is `false` (default), `true` or `all`;
    /// `limit` is 1..1000 (default 100); `cursor` is the `next_cursor` of the previous page (ids
    /// after it are listed). Continue until `next_cursor` is `null`. A page includes every change
    /// made before the request arrived, through any gateway.
    ///
    /// Bad parameters answer 400 (`invalid_limit`, `invalid_cursor`, `invalid_list_query`,
    /// `invalid_metadata`). Reading changes nothing, so any failure can be retried as is. With
    /// authentication on, it needs scope `session:read` and lists only the caller's tenant (a token
    /// pinned to one session sees that one).
    #[oai(path = "/v1/sessions", method = "get", operation_id = "list_sessions")]
    async fn list(
        &self,
        principal: Data<&Principal>,
        request: &Request,
        #[oai(name = "limit")] _limit: Query<Option<Raw<PageSize>>>,
        #[oai(name = "cursor")] _cursor: Query<Option<Raw<IdCursor>>>,
        #[oai(name = "archived")] _archived: Query<Option<Raw<ArchivedChoice>>>,
    ) -> Result<Json<SessionPage>, ApiError> {
        // The documented parameters are read again with the free-form metadata filters, from
        // the raw query, so one parser applies every rule and its order.
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(request.uri().query().unwrap_or_default())
                .map_err(|err| InvalidInput::ListQuery(err.to_string()))?;
        authorize(&principal, Scope::Read, None)?;
        let mut query = catalog_input::list_query(&pairs)?;
        query.tenant = principal.authenticated.then(|| principal.tenant.clone());
        query.only = principal.session.clone();
        let page = self.catalog.list(&query).await?;
        Ok(Json(SessionPage {
            sessions: page.sessions.into_iter().map(SessionBody::from).collect(),
            next_cursor: Nullable(page.next_cursor),
        }))
    }

    /// Rename, retag (shallow metadata merge) or both.
    ///
    /// `title` replaces the title (`null` clears it); `metadata` keys overwrite those of the same
    /// name and leave the others (no key is removed). The body must change something (400
    /// `invalid_session` otherwise). Each PATCH adds 1 to `version` and emits a `session.updated`
    /// lifecycle event; the session's events are untouched.
    ///
    /// `expected_version` makes it a compare-and-set: when the session's `version` differs, 409
    /// `expected_version_conflict` with `current_version` and nothing changes; without it the last
    /// writer wins. To retry after a 503 or a lost answer, send the same request with
    /// `expected_version`: a 409 whose `current_version` is one more than yours means your first
    /// attempt was applied (unless someone else's landed in between). Without it a retry is applied
    /// again, which gives the same header but another `version`. 404 `session_not_found` for an
    /// unknown (or another tenant's) session. Needs scope `session:create`.
    #[oai(
        path = "/v1/sessions/:id",
        method = "patch",
        operation_id = "patch_session"
    )]
    async fn patch(
        &self,
        principal: Data<&Principal>,
        id: Path<String>,
        body: JsonBody<Raw<SessionPatchBody>>,
    ) -> Result<Json<SessionBody>, ApiError> {
        let id = session_id(&id)?;
        authorize(&principal, Scope::Create, Some(&id))?;
        let body = body.into_value().map_err(InvalidInput::Session)?;
        let patch = catalog_input::session_patch(body)?;
        own(&self.log, &principal, &id).await?;
        Ok(Json(self.catalog.patch(&id, patch).await?.into()))
    }

    /// Hide a session from default lists.
    ///
    /// The session is then listed only with `archived=true` or `all`; its events stay readable,
    /// tailable and appendable. Answers the session with `archived: true`. Archiving an archived
    /// session changes nothing and emits no lifecycle event, so any failure can be retried as is.
    /// `version` does not change; `updated_at` does on a real change. 404 `session_not_found` for
    /// an unknown (or another tenant's) session. Needs scope `session:create`; the body is ignored.
    #[oai(
        path = "/v1/sessions/:id/archive",
        method = "post",
        operation_id = "archive_session"
    )]
    async fn archive(
        &self,
        principal: Data<&Principal>,
        id: Path<String>,
    ) -> Result<Json<SessionBody>, ApiError> {
        self.set_archived(&principal, &id, true).await
    }

    /// Show an archived session in default lists again.
    ///
    /// Answers the session with `archived: false`. Unarchiving an active session changes nothing
    /// and emits no lifecycle event, so any failure can be retried as is. `version` does not
    /// change; `updated_at` does on a real change. 404 `session_not_found` for an unknown (or
    /// another tenant's) session. Needs scope `session:create`; the body is ignored.
    #[oai(
        path = "/v1/sessions/:id/unarchive",
        method = "post",
        operation_id = "unarchive_session"
    )]
    async fn unarchive(
        &self,
        principal: Data<&Principal>,
        id: Path<String>,
    ) -> Result<Json<SessionBody>, ApiError> {
        self.set_archived(&principal, &id, false).await
    }

    /// Tail a session: every event with `seq > cursor`, in order, then new ones live.
    ///
    /// Replay and live are one stream, with no gap and no duplicate between them; `cursor` defaults
    /// to 0. Over a WebSocket: one JSON event per text frame (a JSON array of up to `batch_size`
    /// events when `batch_size` > 1), pings while idle. With `Accept: text/event-stream`:
    /// Server-Sent Events with `id: <seq>`, resumable with `Last-Event-ID`, and `: keep-alive`
    /// comments. A `gap` object comes first when the reader cannot continue right after its cursor:
    /// `cursor_expired` when retention dropped those events, `resume_invalidated` when the cursor
    /// is past the head; delivery goes on from its `next_cursor`.
    ///
    /// Closes: 1001 the gateway is going away, 1011 storage failed, 4001 the token expired, 4002
    /// the reader fell too far behind (SSE: a last `going_away`, `storage_error`, `token_expired`
    /// or `overflow` event). Always reconnect, to any gateway, with the last seq you processed (a
    /// fresh token after 4001): nothing is lost or repeated. Before the stream starts: 400
    /// `invalid_websocket_upgrade` for a request that is neither a WebSocket upgrade nor accepts
    /// `text/event-stream`, 400 `invalid_cursor` or `invalid_tail_batch_size`, 404
    /// `session_not_found`, and with authentication on 429 `too_many_tails` beyond the token's
    /// quota of live streams. Needs scope `session:read`; browsers may pass the token as
    /// `access_token` in the query.
    #[oai(
        path = "/v1/sessions/:id/tail",
        method = "get",
        operation_id = "tail_session"
    )]
    async fn tail(
        &self,
        principal: Data<&Principal>,
        request: &Request,
        id: Path<String>,
        cursor: Query<Option<Raw<Position>>>,
        batch_size: Query<Option<Raw<PageSize>>>,
    ) -> Result<LiveResponse, ApiError> {
        let transport = Transport::of(request).await?;
        let cursor = transport.cursor(request, Raw::raw(&cursor))?;
        let batch_size = limits::tail_batch_size(Raw::raw(&batch_size))?;
        let id = self.session_for(&principal, &id, Scope::Read).await?;
        let start = self.log.open_tail(&id, cursor).await?;
        let reader = Reader {
            feed: Feed::Session,
            cursor: start.cursor,
            gap: start.gap,
            batch_size,
            contiguous: true,
            expires_at: principal.expires_at,
            permit: self.live.admit(holder(&principal))?,
        };
        Ok(self.live.respond(transport, start.entries, reader))
    }

    /// Append over a producer socket: pipelined requests, each answered in order.
    ///
    /// A WebSocket for a producer streaming many small events (a model's tokens): send requests
    /// without waiting for answers, and get for each, in the order sent, exactly what `POST
    /// /append` would answer. Each text frame is one append body, or a JSON array of them
    /// (`append_batch` rules: all or none). Each answer is a text frame: the append's reply (or
    /// the batch's) plus `producer_id` and `producer_seq`, or `{"error", "message",
    /// "producer_id", "producer_seq"}` (with `retry_after` seconds where HTTP would send
    /// `Retry-After`) with the codes of `POST /append`. A malformed frame is answered with an
    /// error and the socket goes on. Past the gateway's window of unanswered requests (256 by
    /// default, and 16 MiB) it stops reading the socket until answers are read; nothing is
    /// dropped.
    ///
    /// The first frame is `{"type": "ready", "producer_id", "producer_seq", "seq"}`: the latest
    /// request stored for `producer_id` in this session (nulls when none). After a drop,
    /// reconnect and send again only the requests after that `producer_seq`; those at or below
    /// it were stored, and their seqs can be read with `GET /events`. Close codes: 1001 the
    /// gateway is going away, 4001 the token expired, 1009 a frame over the body limit. Before the
    /// upgrade: 400 `invalid_websocket_upgrade` or `invalid_event` (an empty `producer_id`),
    /// 404 `session_not_found`, 429 `too_many_tails` beyond the token's quota of live streams.
    /// Needs scope `session:append`; browsers may pass the token as `access_token`. Rate limits
    /// apply to each event.
    #[oai(
        path = "/v1/sessions/:id/produce",
        method = "get",
        operation_id = "produce_events"
    )]
    async fn produce(
        &self,
        principal: Data<&Principal>,
        request: &Request,
        id: Path<String>,
        producer_id: Query<Option<String>>,
    ) -> Result<ProducerSocket, ApiError> {
        let websocket = producer_upgrade(request).await?;
        let producer_id = match producer_id.0 {
            Some(producer_id) if producer_id.is_empty() => {
                let refusal = "`producer_id` must be a non-empty string";
                return Err(InvalidInput::Event(refusal.into()).into());
            }
            producer_id => producer_id,
        };
        let id = self.session_for(&principal, &id, Scope::Append).await?;
        // Read even without a producer id: it is what finds a session that does not exist.
        let position = self
            .log
            .write_status(&id, producer_id.as_deref())
            .await?
            .producer;
        let producer = producer_id.map(|producer_id| (producer_id, position));
        let start = ProducerStart {
            session: id,
            principal: principal.0.clone(),
            producer,
            permit: self.live.admit(holder(&principal))?,
        };
        Ok(self.producers.respond(websocket, start))
    }

    /// Read a page of events with `seq > cursor`, oldest first.
    ///
    /// `cursor` defaults to 0 and `limit` (1..1000) to 100. Continue with `next_cursor` until
    /// `caught_up`. With `wait` (seconds, up to 60), a request that would return no events waits
    /// for the first one and answers an empty page if none comes. A `gap` field says the page does
    /// not continue right after `cursor` (`cursor_expired`: retention dropped those events;
    /// `resume_invalidated`: the cursor is past the head). Events have the shape a tail delivers.
    ///
    /// Bad parameters answer 400 (`invalid_cursor`, `invalid_limit`, `invalid_wait`); an unknown
    /// (or another tenant's) session 404 `session_not_found`. Reading changes nothing, so any
    /// failure can be retried as is. Needs scope `session:read`.
    #[oai(
        path = "/v1/sessions/:id/events",
        method = "get",
        operation_id = "list_events"
    )]
    async fn events(
        &self,
        principal: Data<&Principal>,
        id: Path<String>,
        cursor: Query<Option<Raw<Position>>>,
        limit: Query<Option<Raw<PageSize>>>,
        wait: Query<Option<Raw<WaitSeconds>>>,
    ) -> Result<Json<EventPageBody>, ApiError> {
        let cursor = input::cursor(Raw::raw(&cursor))?;
        let limit = limits::page_size(Raw::raw(&limit))?;
        let wait = limits::wait(Raw::raw(&wait))?;
        let id = self.session_for(&principal, &id, Scope::Read).await?;
        let metrics = &self.live.metrics;
        let long_poll = (!wait.is_zero()).then(|| metrics.long_poll());
        let page = self.log.read_page_waiting(&id, cursor, limit, wait).await?;
        if let Some(long_poll) = long_poll {
            long_poll.sent(page.events.len());
        }
        if let Some(gap) = &page.gap {
            metrics.gap(gap_reason(gap.reason));
        }
        let events = page
            .events
            .iter()
            .map(|json| serde_json::from_slice(json))
            .collect::<Result<Vec<EventBody>, _>>()
            .map_err(|err| ApiError::internal(&err))?;
        Ok(Json(EventPageBody {
            events,
            next_cursor: page.next_cursor,
            last_seq: page.last_seq,
            caught_up: page.caught_up,
            gap: page.gap.map(GapBody::from),
        }))
    }
}
