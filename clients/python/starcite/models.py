# Generated from openapi.json by clients/python/generate.sh (`make clients`); do not edit.

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any


@dataclass(kw_only=True)
class AppendReply:
    committed_cursor: int
    """
    Everything up to here is durable in JetStream; equal to `last_seq`.
    """
    cursor: int
    """
    Equal to `seq`: resume a tail after it.
    """
    deduped: bool
    """
    True when this was a retry of the producer's latest request and nothing was appended.
    """
    last_seq: int
    """
    The session's newest seq now.
    """
    seq: int
    """
    The event's seq; for a deduped retry, the seq the original got.
    """


@dataclass(kw_only=True)
class Refs:
    request_id: str | None = None
    sequence_id: str | None = None
    step: int | None = None
    to_seq: int | None = None


@dataclass(kw_only=True)
class AppendRequest:
    actor: str
    """
    Who acts, e.g. `agent:researcher`.
    """
    payload: dict[str, Any]
    """
    Any JSON object.
    """
    producer_id: str
    """
    The writer; `(producer_id, producer_seq)` makes retries safe.
    """
    producer_seq: int
    """
    The writer's own counter: contiguous per producer after its first append. A decimal
    string is accepted too.
    """
    type: str
    """
    The event type, e.g. `message`, `tool_call`, `state`.
    """
    expected_seq: int | None = None
    """
    Append only if the session's `last_seq` equals this (optimistic concurrency).
    """
    idempotency_key: str | None = None
    """
    Stored and echoed; part of what makes two requests "the same".
    """
    metadata: dict[str, Any] | None = None
    refs: Refs | None = None
    """
    References; `to_seq` and `step` are integers >= 0, `request_id` and `sequence_id`
    strings, other keys are kept as sent.
    """
    source: str | None = None


@dataclass(kw_only=True)
class CreateSessionRequest:
    id: str | None = None
    """
    Any non-empty string; generated (`ses_…`) when absent.
    """
    metadata: dict[str, Any] | None = None
    """
    Any JSON object; `{}` when absent.
    """
    title: str | None = None


class ErrorCode(Enum):
    catalog_loading = 'catalog_loading'
    event_too_large = 'event_too_large'
    expected_seq_conflict = 'expected_seq_conflict'
    expected_version_conflict = 'expected_version_conflict'
    forbidden_scope = 'forbidden_scope'
    forbidden_session = 'forbidden_session'
    internal_error = 'internal_error'
    invalid_cursor = 'invalid_cursor'
    invalid_event = 'invalid_event'
    invalid_limit = 'invalid_limit'
    invalid_list_query = 'invalid_list_query'
    invalid_metadata = 'invalid_metadata'
    invalid_refs = 'invalid_refs'
    invalid_request = 'invalid_request'
    invalid_session = 'invalid_session'
    invalid_session_id = 'invalid_session_id'
    invalid_tail_batch_size = 'invalid_tail_batch_size'
    invalid_wait = 'invalid_wait'
    invalid_websocket_upgrade = 'invalid_websocket_upgrade'
    method_not_allowed = 'method_not_allowed'
    nats_timeout = 'nats_timeout'
    nats_unavailable = 'nats_unavailable'
    not_found = 'not_found'
    payload_too_large = 'payload_too_large'
    producer_epoch_stale = 'producer_epoch_stale'
    producer_replay_conflict = 'producer_replay_conflict'
    producer_seq_conflict = 'producer_seq_conflict'
    rate_limited = 'rate_limited'
    session_closed = 'session_closed'
    session_exists = 'session_exists'
    session_not_found = 'session_not_found'
    stream_conflict = 'stream_conflict'
    stream_gone = 'stream_gone'
    stream_seq_conflict = 'stream_seq_conflict'
    too_many_tails = 'too_many_tails'
    unauthorized = 'unauthorized'
    unsupported_media_type = 'unsupported_media_type'


@dataclass(kw_only=True)
class EventBody:
    actor: str
    cursor: int
    """
    Equal to `seq`.
    """
    inserted_at: str
    metadata: dict[str, Any]
    payload: dict[str, Any]
    producer_id: str
    producer_seq: int
    refs: dict[str, Any]
    seq: int
    type: str
    idempotency_key: str | None = None
    source: str | None = None


@dataclass(kw_only=True)
class GapBody:
    committed_cursor: int
    earliest_available_cursor: int
    from_cursor: int
    next_cursor: int
    reason: str
    """
    `cursor_expired` or `resume_invalidated`.
    """


@dataclass(kw_only=True)
class HealthStatus:
    status: str
    """
    `ok`, or `starting` while the gateway cannot serve.
    """
    reason: str | None = None
    """
    Why the gateway is not ready.
    """


@dataclass(kw_only=True)
class SessionBody:
    archived: bool
    created_at: str
    id: str
    last_seq: int
    """
    The newest event's seq; 0 for an empty session.
    """
    metadata: dict[str, Any]
    title: str | None
    updated_at: str
    version: int
    tenant_id: str | None = None
    """
    The tenant that owns the session (with authentication on).
    """


@dataclass(kw_only=True)
class SessionPage:
    next_cursor: str | None
    """
    Pass as `cursor` for the next page; `null` when no more sessions follow.
    """
    sessions: list[SessionBody]


@dataclass(kw_only=True)
class AppendBatchReply:
    events: list[AppendReply]
    last_seq: int
    """
    The session's newest seq now.
    """


@dataclass(kw_only=True)
class AppendBatchRequest:
    events: list[AppendRequest]
    """
    1 to 1,000 events.
    """


@dataclass(kw_only=True)
class ErrorBody:
    error: ErrorCode
    message: str
    """
    A sentence for people; its wording may change.
    """
    current_version: int | None = None
    """
    With `expected_version_conflict`: the session's version now.
    """


@dataclass(kw_only=True)
class EventPageBody:
    caught_up: bool
    """
    True when this page reaches `last_seq`.
    """
    events: list[EventBody]
    last_seq: int
    """
    The session's newest seq.
    """
    next_cursor: int
    """
    Pass as `cursor` for the next page: the last seq on this page; on an empty page, where
    the reader stands.
    """
    gap: GapBody | None = None
    """
    Present when the page does not continue right after `cursor`: retention dropped those
    events (`cursor_expired`) or the cursor is past the head (`resume_invalidated`).
    """
