"""A producer: one writer's appends to one session, numbered and recovered by the SDK.

Every append goes over the session's producer socket (`/produce`), so appends made without
waiting for each other are pipelined; one at a time costs one round trip each, as over HTTP.
The socket's `ready` frame says which `producer_seq` the gateway stored last for this producer,
which is all the SDK needs to recover after any drop:

- requests numbered at or below it were stored but not answered: their seqs are read back from
  `GET /events` (and their content compared, so another writer's event is never taken for
  ours);
- requests above it were not stored: they are numbered again from it and sent again.

A refused request (a typed error) frees its number: the requests already sent behind it are
refused by the gateway for their now wrong `producer_seq`, so the SDK skips those answers and
sends the requests again on the same socket, numbered from the refused one's. A refusal
therefore fails only its own call. A request refused for the append rate (429) is sent again the
same way, with those behind it, after the `retry_after` the gateway gave; other retryable
refusals (500, 503) may leave the outcome unknown, so the SDK reconnects and reads `ready`.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from ._transport import Backoff, Transport, session_path
from .errors import ProducerSeqConflict, error_from, status_of

# Refusals that resending fixes: the gateway was overloaded, unavailable or failed midway.
_RETRYABLE = (429, 500, 503)
_PRODUCER_CONFLICTS = ("producer_seq_conflict", "producer_replay_conflict")
# The fields of a request that the stored event keeps as sent, to recognise our own event.
_COMPARED = ("type", "payload", "actor", "source", "metadata", "idempotency_key")


@dataclass(frozen=True)
class Ack:
    """Where one appended event was stored."""

    seq: int
    producer_seq: int
    # The session's newest seq when the append was answered.
    last_seq: int
    # True when an earlier attempt had stored the event: the gateway deduplicated a retry, or
    # the SDK read the event back after the answer was lost.
    deduped: bool


class _Request:
    """One `append` or `append_batch` call, waiting for its answer."""

    def __init__(self, events: list[dict[str, Any]], batch: bool):
        self.events = events
        self.batch = batch
        self.future: asyncio.Future[list[Ack]] = asyncio.get_running_loop().create_future()
        # Assigned when sent, and again when a reconnect finds it was not stored.
        self.first_seq: int | None = None
        # Producer seq refusals of this request; the second is the caller's to see.
        self.conflicts = 0

    @property
    def last_seq(self) -> int:
        assert self.first_seq is not None
        return self.first_seq + len(self.events) - 1

    def frame(self, producer_id: str) -> str:
        assert self.first_seq is not None
        bodies = [
            {**event, "producer_id": producer_id, "producer_seq": self.first_seq + offset}
            for offset, event in enumerate(self.events)
        ]
        return json.dumps(bodies if self.batch else bodies[0])

    def resolve(self, acks: list[Ack]) -> None:
        if not self.future.done():
            self.future.set_result(acks)

    def fail(self, err: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(err)


class _SavedProducerSeq:
    """The producer's latest stored `producer_seq`, kept in a JSON file so that a restarted
    program goes on numbering where it stopped, even when the gateway has forgotten the
    producer. Only acknowledged numbers are saved, so the file is never ahead of the gateway.
    The file holds one producer of one session."""

    def __init__(self, path: str | os.PathLike[str], session_id: str, producer_id: str):
        self.path = Path(path)
        self.owner = {"session_id": session_id, "producer_id": producer_id}
        self.producer_seq = 0
        if self.path.exists():
            saved = json.loads(self.path.read_text())
            # Another session's or producer's count means nothing here: this one starts over.
            if {key: saved.get(key) for key in self.owner} == self.owner:
                self.producer_seq = int(saved.get("producer_seq") or 0)

    def save(self, producer_seq: int) -> None:
        self.producer_seq = producer_seq
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text(json.dumps({**self.owner, "producer_seq": producer_seq}))
        partial.replace(self.path)


class Producer:
    """Appends as `producer_id` to one session; see the module's docs for how it recovers."""

    def __init__(
        self,
        transport: Transport,
        session_id: str,
        producer_id: str,
        state: str | os.PathLike[str] | None = None,
    ):
        self._transport = transport
        self.session_id = session_id
        self.producer_id = producer_id
        self._saved = _SavedProducerSeq(state, session_id, producer_id) if state else None
        # Unanswered calls in call order; the first `_sent` were sent on the current socket.
        self._requests: list[_Request] = []
        self._sent = 0
        # Answers still to come on this socket for requests that are to be sent again.
        self._stale_replies = 0
        # When sending may go on after a rate limit (event loop time).
        self._resume_at = 0.0
        self._next_seq: int | None = None
        # The producer's latest stored `(producer_seq, seq)` that this object knows of.
        self._stored = (0, 0)
        self._work = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def append(
        self,
        type: str,
        payload: Mapping[str, Any],
        actor: str | None = None,
        *,
        source: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        refs: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        expected_seq: int | None = None,
    ) -> Ack:
        """Appends one event and answers where it was stored, once it is."""
        event = {
            "type": type,
            "payload": payload,
            "actor": actor,
            "source": source,
            "metadata": metadata,
            "refs": refs,
            "idempotency_key": idempotency_key,
            "expected_seq": expected_seq,
        }
        (ack,) = await self._submit([event], batch=False)
        return ack

    async def append_batch(self, events: Iterable[Mapping[str, Any]]) -> list[Ack]:
        """Appends events all or none (each a dict of `append`'s arguments), in one request."""
        return await self._submit([dict(event) for event in events], batch=True)

    async def close(self) -> None:
        """Waits for every call made so far to be answered, then closes the socket."""
        while self._requests:
            pending = [request.future for request in self._requests]
            await asyncio.gather(*pending, return_exceptions=True)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def __aenter__(self) -> Producer:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def _submit(self, events: list[dict[str, Any]], batch: bool) -> list[Ack]:
        # Serialised now, so that a value JSON cannot hold fails this call and nothing else.
        events = json.loads(json.dumps([_without_nulls(event) for event in events]))
        request = _Request(events, batch)
        self._requests.append(request)
        self._work.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        return await request.future

    async def _run(self) -> None:
        path = session_path(self.session_id, "produce")
        backoff = self._transport.backoff()
        try:
            while True:
                socket = await self._transport.connect(path, {"producer_id": self.producer_id})
                try:
                    await self._reconcile(json.loads(await socket.recv()))
                    delay = await self._exchange(socket, backoff)
                except ConnectionClosed:
                    delay = backoff.next_delay()
                finally:
                    await socket.close()
                await self._transport.closed(socket)
                await asyncio.sleep(delay)
        except Exception as err:
            # Nothing more can be sent (the session is gone, the token refused): every waiting
            # call learns why, and the next call starts over.
            for request in self._requests:
                request.fail(err)
            self._requests.clear()
            self._sent = 0

    async def _reconcile(self, ready: dict[str, Any]) -> None:
        """Takes the `ready` frame's word for what is stored: resolves the stored requests and
        numbers the others after it, to be sent on this socket."""
        latest, latest_seq = ready.get("producer_seq"), ready.get("seq") or 0
        if self._next_seq is None:
            saved = self._saved.producer_seq if self._saved else 0
            base = latest if latest is not None else saved
            self._stored = (base, latest_seq)
        else:
            # A producer the gateway forgot is new to it: our own count goes on.
            base = latest if latest is not None else self._stored[0]
        self._sent = 0
        self._stale_replies = 0
        stored = []
        for request in self._requests:
            if request.first_seq is not None and request.last_seq <= base:
                stored.append(request)
            else:
                request.first_seq = None
        if stored:
            await self._read_back(stored, latest_seq)
            del self._requests[: len(stored)]
        self._next_seq = base + 1
        self._work.set()

    async def _read_back(self, stored: list[_Request], latest_seq: int) -> None:
        """Resolves requests the gateway stored without answering, from the session's events
        between the last seq we know of and the `ready` frame's."""
        wanted = {
            request.first_seq + offset: event
            for request in stored
            for offset, event in enumerate(request.events)
            if request.first_seq is not None
        }
        found: dict[int, dict[str, Any]] = {}
        cursor = self._stored[1]
        path = session_path(self.session_id, "events")
        while len(found) < len(wanted) and cursor < latest_seq:
            page = await self._transport.request(
                "GET", path, params={"cursor": cursor, "limit": 1000}
            )
            for event in page["events"]:
                if event["producer_id"] == self.producer_id and event["producer_seq"] in wanted:
                    found[event["producer_seq"]] = event
            if page["next_cursor"] <= cursor:
                break
            cursor = page["next_cursor"]
        for request in stored:
            assert request.first_seq is not None
            numbers = range(request.first_seq, request.last_seq + 1)
            events = [found.get(number) for number in numbers]
            if all(
                event is not None and _same(wanted[event["producer_seq"]], event)
                for event in events
            ):
                request.resolve(
                    [
                        Ack(event["seq"], event["producer_seq"], latest_seq, True)
                        for event in events
                        if event
                    ]
                )
                self._acknowledged(request.last_seq, max(event["seq"] for event in events if event))
            else:
                request.fail(
                    ProducerSeqConflict(
                        "producer_seq_conflict",
                        409,
                        f"producer {self.producer_id!r} seq {request.first_seq} was stored by "
                        "another writer, or is no longer readable",
                    )
                )

    async def _exchange(self, socket: ClientConnection, backoff: Backoff) -> float:
        """Sends and answers requests until the socket ends or needs replacing; returns how
        long to wait before the next socket."""
        sending = asyncio.create_task(self._send(socket))
        try:
            return await self._receive(socket, backoff)
        finally:
            sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)

    async def _send(self, socket: ClientConnection) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while self._sent < len(self._requests):
                if (pause := self._resume_at - loop.time()) > 0:
                    await asyncio.sleep(pause)
                    continue
                request = self._requests[self._sent]
                if request.first_seq is None:
                    assert self._next_seq is not None
                    request.first_seq = self._next_seq
                    self._next_seq += len(request.events)
                self._sent += 1
                await socket.send(request.frame(self.producer_id))
            self._work.clear()
            await self._work.wait()

    async def _receive(self, socket: ClientConnection, backoff: Backoff) -> float:
        async for message in socket:
            if self._stale_replies:
                self._stale_replies -= 1
                continue
            if not self._sent:
                continue
            reply = json.loads(message)
            request = self._requests[0]
            if "error" not in reply:
                backoff.reset()
                self._answer(request, reply)
                continue
            assert request.first_seq is not None
            code = str(reply["error"])
            status = status_of(code)
            retry_after = float(reply.get("retry_after") or 0)
            if code == "rate_limited":
                # Nothing was stored: send it and those behind it again once the rate allows.
                pause = backoff.next_delay(retry_after)
                self._send_again(request.first_seq, self._sent - 1, pause)
                continue
            if status in _RETRYABLE:
                # The outcome may be unknown (`nats_timeout`): a new `ready` frame tells.
                return backoff.next_delay(retry_after)
            if code in _PRODUCER_CONFLICTS:
                request.conflicts += 1
                if request.conflicts == 1:
                    # Perhaps stored through a socket the gateway had not yet seen drop: a new
                    # `ready` frame tells.
                    return 0.0
            self._requests.pop(0)
            self._sent -= 1
            request.fail(error_from(status, reply))
            self._send_again(request.first_seq, self._sent)
        return backoff.next_delay()

    def _send_again(self, first_seq: int, unanswered: int, pause: float = 0.0) -> None:
        """Numbers the requests sent on this socket and not yet stored again from `first_seq`,
        and sends them again after `pause` seconds. The `unanswered` of them still to be answered
        are refused by the gateway (the `producer_seq` before theirs was not stored), so their
        answers are skipped."""
        self._stale_replies += unanswered
        for request in self._requests[: self._sent]:
            request.first_seq = None
        self._sent = 0
        self._next_seq = first_seq
        self._resume_at = asyncio.get_running_loop().time() + pause
        self._work.set()

    def _answer(self, request: _Request, reply: dict[str, Any]) -> None:
        self._requests.pop(0)
        self._sent -= 1
        replies = reply["events"] if request.batch else [reply]
        acks = [
            Ack(answer["seq"], answer["producer_seq"], answer["last_seq"], answer["deduped"])
            for answer in replies
        ]
        self._acknowledged(acks[-1].producer_seq, acks[-1].seq)
        request.resolve(acks)

    def _acknowledged(self, producer_seq: int, seq: int) -> None:
        self._stored = (producer_seq, max(seq, self._stored[1]))
        if self._saved is not None:
            self._saved.save(producer_seq)


def _without_nulls(event: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in event.items() if value is not None}


def _same(sent: dict[str, Any], stored: dict[str, Any]) -> bool:
    return all(sent[key] == stored.get(key) for key in _COMPARED if key in sent)
