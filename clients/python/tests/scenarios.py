"""The SDK's scenarios, each run by an e2e test (tests/e2e/sdk/python.rs) against a real gateway
behind a proxy that the test cuts and restarts as this program reports its progress.

usage: scenarios.py <scenario> [arguments]; the gateway's URL is in STARCITE_URL. The program
prints `progress <n>` lines and, at the end, one `result <json>` line for the test to check.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import uuid
from typing import Any

import httpx

from starcite import (
    Client,
    Forbidden,
    Gap,
    SessionExists,
    StarciteError,
    TailEvent,
    Unauthorized,
)

URL = os.environ["STARCITE_URL"]
# A guard against a hung program, far above what any scenario needs.
DEADLINE_SECONDS = 300
IN_FLIGHT = 64


def progress(count: int) -> None:
    print(f"progress {count}", flush=True)


def result(value: Any) -> None:
    print(f"result {json.dumps(value)}", flush=True)


async def append_all(
    producer, payloads: list[dict[str, Any]], actor: str, on_ack=None
) -> list[dict[str, int]]:
    """Appends each payload, `IN_FLIGHT` at a time, and lists each call's ack in call order."""
    acks: list[dict[str, int]] = [{} for _ in payloads]
    slots = asyncio.Semaphore(IN_FLIGHT)
    done = 0

    async def one(index: int) -> None:
        nonlocal done
        async with slots:
            ack = await producer.append("message", payloads[index], actor=actor)
        acks[index] = {"seq": ack.seq, "producer_seq": ack.producer_seq}
        done += 1
        if on_ack:
            on_ack(done, acks)

    # Appends are called in index order: each task calls `append` as soon as it gets a slot,
    # and the semaphore hands slots out first come, first served.
    await asyncio.gather(*(one(index) for index in range(len(payloads))))
    return acks


async def chaos(count: int) -> None:
    """A tail and `count` pipelined appends, while the test cuts and freezes links and
    restarts the gateway; reports every call's ack in call order and every seq the tail
    yielded."""
    # Pings every second, so that a frozen link is given up within two.
    async with Client(URL, backoff_max=1.0, ping_interval=1.0, ping_timeout=1.0) as client:
        info = await client.create_session(id=f"chaos-{uuid.uuid4().hex}")
        session = client.session(info.id)
        tailed: list[Any] = []

        async def tail() -> None:
            async for item in session.tail(cursor=0, batch_size=50):
                tailed.append({"gap": item.reason} if isinstance(item, Gap) else item.seq)
                if len(tailed) >= count:
                    return

        tailing = asyncio.create_task(tail())
        producer = session.producer("chaos")
        payloads = [{"n": n} for n in range(count)]
        acks = await append_all(
            producer, payloads, "agent:chaos", lambda done, _: done % 10 == 0 and progress(done)
        )
        await producer.close()
        await tailing
        result({"session": info.id, "acks": acks, "tail": tailed})


async def durable(session_id: str, state: str, label: str, count: int, crash_after: int) -> None:
    """Appends `count` events through a producer whose state is the file `state`; with
    `crash_after`, the process dies as soon as that many are acknowledged, others in flight."""
    async with Client(URL) as client:
        with contextlib.suppress(SessionExists):
            await client.create_session(id=session_id)
        producer = client.session(session_id).producer("durable", state=state)

        def on_ack(done: int, acks: list[dict[str, int]]) -> None:
            if crash_after and done >= crash_after:
                result({"acks": acks})
                os._exit(0)

        payloads = [{"run": label, "n": n} for n in range(count)]
        acks = await append_all(producer, payloads, "agent:durable", on_ack)
        await producer.close()
        result({"acks": acks})


async def refusals() -> None:
    """Each refusal raises its typed error, and a refused append fails only its own call."""
    seen: dict[str, str] = {}

    async def expect(name: str, call) -> None:
        try:
            await call
        except StarciteError as err:
            seen[name] = f"{type(err).__name__}:{err.code}:{err.status}"
        else:
            seen[name] = "no error"

    async with Client(URL) as client:
        info = await client.create_session(id=f"refusals-{uuid.uuid4().hex}", title="t")
        session = client.session(info.id)
        producer = session.producer("writer")
        await expect("missing_session", client.session("no-such-session").get())
        await expect(
            "append_to_missing_session",
            client.session("no-such-session").producer("p").append("m", {}, actor="agent:a"),
        )
        await expect("session_exists", client.create_session(id=info.id))
        await expect("invalid_limit", client.list_sessions(limit=0))
        await expect("expected_version", session.patch(title="x", expected_version=7))

        # Five appends in flight, the second one invalid: only it fails, and the others are
        # stored with consecutive producer seqs.
        calls = [
            producer.append(
                "message", {"n": n} if n != 1 else ["not", "an", "object"], actor="agent:a"
            )
            for n in range(5)
        ]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        pipelined = [
            f"{type(o).__name__}:{o.code}" if isinstance(o, StarciteError) else o.producer_seq
            for o in outcomes
        ]
        await expect(
            "expected_seq",
            producer.append("message", {"late": True}, actor="agent:a", expected_seq=0),
        )

        # Another writer takes the producer's next number: the SDK must not take its event for
        # ours.
        async with httpx.AsyncClient(base_url=URL) as raw:
            latest = (
                await producer.append("message", {"before": True}, actor="agent:a")
            ).producer_seq
            foreign = {
                "type": "message",
                "payload": {"foreign": True},
                "actor": "agent:other",
                "producer_id": "writer",
                "producer_seq": latest + 1,
            }
            reply = await raw.post(f"/v1/sessions/{info.id}/append", json=foreign)
            reply.raise_for_status()
        await expect("producer_seq", producer.append("message", {"mine": True}, actor="agent:a"))
        after = await producer.append("message", {"after": True}, actor="agent:a")
        await producer.close()
        result(
            {
                "session": info.id,
                "errors": seen,
                "pipelined": pipelined,
                "after_conflict": {"seq": after.seq, "producer_seq": after.producer_seq},
            }
        )


async def catalog() -> None:
    """Headers, pages, gaps and the lifecycle feed, typed; the feed resumes after the test cuts
    its link (at progress 2)."""
    async with Client(URL, backoff_max=1.0) as client:
        tag = uuid.uuid4().hex
        ids = [f"catalog-{tag}-{n}" for n in range(3)]
        for id in ids:
            await client.create_session(id=id, title=id, metadata={"tag": tag})
        session = client.session(ids[0])
        producer = session.producer("writer")
        await producer.append_batch(
            [{"type": "message", "payload": {"n": n}, "actor": "agent:a"} for n in range(3)]
        )
        await producer.close()
        page = await session.events(cursor=1, limit=1)
        listed = [info.id async for info in client.list_sessions(metadata={"tag": tag}, limit=2)]
        first_page = await client.list_sessions(metadata={"tag": tag}, limit=2)

        # A cursor past the head is told, then the next event follows.
        tail = session.tail(cursor=10)
        gap = await anext(tail)
        await session.producer("late").append("message", {"late": True}, actor="agent:a")
        after_gap = await anext(tail)
        await tail.aclose()

        feed_changes: list[dict[str, Any]] = []
        changes = 0

        async def follow() -> None:
            nonlocal changes
            async for entry in client.lifecycle():
                if entry.event.session_id == ids[1]:
                    feed_changes.append({"cursor": entry.cursor, "kind": entry.event.kind})
                    progress(len(feed_changes))
                    if len(feed_changes) == 4:
                        return

        following = asyncio.create_task(follow())
        patched = await client.session(ids[1]).patch(title="renamed", expected_version=1)
        while len(feed_changes) < 2:
            await asyncio.sleep(0.05)
        # The test cuts the link now; the feed must go on from its cursor.
        archived = await client.session(ids[1]).archive()
        unarchived = await client.session(ids[1]).unarchive()
        await following
        result(
            {
                "page": {
                    "seqs": [event.seq for event in page.events],
                    "next_cursor": page.next_cursor,
                    "last_seq": page.last_seq,
                },
                "listed": listed,
                "first_page": {
                    "ids": [info.id for info in first_page.sessions],
                    "next_cursor": first_page.next_cursor,
                },
                "gap": {
                    "is_gap": isinstance(gap, Gap),
                    "reason": getattr(gap, "reason", None),
                    "next_cursor": getattr(gap, "next_cursor", None),
                },
                "after_gap": {
                    "is_event": isinstance(after_gap, TailEvent),
                    "seq": getattr(after_gap, "seq", None),
                },
                "patched": {"title": patched.title, "version": patched.version},
                "archived": [archived.archived, unarchived.archived],
                "feed": feed_changes,
            }
        )


async def tokens(token_url: str) -> None:
    """Tokens from the test's minting endpoint, valid for a few seconds: a tail and a producer
    outlive several of them; a refused token and a too narrow scope raise typed errors."""
    minted = 0

    async def fresh_token(**params: str) -> str:
        nonlocal minted
        minted += 1
        async with httpx.AsyncClient() as http:
            reply = await http.get(token_url, params=params)
            reply.raise_for_status()
            return reply.text

    seen: dict[str, str] = {}
    async with Client(URL, token="not-a-jwt") as refused:
        try:
            await refused.list_sessions()
        except Unauthorized as err:
            seen["unauthorized"] = err.code

    async def read_only() -> str:
        return await fresh_token(scope="session:read")

    async with Client(URL, token=read_only) as reader:
        try:
            await reader.create_session()
        except Forbidden as err:
            seen["forbidden"] = err.code

    async with Client(URL, token=fresh_token) as client:
        info = await client.create_session(id=f"tokens-{uuid.uuid4().hex}")
        session = client.session(info.id)
        producer = session.producer("writer")
        tailed: list[int] = []
        rounds = 3

        async def tail() -> None:
            async for item in session.tail():
                tailed.append(item.seq)
                progress(len(tailed))
                if len(tailed) == rounds:
                    return

        tailing = asyncio.create_task(tail())
        for n in range(rounds):
            await producer.append("message", {"n": n})
            # Longer than a token lives: the tail's socket is closed with 4001 meanwhile and
            # the next HTTP request is refused with 401, both answered by a fresh token.
            await asyncio.sleep(4)
        await tailing
        await producer.close()
        result({"errors": seen, "tail": tailed, "tokens_minted": minted})


def main() -> None:
    scenario, args = sys.argv[1], sys.argv[2:]
    scenarios = {
        "chaos": lambda: chaos(int(args[0])),
        "durable": lambda: durable(args[0], args[1], args[2], int(args[3]), int(args[4])),
        "refusals": refusals,
        "catalog": catalog,
        "tokens": lambda: tokens(args[0]),
    }
    asyncio.run(asyncio.wait_for(scenarios[scenario](), DEADLINE_SECONDS))


main()
