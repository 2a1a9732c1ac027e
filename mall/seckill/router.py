"""Shopper routes for flash sales. The attempt route is the hot path: the member id comes
straight from the signed token (no database read) and one Lua call decides."""

from __future__ import annotations

import json
import re
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from mall.errors import SERVICE_UNAVAILABLE, UNAUTHORIZED, MallError
from mall.kit import clock, idempotency
from mall.kit.bounds import Id, fits_bigint
from mall.kit.security import decode_token
from mall.redis import UNAVAILABLE as REDIS_UNAVAILABLE
from mall.seckill import service
from mall.seckill.schemas import AttemptOut, ReservationOut, SessionOut

router = APIRouter(prefix="/api/v1", tags=["seckill"])

_bearer = HTTPBearer(auto_error=False)


async def _member_id(
    credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
) -> int:
    if credentials is None or not credentials.credentials:
        raise UNAUTHORIZED()
    return int(decode_token(credentials.credentials, "member")["sub"])


# A signed member token is enough for seckill reads and attempts (no member row loaded).
MemberId = Annotated[int, Depends(_member_id)]
# "<item id>-<hex>" as the attempt answers it
ReservationId = Annotated[str, Path(max_length=40, pattern=r"^[A-Za-z0-9_-]+$")]


@router.get("/seckill/sessions", response_model=list[SessionOut])
async def sessions() -> list[SessionOut]:
    """Current and upcoming flash sales with their items and the stock left."""
    return await service.open_sessions()


# Verified member tokens -> (member id, expiry): a member taps many times in a burst and
# the HMAC check is the largest cost left on this path. Expiry is still checked each time.
_verified: dict[str, tuple[int, int]] = {}
_VERIFIED_MAX = 50_000


def _bearer_member_id(authorization: str | None) -> int:
    scheme, _sep, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise UNAUTHORIZED()
    known = _verified.get(token)
    if known is not None and known[1] > clock.now().timestamp():
        return known[0]
    payload = decode_token(token, "member")
    if len(_verified) >= _VERIFIED_MAX:
        _verified.clear()
    member_id = int(payload["sub"])
    _verified[token] = (member_id, int(payload["exp"]))
    return member_id


@router.post(
    "/seckill/items/{item_id}/attempt",
    response_model=AttemptOut,
    openapi_extra={
        "security": [{"HTTPBearer": []}],
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "maxLength": idempotency.MAX_KEY_LENGTH},
                "description": "A retry with the same key returns the same win.",
            }
        ],
    },
)
async def attempt(item_id: Id, request: Request) -> Response:
    """Try to win one unit. Every answer is 200 with `result`: `won` (poll the reservation),
    `sold_out`, `limit_reached`, `not_started`, `ended` or `rate_limited`. A retry with the
    same `Idempotency-Key` returns the same win. Redis unreachable: 503, nothing changed.

    The hot path: headers are read directly (no dependency tree) and the answer is
    serialized once, since most answers in a burst are the same `sold_out`."""
    headers = request.headers
    member_id = _bearer_member_id(headers.get("authorization"))
    key = headers.get("idempotency-key")
    idempotency.check_key(key)
    answer = await service.attempt(item_id, member_id, key)
    return Response(service.answer_json(answer), media_type="application/json")


@router.get("/seckill/reservations/{reservation_id}", response_model=ReservationOut)
async def reservation(reservation_id: ReservationId, member_id: MemberId) -> ReservationOut:
    """Status of your win: pending (being persisted), confirmed, pending_payment, paid,
    expired (unpaid in time) or released (e.g. not enough points)."""
    return await service.reservation(member_id, reservation_id)


# --- the hot path without the framework ---------------------------------------------

# ASCII digits only (`\d` would take other scripts' digits too), at most BIGINT's 19
_ATTEMPT_PATH = re.compile(r"^/api/v1/seckill/items/([0-9]{1,19})/attempt$")


class _Template:
    """Stands in for the matched route, so metrics label the hot path like the others."""

    path = "/api/v1/seckill/items/{item_id}/attempt"


class AttemptFastPath:
    """Pure ASGI middleware answering `POST .../attempt` before FastAPI's request
    machinery (dependency solving, exit stacks, response validation), which costs more
    than the Lua call itself in a burst. Same answers, errors and headers as the route
    above, which stays registered for the OpenAPI schema."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        found = _ATTEMPT_PATH.match(scope["path"])
        # an id that is not a BIGINT goes to the route, whose validation answers 422
        if found is None or not fits_bigint(item_id := int(found.group(1))):
            await self.app(scope, receive, send)
            return
        scope["route"] = _Template
        authorization = key = None
        has_body = False
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"idempotency-key":
                key = value.decode("latin-1")
            elif name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
                has_body = True
        if has_body:
            # the attempt takes no body; read it through the body limit (outside this
            # middleware), which answers 413 for an oversized one, and drop it
            while (await receive()).get("more_body", False):
                pass
        status, extra = 200, []
        try:
            idempotency.check_key(key)
            member_id = _bearer_member_id(authorization)
            body = service.answer_json(await service.attempt(item_id, member_id, key))
        except MallError as exc:
            status, body = exc.status, json.dumps(exc.body(), ensure_ascii=False).encode()
        except REDIS_UNAVAILABLE:
            status, extra = 503, [(b"retry-after", b"1")]
            body = json.dumps(MallError(SERVICE_UNAVAILABLE).body(), ensure_ascii=False).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers + extra})
        await send({"type": "http.response.body", "body": body})
