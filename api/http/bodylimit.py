"""Request body limits: a pure ASGI middleware that answers 413 for a body over its path's limit."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

MIB = 1024 * 1024
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_BODY_LIMIT = 1 * MIB
DEFAULT_BODY_LIMITS = {"/v1/ingest": 16 * MIB}


class _BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """Pure ASGI middleware: 413 for a request body over its path's limit, whether the client
    declares it (Content-Length, refused before the app runs) or streams it (counted as it
    arrives; the app's answer, if any, is replaced by the 413)."""

    def __init__(self, app: ASGIApp, default_limit: int = DEFAULT_BODY_LIMIT,
                 limits: Mapping[str, int] | None = None) -> None:
        self.app, self.default_limit = app, default_limit
        self.limits = dict(DEFAULT_BODY_LIMITS if limits is None else limits)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.get(scope["path"], self.default_limit)
        declared = [value for name, value in scope.get("headers", []) if name.lower() == b"content-length"]
        if declared:
            try:
                length = int(declared[0])
                if length < 0 or len(set(declared)) > 1:
                    raise ValueError
            except ValueError:
                await _answer(send, 400, f"Content-Length {b', '.join(declared).decode('latin-1')!r}: expected one number of bytes")
                return
            if length > limit:
                await _answer(send, 413, f"request body of {length} bytes exceeds the limit of {limit} bytes")
                return

        received, exceeded, app_started = 0, False, False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal app_started
            if exceeded and not app_started:
                return  # the app's answer to a truncated body; the 413 below replaces it
            if message["type"] == "http.response.start":
                app_started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not exceeded or app_started:
                raise
        if exceeded and not app_started:
            await _answer(send, 413, f"request body of at least {received} bytes exceeds the limit of {limit} bytes")


async def _answer(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"connection", b"close"),
    ]})
    await send({"type": "http.response.body", "body": body})
