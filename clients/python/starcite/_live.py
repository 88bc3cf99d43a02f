"""A live stream (a tail or the lifecycle feed) that never ends by itself: each drop, close or
missed ping is followed by a new connection from where the reader stands.

A dead connection is noticed by the websockets library's keepalive: it pings every
`ping_interval` seconds and closes the connection when no pong comes within `ping_timeout`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from websockets.exceptions import ConnectionClosed

from ._transport import Transport


async def frames(
    transport: Transport, path: str, params: Callable[[], dict[str, Any]]
) -> AsyncIterator[Any]:
    """Every JSON text frame of the stream at `path`, reconnecting with `params()` (which
    names the reader's cursor) after each end."""
    backoff = transport.backoff()
    while True:
        socket = await transport.connect(path, params())
        try:
            async for message in socket:
                backoff.reset()
                yield json.loads(message)
        except ConnectionClosed:
            pass
        finally:
            await socket.close()
        await transport.closed(socket)
        await asyncio.sleep(backoff.next_delay())
