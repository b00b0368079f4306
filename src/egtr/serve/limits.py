"""A cap on request bodies, enforced while they stream in (an ASGI middleware)."""

from __future__ import annotations

import json
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]


class BodyTooLarge(Exception):
    """Raised from `receive` once a request body passes the limit; the app answers 413."""


class BodySizeLimit:
    """Refuse request bodies over `max_bytes`: at once when Content-Length says so, else as soon as the streamed
    body passes the limit (chunked uploads have no Content-Length). Nothing beyond the limit is buffered."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send, f"the request body has {int(declared):,} bytes")
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(f"the request body passes {self.max_bytes:,} bytes (the limit)")
            return message

        await self.app(scope, limited_receive, send)

    async def _refuse(self, send: Any, what: str) -> None:
        body = json.dumps({"error": "body_too_large", "message": f"{what}; the limit is {self.max_bytes:,}"}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers + [(b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
