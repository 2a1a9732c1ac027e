"""Request body limits, enforced before the body is read.

A pure ASGI middleware: a declared `Content-Length` over the route's limit is answered
413 at once (nothing is read, no `100 Continue` is sent); a body without one (chunked) is
counted as it streams in through `receive`, and the request is answered 413 as soon as it
passes the limit, whatever the app was doing with it. The 413 closes the connection, so
the rest of the body is never read."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mall.errors import MallError


@dataclass(frozen=True)
class Limit:
    max_bytes: int
    # the refusal (localized when it is rendered); a route may keep its own code
    error: Callable[[], MallError]


LimitFor = Callable[[str], Limit]


class BodyTooLarge(Exception):
    """Raised from `receive` once the body passed the limit; the middleware answers 413."""


class BodyLimit:
    """Wraps `receive` with a byte count; `limit_for(path)` picks the limit per request
    (called each time, so a changed setting applies at once)."""

    def __init__(self, app: ASGIApp, limit_for: LimitFor) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
            elif name == b"transfer-encoding":
                chunked = True
        if not chunked and declared in (None, b"0"):
            # no body (HTTP/1.1 framing, which uvicorn enforces): the common GET and bare
            # POST pay nothing more here
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        if declared is not None and declared.isdigit() and int(declared) > limit.max_bytes:
            await _refuse(send, limit)
            return

        received = 0
        exceeded = started = False

        async def counted_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise BodyTooLarge
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit.max_bytes:
                    exceeded = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded and not started:
                return  # whatever the app made of the error, the answer is our 413
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except BodyTooLarge:
            pass
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await _refuse(send, limit)


async def _refuse(send: Send, limit: Limit) -> None:
    body = json.dumps(limit.error().body(), ensure_ascii=False).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),  # the unread rest of the body is not worth reading
    ]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
