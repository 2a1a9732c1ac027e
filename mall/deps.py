"""`Annotated` dependency aliases, so route signatures read like sentences."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from mall.errors import FORBIDDEN, UNAUTHORIZED
from mall.i18n import get_locale
from mall.kit.clientip import client_ip
from mall.members import service as members_service
from mall.members.models import Member, Staff
from mall.redis import RedisClient as AnyRedis
from mall.redis import get_redis

_bearer = HTTPBearer(auto_error=False)


async def _current_member(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> Member:
    if credentials is None or not credentials.credentials:
        raise UNAUTHORIZED()
    member = await members_service.member_from_token(credentials.credentials)
    request.state.member_id = member.id
    return member


async def _optional_member(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> Member | None:
    """Anonymous browsing works; a token that is sent must be valid (so a member never
    silently sees the anonymous answer because of an expired login)."""
    if credentials is None or not credentials.credentials:
        return None
    return await _current_member(request, credentials)


async def _current_staff(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> Staff:
    if credentials is None or not credentials.credentials:
        raise UNAUTHORIZED()
    staff, session_id = await members_service.staff_from_token(credentials.credentials)
    request.state.staff_id = staff.id
    request.state.staff_session_id = session_id
    return staff


async def _admin_staff(staff: Staff = Depends(_current_staff)) -> Staff:
    if staff.role != "admin":
        raise FORBIDDEN()
    return staff


def _redis() -> AnyRedis:
    return get_redis()


def _client_ip(request: Request) -> str:
    return client_ip(request)


def _bearer_token(
    credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
) -> str:
    if credentials is None or not credentials.credentials:
        raise UNAUTHORIZED()
    return credentials.credentials


CurrentMember = Annotated[Member, Depends(_current_member)]
# the member when a token is sent (401 if it is not valid), None without one
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
