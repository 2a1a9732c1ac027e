"""Raw ASGI fast paths for the hottest routes (a flash-sale attempt, a points-mall
redeem; later a draw): answered before FastAPI's request machinery (dependency solving, exit stacks,
response validation), which costs more than the one Redis call such a route makes.

A fast route keeps the house's answers: the error envelope and 503s of mall.errors
(`render_error`), the bearer-token parser of mall.deps (`security.bearer_token`), and, set
as `scope["route"]`, its route template for the metrics label. The FastAPI route it stands
in for stays registered, for the OpenAPI schema and for what the fast path declines."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mall.errors import MallError, log_redis_down, render_error
from mall.kit import idempotency
from mall.kit.bounds import fits_bigint
from mall.redis import UNAVAILABLE as REDIS_UNAVAILABLE

# (path match, Authorization header, Idempotency-Key header, body) -> the answer's JSON;
# the body is b"" unless the route takes one
Handler = Callable[[re.Match[str], str | None, str | None, bytes], Awaitable[bytes]]


class Decline(Exception):
    """Raised by a handler for a request it leaves to FastAPI (e.g. a body that does not
    validate: the route's 422 says what is wrong). The body read is handed on as sent."""


_RENDERED: tuple[type[Exception], ...] = (MallError, *REDIS_UNAVAILABLE)


@dataclass(frozen=True, slots=True)
class FastRoute:
    method: str
    # the route template, as FastAPI's route has it: the metrics label
    path: str
    pattern: re.Pattern[str]
    handler: Handler
    # a match the handler declines goes on to FastAPI (e.g. for its 422)
    accepts: Callable[[re.Match[str]], bool] | None = None
    # the answer's status (as the FastAPI route declares it)
    status: int = 200
    # the handler reads a (small, JSON) body; a body of another content type is declined
    body: bool = False


def fits_id(found: re.Match[str]) -> bool:
    """`accepts` for a path whose first group is an id: one that is not a BIGINT goes to
    the route, whose validation answers 422."""
    return fits_bigint(int(found.group(1)))


def bearer_openapi(retry: str | None = None) -> dict[str, Any]:
    """`openapi_extra` of a route that reads its headers by hand (the twin of a fast
    route): the bearer token and, given what a retry returns, the Idempotency-Key."""
    extra: dict[str, Any] = {"security": [{"HTTPBearer": []}]}
    if retry is not None:
        extra["parameters"] = [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "maxLength": idempotency.MAX_KEY_LENGTH},
                "description": f"A retry with the same key returns {retry}.",
            }
        ]
    return extra


class FastPath:
    """Pure ASGI middleware: a request matching one of `routes` (method and path) is
    answered by its handler; everything else goes on to `app`. A body is read through
    the body limit (outside this middleware, so an oversized one still answers 413); a
    route that takes no body drops it, one that does gets it whole."""

    def __init__(self, app: ASGIApp, routes: Sequence[FastRoute]) -> None:
        self.app = app
        self.routes = tuple(routes)
        self.methods = frozenset(r.method for r in routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in self.methods:
            await self.app(scope, receive, send)
            return
        for route in self.routes:
            if route.method != scope["method"]:
                continue
            found = route.pattern.match(scope["path"])
            if found is not None and (route.accepts is None or route.accepts(found)):
                await self._answer(route, found, scope, receive, send, self.app)
                return
        await self.app(scope, receive, send)

    @staticmethod
    async def _answer(
        route: FastRoute,
        found: re.Match[str],
        scope: Scope,
        receive: Receive,
        send: Send,
        app: ASGIApp,
    ) -> None:
        authorization = key = None
        has_body = False
        json_body = True
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"idempotency-key":
                key = value.decode("latin-1")
            elif name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
                has_body = True
            elif name == b"content-type":
                json_body = b"json" in value.lower()
        sent = b""
        if has_body:
            chunks = []
            while True:
                message = await receive()
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
            sent = b"".join(chunks) if route.body else b""
        status = route.status
        headers = [(b"content-type", b"application/json")]
        try:
            if route.body and not json_body:
                raise Decline()
            scope["route"] = route
            body = await route.handler(found, authorization, key, sent)
        except Decline:
            scope.pop("route", None)
            await app(scope, _replay(sent, receive), send)
            return
        except _RENDERED as exc:
            if not isinstance(exc, MallError):
                log_redis_down(scope["path"], exc)
            status, extra, body = render_error(exc)
            if extra:
                headers += [(k.lower().encode(), v.encode()) for k, v in extra.items()]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _replay(body: bytes, then: Receive) -> Receive:
    """A `receive` that hands the body read once more, then the connection's own
    messages (the disconnect)."""
    messages: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> Message:
        if messages:
            return messages.pop()
        return await then()

    return receive
