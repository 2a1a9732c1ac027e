"""`Annotated` dependency aliases, so route signatures read like sentences."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPBearer
from starlette.requests import HTTPConnection

from mall.errors import FORBIDDEN, UNAUTHORIZED
from mall.i18n import get_locale
from mall.kit.clientip import client_ip
from mall.kit.security import bearer_token
from mall.members import service as members_service
from mall.members.models import Member, Staff
from mall.redis import RedisClient as AnyRedis
from mall.redis import get_redis


class _Bearer(HTTPBearer):
    """HTTPBearer for the OpenAPI scheme, reading the header with the one parser the raw
    fast paths (kit.fastpath) use too: the token, or None."""

    async def __call__(self, request: HTTPConnection) -> str | None:  # type: ignore[override]
        return bearer_token(request.headers.get("authorization"))


_bearer = _Bearer(auto_error=False)


async def _current_member(request: Request, token: str | None = Depends(_bearer)) -> Member:
    if token is None:
        raise UNAUTHORIZED()
    member = await members_service.member_from_token(token)
    request.state.member_id = member.id
    return member


async def _optional_member(request: Request, token: str | None = Depends(_bearer)) -> Member | None:
    """Anonymous browsing works; a token that is sent must be valid (so a member never
    silently sees the anonymous answer because of an expired login)."""
    if token is None:
        return None
    return await _current_member(request, token)


async def _current_staff(request: Request, token: str | None = Depends(_bearer)) -> Staff:
    if token is None:
        raise UNAUTHORIZED()
    staff, session_id = await members_service.staff_from_token(token)
    request.state.staff_id = staff.id
    request.state.staff_session_id = session_id
    return staff


async def _admin_staff(staff: Staff = Depends(_current_staff)) -> Staff:
    if staff.role != "admin":
        raise FORBIDDEN()
    return staff


async def _member_id(token: str | None = Depends(_bearer)) -> int:
    """The member id of a signed token, no member loaded (a deleted account's refused)."""
    if token is None:
        raise UNAUTHORIZED()
    return (await members_service.member_of_token(token))[0]


def _redis() -> AnyRedis:
    return get_redis()


def _client_ip(request: Request) -> str:
    return client_ip(request)


def _bearer_token(
    token: str | None = Depends(_bearer),
) -> str:
    if token is None:
        raise UNAUTHORIZED()
    return token


CurrentMember = Annotated[Member, Depends(_current_member)]
# the member when a token is sent (401 if it is not valid), None without one
# a signed member token is enough: the member's id, no member row loaded (hot reads)
MemberId = Annotated[int, Depends(_member_id)]
OptionalMember = Annotated[Member | None, Depends(_optional_member)]
CurrentStaff = Annotated[Staff, Depends(_current_staff)]
AdminStaff = Annotated[Staff, Depends(_admin_staff)]
RedisClient = Annotated[AnyRedis, Depends(_redis)]
# the client's address (X-Forwarded-For only from MALL_TRUSTED_PROXIES)
ClientIP = Annotated[str, Depends(_client_ip)]
# the raw bearer token (401 without one), for routes that end their own session
BearerToken = Annotated[str, Depends(_bearer_token)]
Locale = Annotated[str, Depends(get_locale)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=128,
        description="A retry with the same key returns the first answer and changes nothing.",
    ),
]
