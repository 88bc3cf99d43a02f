//! The JSON bodies of the session operations: what a request may carry and what each answer
//! holds, as the spec documents them.

use std::collections::BTreeMap;

use poem_openapi::{ApiResponse, Object, payload::Json};
use serde_json::Value;

use crate::api::nullable::Nullable;
use crate::api::raw_input::{
    NewSessionId, OptionalName, OptionalObject, OptionalPosition, OptionalText, Raw, Refs,
};
use crate::sessions::Appended;
use crate::sessions::model::{Gap, GapReason, SessionSummary};

/// Body of `POST /v1/sessions`. Every field is optional; `null` means absent.
#[derive(Debug, Object)]
pub struct CreateSessionRequest {
    /// Any non-empty string; generated (`ses_…`) when absent.
    id: Option<Raw<NewSessionId>>,
    title: Option<Raw<OptionalText>>,
    /// Any JSON object; `{}` when absent.
    metadata: Option<Raw<OptionalObject>>,
}

/// Body of `POST /v1/sessions/{id}/append`: one event. Optional fields may be `null`.
#[derive(Debug, Object)]
pub struct AppendRequest {
    /// The event type, e.g. `message`, `tool_call`, `state`.
    #[oai(rename = "type", validator(min_length = 1))]
    kind: String,
    /// Any JSON object.
    payload: BTreeMap<String, Value>,
    /// Who acts, e.g. `agent:researcher`.
    #[oai(validator(min_length = 1))]
    actor: String,
    /// The writer; `(producer_id, producer_seq)` makes retries safe.
    #[oai(validator(min_length = 1))]
    producer_id: String,
    /// The writer's own counter: contiguous per producer after its first append. A decimal
    /// string is accepted too.
    #[oai(validator(minimum(value = "1"), maximum(value = "9007199254740991")))]
    producer_seq: u64,
    source: Option<Raw<OptionalName>>,
    metadata: Option<Raw<OptionalObject>>,
    /// References; `to_seq` and `step` are integers >= 0, `request_id` and `sequence_id`
    /// strings, other keys are kept as sent.
    refs: Option<Raw<Refs>>,
    /// Stored and echoed; part of what makes two requests "the same".
    idempotency_key: Option<Raw<OptionalName>>,
    /// Append only if the session's `last_seq` equals this (optimistic concurrency).
    expected_seq: Option<Raw<OptionalPosition>>,
}

/// A session header with the head of its log.
#[derive(Debug, Object)]
pub struct SessionBody {
    pub id: String,
    /// The tenant that owns the session (with authentication on).
    #[oai(skip_serializing_if_is_none)]
    pub tenant_id: Option<String>,
    pub title: Nullable<String>,
    pub metadata: BTreeMap<String, Value>,
    /// The newest event's seq; 0 for an empty session.
    pub last_seq: u64,
    pub created_at: String,
    pub updated_at: String,
    pub version: u64,
    pub archived: bool,
}

impl From<SessionSummary> for SessionBody {
    fn from(summary: SessionSummary) -> SessionBody {
        let session = summary.session;
        SessionBody {
            tenant_id: session.tenant_id,
            id: session.id.into(),
            title: Nullable(session.title),
            metadata: session.metadata.into_iter().collect(),
            last_seq: summary.last_seq,
            created_at: session.created_at,
            updated_at: session.updated_at,
            version: session.version,
            archived: session.archived,
        }
    }
}

/// A batch append: the events, in order, each shaped like a single append's body.
#[derive(Debug, Object)]
pub struct AppendBatchRequest {
    /// 1 to 1,000 events.
    events: Vec<AppendRequest>,
}

/// The answer to a batch append: one entry per event, in order.
#[derive(Debug, Object)]
pub struct AppendBatchReply {
    pub events: Vec<AppendReply>,
    /// The session's newest seq now.
    pub last_seq: u64,
}

/// The answer to an append, fresh or deduped alike.
#[derive(Debug, Object)]
pub struct AppendReply {
    /// The event's seq; for a deduped retry, the seq the original got.
    pub seq: u64,
    /// The session's newest seq now.
    pub last_seq: u64,
    /// True when this was a retry of the producer's latest request and nothing was appended.
    pub deduped: bool,
    /// Equal to `seq`: resume a tail after it.
    pub cursor: u64,
    /// Everything up to here is durable in JetStream; equal to `last_seq`.
    pub committed_cursor: u64,
}

impl From<Appended> for AppendReply {
    fn from(appended: Appended) -> AppendReply {
        AppendReply {
            seq: appended.seq,
            last_seq: appended.last_seq,
            deduped: appended.deduped,
            cursor: appended.seq,
            committed_cursor: appended.last_seq,
        }
    }
}

/// A committed event, exactly as tails deliver it.
#[derive(Debug, Object, serde::Deserialize)]
pub struct EventBody {
    pub seq: u64,
    /// Equal to `seq`.
    pub cursor: u64,
    #[oai(rename = "type")]
    #[serde(rename = "type")]
    pub kind: String,
    pub payload: BTreeMap<String, Value>,
    pub actor: String,
    pub producer_id: String,
    pub producer_seq: u64,
    #[oai(default)]
    pub source: Nullable<String>,
    pub metadata: BTreeMap<String, Value>,
    pub refs: BTreeMap<String, Value>,
    #[oai(default)]
    pub idempotency_key: Nullable<String>,
    pub inserted_at: String,
}

/// One page of a session's events.
#[derive(Debug, Object)]
pub struct EventPageBody {
    pub events: Vec<EventBody>,
    /// Pass as `cursor` for the next page: the last seq on this page; on an empty page, where
    /// the reader stands.
    pub next_cursor: u64,
    /// The session's newest seq.
    pub last_seq: u64,
    /// True when this page reaches `last_seq`.
    pub caught_up: bool,
    /// Present when the page does not continue right after `cursor`: retention dropped those
    /// events (`cursor_expired`) or the cursor is past the head (`resume_invalidated`).
    #[oai(skip_serializing_if_is_none)]
    pub gap: Option<GapBody>,
}

/// The reader continues from `next_cursor`, not from its own cursor.
#[derive(Debug, Object)]
pub struct GapBody {
    /// `cursor_expired` or `resume_invalidated`.
    pub reason: String,
    pub from_cursor: u64,
    pub next_cursor: u64,
    pub earliest_available_cursor: u64,
    pub committed_cursor: u64,
}

impl From<Gap> for GapBody {
    fn from(gap: Gap) -> GapBody {
        let reason = match gap.reason {
            GapReason::CursorExpired => "cursor_expired",
            GapReason::ResumeInvalidated => "resume_invalidated",
        };
        GapBody {
            reason: reason.to_owned(),
            from_cursor: gap.from_cursor,
            next_cursor: gap.next_cursor,
            earliest_available_cursor: gap.earliest_available_cursor,
            committed_cursor: gap.committed_cursor,
        }
    }
}

#[derive(ApiResponse)]
pub enum CreatedSession {
    /// The session was created.
    #[oai(status = 201)]
    Created(Json<SessionBody>),
}

#[derive(ApiResponse)]
pub enum AppendedEvents {
    /// Every event is committed (or was already: see each `deduped`).
    #[oai(status = 201)]
    Created(Json<AppendBatchReply>),
}

#[derive(ApiResponse)]
pub enum AppendedEvent {
    /// The event is committed (or was already: see `deduped`).
    #[oai(status = 201)]
    Created(Json<AppendReply>),
}

/// One page of sessions, sorted by id.
#[derive(Debug, Object)]
pub struct SessionPage {
    pub sessions: Vec<SessionBody>,
    /// Pass as `cursor` for the next page; `null` when no more sessions follow.
    pub next_cursor: Nullable<String>,
}
