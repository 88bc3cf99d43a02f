"""One session: its header, its producers and its readers."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

from . import _live
from ._decode import decode
from ._transport import Transport, session_path
from .errors import ExpectedVersionConflict
from .models import EventBody, EventPageBody, GapBody, SessionBody
from .producer import Producer

# The generated wire types, under the names the SDK speaks.
SessionInfo = SessionBody
TailEvent = EventBody
Gap = GapBody
EventPage = EventPageBody


class _Unchanged:
    """`patch`'s default title: leave it as it is (`None` clears it)."""

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Any = _Unchanged()


class Session:
    """A handle on session `id`; making one sends nothing."""

    def __init__(self, transport: Transport, id: str):
        self._transport = transport
        self.id = id

    def __repr__(self) -> str:
        return f"Session({self.id!r})"

    async def get(self) -> SessionInfo:
        return decode(SessionInfo, await self._transport.request("GET", session_path(self.id)))

    async def patch(
        self,
        *,
        title: str | None = UNCHANGED,
        metadata: Mapping[str, Any] | None = None,
        expected_version: int | None = None,
    ) -> SessionInfo:
        """Renames (`title=None` clears it) or merges `metadata` keys; with `expected_version`,
        only if the session is still at that version (else `ExpectedVersionConflict`)."""
        body: dict[str, Any] = {}
        if title is not UNCHANGED:
            body["title"] = title
        if metadata is not None:
            body["metadata"] = dict(metadata)
        if expected_version is not None:
            body["expected_version"] = expected_version
        try:
            reply = await self._transport.request("PATCH", session_path(self.id), body=body)
        except ExpectedVersionConflict as conflict:
            # A lost answer to an attempt that was applied looks like a conflict one version on.
            if (
                conflict.retried
                and expected_version is not None
                and conflict.current_version == expected_version + 1
            ):
                return await self.get()
            raise
        return decode(SessionInfo, reply)

    async def archive(self) -> SessionInfo:
        return await self._post("archive")

    async def unarchive(self) -> SessionInfo:
        return await self._post("unarchive")

    async def _post(self, action: str) -> SessionInfo:
        reply = await self._transport.request("POST", session_path(self.id, action))
        return decode(SessionInfo, reply)

    def producer(self, producer_id: str, state: str | os.PathLike[str] | None = None) -> Producer:
        """A writer named `producer_id`; with `state`, a file that keeps its count across
        restarts of the program."""
        return Producer(self._transport, self.id, producer_id, state)

    async def events(
        self, cursor: int = 0, limit: int | None = None, wait: float | None = None
    ) -> EventPage:
        """One page of events after `cursor`; with `wait`, a long poll of up to that many
        seconds for the next event."""
        params: dict[str, Any] = {"cursor": cursor}
        if limit is not None:
            params["limit"] = limit
        if wait is not None:
            params["wait"] = wait
        reply = await self._transport.request(
            "GET",
            session_path(self.id, "events"),
            params=params,
            timeout=None if wait is None else wait + 30.0,
        )
        return decode(EventPage, reply)

    async def tail(self, cursor: int = 0, batch_size: int = 100) -> AsyncIterator[TailEvent | Gap]:
        """Every event after `cursor` in seq order, each once, then each new one, forever; a
        `Gap` where events cannot be delivered. Reconnects from the last seq yielded.
        `batch_size` bounds how many events one frame carries (1 to 1,000)."""
        last = cursor

        def params() -> dict[str, Any]:
            return {"cursor": last, "batch_size": batch_size}

        path = session_path(self.id, "tail")
        async for frame in _live.frames(self._transport, path, params):
            for item in frame if isinstance(frame, list) else [frame]:
                if item.get("type") == "gap":
                    gap = decode(Gap, item)
                    last = gap.next_cursor
                    yield gap
                    continue
                event = decode(TailEvent, item)
                if event.seq > last:
                    last = event.seq
                    yield event
