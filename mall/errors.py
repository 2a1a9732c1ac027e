"""One error base, rendered by one handler as `{"error": {"code", "message"}}`.

Codes are stable UPPER_SNAKE strings; every code is declared once with `ErrorCode`
so `/api/v1/errors` can list them and tests can check each has a translation."""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from mall.i18n import _, translate
from mall.redis import UNAVAILABLE as REDIS_UNAVAILABLE
from mall.validation import field_errors

log = logging.getLogger("mall.errors")

REGISTRY: dict[str, ErrorCode] = {}


@dataclass(frozen=True)
class ErrorCode:
    code: str
    status: int
    message: str

    def __post_init__(self) -> None:
        REGISTRY[self.code] = self

    def __call__(self, **params: Any) -> MallError:
        return MallError(self, **params)


class MallError(Exception):
    def __init__(
        self, error: ErrorCode, *, fields: list[dict[str, Any]] | None = None, **params: Any
    ):
        super().__init__(f"{error.code}: {error.message}")
        self.error = error
        self.params = params
        self.fields = fields

    @property
    def code(self) -> str:
        return self.error.code

    @property
    def status(self) -> int:
        return self.error.status

    def body(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "code": self.error.code,
            "message": translate(self.error.message, **self.params),
        }
        if self.fields:
            # fields made by hand carry an English sentence: translated here, like messages
            payload["fields"] = [
                {
                    "field": str(f.get("field", "")),
                    "message": translate(str(f.get("message", ""))),
                    "type": str(f.get("type") or "value_error"),
                }
                for f in self.fields
            ]
        extra = {k: v for k, v in self.params.items() if isinstance(v, (int, str, float, bool))}
        if extra:
            payload["details"] = extra
        return {"error": payload}


VALIDATION_ERROR = ErrorCode("VALIDATION_ERROR", 422, _("Some fields are invalid"))
NOT_FOUND = ErrorCode("NOT_FOUND", 404, _("Not found"))
METHOD_NOT_ALLOWED = ErrorCode("METHOD_NOT_ALLOWED", 405, _("Method not allowed"))
INTERNAL_ERROR = ErrorCode("INTERNAL_ERROR", 500, _("Something went wrong on our side"))
SERVICE_UNAVAILABLE = ErrorCode(
    "SERVICE_UNAVAILABLE", 503, _("The service is busy; please try again shortly")
)
UNAUTHORIZED = ErrorCode("UNAUTHORIZED", 401, _("Please log in"))
TOKEN_INVALID = ErrorCode("TOKEN_INVALID", 401, _("Your login is invalid; please log in again"))
TOKEN_EXPIRED = ErrorCode("TOKEN_EXPIRED", 401, _("Your login has expired; please log in again"))
FORBIDDEN = ErrorCode("FORBIDDEN", 403, _("You are not allowed to do this"))
RATE_LIMITED = ErrorCode("RATE_LIMITED", 429, _("Too many requests; please slow down"))
PAYLOAD_TOO_LARGE = ErrorCode(
    "PAYLOAD_TOO_LARGE", 413, _("The request body is too large; the limit is {max_kb} KB")
)
IDEMPOTENCY_IN_PROGRESS = ErrorCode(
    "IDEMPOTENCY_IN_PROGRESS", 409, _("The same request is still being processed")
)
IDEMPOTENCY_KEY_REUSED = ErrorCode(
    "IDEMPOTENCY_KEY_REUSED", 422, _("This Idempotency-Key was used for a different request")
)

BAD_REQUEST = ErrorCode("BAD_REQUEST", 400, _("The request body could not be read"))

_HTTP_CODES = {
    400: BAD_REQUEST,
    404: NOT_FOUND,
    405: METHOD_NOT_ALLOWED,
    401: UNAUTHORIZED,
    403: FORBIDDEN,
}


# The envelope as the OpenAPI document shows it (see mall.openapi); `MallError.body()` and
# the handlers below are what really produce it.
class FieldError(BaseModel):
    field: str = Field(description="where: `body.<name>`, `query.<name>`, `header.<name>` ...")
    message: str = Field(description="what is wrong, in the request's language")
    type: str = Field(description="a stable check name, e.g. `less_than_equal`, `missing`")


class ErrorBody(BaseModel):
    code: str = Field(description="a stable code, see `GET /api/v1/errors`")
    message: str = Field(description="for people, in the language of `Accept-Language`")
    fields: list[FieldError] = Field(
        default_factory=list, description="VALIDATION_ERROR: one entry per invalid field"
    )
    details: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="the values the message was made from"
    )
    request_id: str | None = Field(default=None, description="INTERNAL_ERROR: quote it")


class ErrorEnvelope(BaseModel):
    error: ErrorBody


def error_responses(*codes: ErrorCode) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each status with the envelope schema and its codes."""
    by_status: dict[int, list[ErrorCode]] = {}
    for code in codes:
        by_status.setdefault(code.status, []).append(code)
    return {
        status: {"model": ErrorEnvelope, "description": describe(same)}
        for status, same in sorted(by_status.items())
    }


def describe(codes: list[ErrorCode]) -> str:
    return "; ".join(f"`{c.code}`: {c.message}" for c in codes)


def request_id(request: Request) -> str:
    rid = getattr(request.state, "request_id", None)
    if not rid:
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex
        request.state.request_id = rid
    return str(rid)


def render_error(exc: Exception) -> tuple[int, dict[str, str] | None, bytes]:
    """(status, extra headers, JSON body) of a `MallError` or a Redis outage: the one
    rendering behind the exception handlers below and the raw fast paths (kit.fastpath)."""
    if isinstance(exc, MallError):
        headers = (
            {"Retry-After": str(exc.params["retry_after"])} if "retry_after" in exc.params else None
        )
        return exc.status, headers, _json(exc.body())
    # Redis unreachable, or a cluster failing over: nothing changed, try again
    return 503, {"Retry-After": "1"}, _json(MallError(SERVICE_UNAVAILABLE).body())


def _json(content: Any) -> bytes:
    # the bytes JSONResponse sends
    return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def log_redis_down(path: str, exc: Exception) -> None:
    """One log line per burst of 503s for a Redis outage (see `_QuietLog`)."""
    _redis_down_log.hit(path, exc)


def install(app: FastAPI) -> None:
    @app.exception_handler(MallError)
    async def _mall_error(request: Request, exc: MallError) -> Response:
        status, headers, body = render_error(exc)
        return Response(body, status, headers, media_type="application/json")

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = field_errors(exc.errors())
        return JSONResponse(MallError(VALIDATION_ERROR, fields=fields).body(), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error = _HTTP_CODES.get(exc.status_code)
        if error is None:
            body = {"error": {"code": f"HTTP_{exc.status_code}", "message": str(exc.detail)}}
        else:
            body = MallError(error).body()
        return JSONResponse(
            body, status_code=exc.status_code, headers=getattr(exc, "headers", None)
        )

    async def _redis_down(request: Request, exc: Exception) -> Response:
        log_redis_down(request.url.path, exc)
        status, headers, body = render_error(exc)
        return Response(body, status, headers, media_type="application/json")

    for unavailable in REDIS_UNAVAILABLE:  # outages, and a cluster failing over
        app.add_exception_handler(unavailable, _redis_down)

    @app.exception_handler(Exception)
    async def _unknown(request: Request, exc: Exception) -> JSONResponse:
        rid = request_id(request)
        log.exception("unhandled error request_id=%s path=%s", rid, request.url.path)
        body = MallError(INTERNAL_ERROR).body()
        body["error"]["request_id"] = rid
        # (the X-Request-ID header: app.RequestContext, outside this handler's layer)
        return JSONResponse(body, status_code=500)


class _QuietLog:
    """One line for a burst of answers to the same outage, not one per request: the
    first, then at most one per `every` seconds with the count answered in between."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self.last = -every
        self.quiet = 0

    def hit(self, path: str, exc: Exception) -> None:
        now = time.monotonic()
        if now - self.last < self.every:
            self.quiet += 1
            return
        more = f" ({self.quiet} more answered 503 since the last line)" if self.quiet else ""
        log.error("redis unavailable path=%s: %s%s", path, exc, more)
        self.last, self.quiet = now, 0


_redis_down_log = _QuietLog()
