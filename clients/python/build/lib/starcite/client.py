"""The entry point: a gateway's address and how to authenticate to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from . import _live
from ._decode import decode
from ._transport import TokenSource, Transport
from .errors import SessionExists
from .models import SessionPage
from .session import Session, SessionInfo


@dataclass(kw_only=True)
class LifecycleEvent:
    """A change to a session's header; which fields are set depends on `kind`."""

    kind: str
    session_id: str
    version: int
    title: str | None = None
    metadata: dict[str, Any] | None = None
    archived: bool | None = None
    created_at: str | None = None
    updated_at: str | None = None


@dataclass(kw_only=True)
class LifecycleEntry:
    cursor: int
    event: LifecycleEvent


class SessionListing:
    """`await` it for one page; `async for` over it for every session from there on."""

    def __init__(self, transport: Transport, params: list[tuple[str, Any]], cursor: str | None):
        self._transport = transport
        self._params = params
        self._cursor = cursor

    async def page(self, cursor: str | None = None) -> SessionPage:
        params = self._params + ([("cursor", cursor)] if cursor is not None else [])
        reply = await self._transport.request("GET", "/v1/sessions", params=params)
        return decode(SessionPage, reply)

    def __await__(self) -> Generator[Any, None, SessionPage]:
        return self.page(self._cursor).__await__()

    async def __aiter__(self) -> AsyncIterator[SessionInfo]:
        cursor = self._cursor
        while True:
            page = await self.page(cursor)
            for session in page.sessions:
                yield session
            if page.next_cursor is None:
                return
            cursor = page.next_cursor


class Client:
    """A gateway at `base_url`.

    `token` is a bearer token, or an async callable returning one; the callable is called for
    the first request and again whenever the gateway says the token expired or was refused.
    Backoff between attempts starts at `backoff_initial` seconds and doubles up to
    `backoff_max`; live sockets ping every `ping_interval` seconds and count as dead after
    `ping_timeout` more without an answer. Other keyword arguments go to `httpx.AsyncClient`.
    """

    def __init__(
        self,
        base_url: str,
        token: TokenSource = None,
        *,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        ping_interval: float = 10.0,
        ping_timeout: float = 10.0,
        **httpx_options: Any,
    ):
        self._transport = Transport(
            base_url,
            token,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            httpx_options=httpx_options,
        )

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._transport.aclose()

    def session(self, id: str) -> Session:
        """A handle on an existing session; sends nothing."""
        return Session(self._transport, id)

    async def create_session(
        self,
        id: str | None = None,
        title: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> SessionInfo:
        """Creates a session. Give an `id` to make this safe to retry: without one, an attempt
        whose answer was lost may have created a session that a retry does not find."""
        body = {"id": id, "title": title, "metadata": dict(metadata) if metadata else None}
        body = {key: value for key, value in body.items() if value is not None}
        try:
            reply = await self._transport.request("POST", "/v1/sessions", body=body)
        except SessionExists as exists:
            # The docs' rule: a retry answered `session_exists` means the first attempt landed.
            if exists.retried and id is not None:
                return await self.session(id).get()
            raise
        return decode(SessionInfo, reply)

    def list_sessions(
        self,
        *,
        archived: bool | Literal["all"] = False,
        metadata: Mapping[str, str] | None = None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> SessionListing:
        """Sessions sorted by id, after `cursor`, whose metadata holds every `metadata` pair."""
        params: list[tuple[str, Any]] = [
            ("archived", archived if archived == "all" else str(bool(archived)).lower())
        ]
        params += [(f"metadata[{key}]", value) for key, value in (metadata or {}).items()]
        if limit is not None:
            params.append(("limit", limit))
        return SessionListing(self._transport, params, cursor)

    async def lifecycle(self, cursor: int = 0) -> AsyncIterator[LifecycleEntry]:
        """Every header change after `cursor`, then each new one, forever; reconnects from the
        last cursor yielded."""
        last = cursor

        def params() -> dict[str, Any]:
            return {"cursor": last}

        async for frame in _live.frames(self._transport, "/v1/lifecycle", params):
            entry = LifecycleEntry(
                cursor=frame["cursor"], event=decode(LifecycleEvent, frame["event"])
            )
            if entry.cursor > last:
                last = entry.cursor
                yield entry
