"""One gateway as the SDK reaches it: HTTP requests and WebSocket handshakes that carry the
token, refresh it once on a 401, and wait out what retrying fixes (network errors, 503, 429 with
its `Retry-After`) with exponential backoff and jitter, until they succeed or the caller cancels.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus

from .errors import error_from

TokenSource = str | Callable[[], Awaitable[str]] | None

# Statuses whose request is safe to send again and likely to succeed later.
RETRYABLE_STATUSES = (429, 503)

# Errors of a connection that can be tried again: refused, reset, timed out, or a handshake
# that broke off.
NETWORK_ERRORS = (OSError, asyncio.TimeoutError, websockets.exceptions.WebSocketException)


# The gateway closes a live socket with 4001 when the token it was opened with expires.
TOKEN_EXPIRED = 4001

NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class Backoff:
    """Delays that double from `initial` up to `maximum`, each drawn from its upper half so
    that many clients cut off together do not come back together."""

    def __init__(self, initial: float, maximum: float):
        self.initial = initial
        self.maximum = maximum
        self.attempts = 0

    def next_delay(self, at_least: float = 0.0) -> float:
        ceiling = min(self.maximum, self.initial * 2**self.attempts)
        self.attempts += 1
        return max(at_least, random.uniform(ceiling / 2, ceiling))

    def reset(self) -> None:
        self.attempts = 0


class Transport:
    def __init__(
        self,
        base_url: str,
        token: TokenSource,
        *,
        backoff_initial: float,
        backoff_max: float,
        ping_interval: float,
        ping_timeout: float,
        httpx_options: dict[str, Any],
    ):
        self.base_url = base_url.rstrip("/")
        self._token_source = token
        self._token: str | None = token if isinstance(token, str) else None
        self._backoff = (backoff_initial, backoff_max)
        self._ping = (ping_interval, ping_timeout)
        httpx_options.setdefault("timeout", httpx.Timeout(30.0, connect=5.0))
        self.http = httpx.AsyncClient(base_url=self.base_url, **httpx_options)

    def backoff(self) -> Backoff:
        return Backoff(*self._backoff)

    async def token(self) -> str | None:
        if self._token is None and callable(self._token_source):
            self._token = await self._token_source()
        return self._token

    async def refresh_token(self) -> bool:
        """Asks the caller's callback for a new token; False when there is no callback."""
        if not callable(self._token_source):
            return False
        self._token = await self._token_source()
        return True

    async def _auth_headers(self) -> dict[str, str]:
        token = await self.token()
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Any = None,
        body: Any = None,
        timeout: float | None = None,
    ) -> Any:
        """The decoded JSON reply of a 2xx; a refusal raises its typed error, with `retried`
        set when an earlier attempt may have taken effect."""
        backoff = self.backoff()
        refreshed = False
        maybe_applied = False
        while True:
            try:
                response = await self.http.request(
                    method,
                    path,
                    params=params,
                    json=body,
                    headers=await self._auth_headers(),
                    timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout,
                )
            except httpx.TransportError as err:
                # A request that never reached a connection cannot have been applied.
                maybe_applied = maybe_applied or not isinstance(err, NOT_SENT)
                await asyncio.sleep(backoff.next_delay())
                continue
            if response.is_success:
                return response.json() if response.content else None
            if response.status_code in RETRYABLE_STATUSES:
                maybe_applied = maybe_applied or response.status_code == 503
                await asyncio.sleep(backoff.next_delay(retry_after(response.headers)))
                continue
            if response.status_code == 401 and not refreshed and await self.refresh_token():
                refreshed = True
                continue
            refusal = error_from(response.status_code, _json_or_none(response))
            refusal.retried = maybe_applied
            raise refusal

    async def connect(self, path: str, params: dict[str, Any]) -> ClientConnection:
        """An open WebSocket to `path`, after as many attempts as it takes; a refusal that
        retrying cannot fix raises its typed error."""
        backoff = self.backoff()
        refreshed = False
        url = self.base_url.replace("http", "ws", 1) + path + "?" + urlencode(params)
        while True:
            try:
                return await websockets.connect(
                    url,
                    additional_headers=await self._auth_headers(),
                    ping_interval=self._ping[0],
                    ping_timeout=self._ping[1],
                    max_size=None,
                    open_timeout=10,
                    close_timeout=2,
                )
            except InvalidStatus as rejected:
                status = rejected.response.status_code
                if status in RETRYABLE_STATUSES:
                    delay = retry_after(rejected.response.headers)
                    await asyncio.sleep(backoff.next_delay(delay))
                    continue
                if status == 401 and not refreshed and await self.refresh_token():
                    refreshed = True
                    continue
                raise error_from(status, _json_or_none(rejected.response)) from None
            except NETWORK_ERRORS:
                await asyncio.sleep(backoff.next_delay())

    async def closed(self, socket: ClientConnection) -> None:
        """Asks for a fresh token when `socket` was closed because its token expired; the
        caller's backoff still applies, so a source of stale tokens cannot make it spin."""
        if socket.close_code == TOKEN_EXPIRED:
            await self.refresh_token()

    async def aclose(self) -> None:
        await self.http.aclose()


def session_path(session_id: str, *rest: str) -> str:
    return "/".join(["/v1/sessions", quote(session_id, safe=""), *rest])


def retry_after(headers: Any) -> float:
    try:
        return float(headers.get("Retry-After") or 0)
    except ValueError:
        return 0.0


def _json_or_none(response: Any) -> Any:
    raw = response.content if isinstance(response, httpx.Response) else response.body
    try:
        return json.loads(raw or b"null")
    except ValueError:
        return None
