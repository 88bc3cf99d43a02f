"""The refusals a caller sees: one base class with the gateway's code, status and message, and a
subclass for each refusal a program reacts to.

Conditions that retrying fixes (network errors, dropped sockets, 503, 429) are never raised:
the SDK retries them until it succeeds or the caller cancels (e.g. `asyncio.timeout`).
"""

from __future__ import annotations

from typing import Any


class StarciteError(Exception):
    """A refusal from the gateway, or a reply the SDK could not read (status 0)."""

    def __init__(self, code: str, status: int, message: str, body: dict[str, Any] | None = None):
        super().__init__(f"{code} ({status}): {message}" if status else f"{code}: {message}")
        self.code = code
        self.status = status
        self.message = message
        self.body = body or {}
        # True when an earlier attempt of the same request may have taken effect.
        self.retried = False


class InvalidEvent(StarciteError):
    """A 400: the request broke a rule (`invalid_event`, `invalid_metadata`, any `invalid_*`)."""


class Unauthorized(StarciteError):
    """A 401: no token, or the token (even a refreshed one) was refused."""


class Forbidden(StarciteError):
    """A 403: the token's scope or pin does not allow this."""


class NotFound(StarciteError):
    """A 404: no such session (or another tenant's)."""


class SessionExists(StarciteError):
    """A 409: a session with this id already exists."""


class ExpectedSeqConflict(StarciteError):
    """A 409: `expected_seq` was not the session's `last_seq`."""


class ProducerSeqConflict(StarciteError):
    """A 409 `producer_seq_conflict` or `producer_replay_conflict`: another writer is using this
    producer id."""


class ExpectedVersionConflict(StarciteError):
    """A 409: `expected_version` was not the session's `version`, now `current_version`."""

    @property
    def current_version(self) -> int | None:
        return self.body.get("current_version")


_BY_CODE: dict[str, type[StarciteError]] = {
    "session_exists": SessionExists,
    "expected_seq_conflict": ExpectedSeqConflict,
    "producer_seq_conflict": ProducerSeqConflict,
    "producer_replay_conflict": ProducerSeqConflict,
    "expected_version_conflict": ExpectedVersionConflict,
}

_BY_STATUS: dict[int, type[StarciteError]] = {
    400: InvalidEvent,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
}


def error_from(status: int, body: Any) -> StarciteError:
    """The typed error for a refusal with `status` and its `{"error", "message"}` `body`."""
    if not isinstance(body, dict):
        body = {}
    code = str(body.get("error") or f"http_{status}")
    message = str(body.get("message") or "")
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status, StarciteError)
    return cls(code, status, message, body)


def status_of(code: str) -> int:
    """The HTTP status the gateway gives `code`, for refusals that arrive on a socket."""
    if code.startswith("invalid_"):
        return 400
    if code.startswith("forbidden_"):
        return 403
    return _STATUS_OF_CODE.get(code, 0)


_STATUS_OF_CODE = {
    "unauthorized": 401,
    "session_not_found": 404,
    "not_found": 404,
    "session_exists": 409,
    "expected_seq_conflict": 409,
    "producer_seq_conflict": 409,
    "producer_replay_conflict": 409,
    "expected_version_conflict": 409,
    "payload_too_large": 413,
    "event_too_large": 413,
    "rate_limited": 429,
    "too_many_tails": 429,
    "internal_error": 500,
    "nats_unavailable": 503,
    "nats_timeout": 503,
}
