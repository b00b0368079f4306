"""Caps on request bodies, enforced while they stream in (an ASGI middleware): their size and how long they take."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

# The ASGI types, spelled as starlette.types spells them (this module does not need starlette).
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyTooLarge(Exception):
    """Raised from `receive` once a request body passes the limit; the app answers 413."""


class BodyTimeout(Exception):
    """Raised from `receive` once a request body has not arrived in full in time; the app answers 408."""


async def send_error(send: Send, status: int, code: str, message: str) -> None:
    """Answer from a middleware, before the application: the JSON error of every endpoint, and the connection is
    closed (whatever the client still sends is not read)."""
    body = json.dumps({"error": code, "message": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": [*headers, (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class BodyLimits:
    """Refuse request bodies over `max_bytes`: at once when Content-Length says so, else as soon as the streamed
    body passes the limit (chunked uploads have no Content-Length). Nothing beyond the limit is buffered.

    A body must also arrive in full within `timeout_s` of the request's start: a client that stops sending (or
    trickles a byte now and then) would otherwise hold a connection and a request slot for as long as it likes.
    Only the body is timed; once it is complete, `receive` waits freely (for the client's disconnect)."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            limit = f"the request body has {int(declared):,} bytes; the limit is {self.max_bytes:,}"
            await send_error(send, 413, "body_too_large", limit)
            return
        deadline = time.monotonic() + self.timeout_s
        received, complete = 0, False

        async def limited_receive() -> Message:
            nonlocal received, complete
            if complete:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise BodyTimeout(
                    f"the request body did not arrive in full within {self.timeout_s:g} s ({received:,} bytes came)"
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > self.max_bytes:
                    raise BodyTooLarge(f"the request body passes {self.max_bytes:,} bytes (the limit)")
            return message

        await self.app(scope, limited_receive, send)
