"""Signed tokens (JWT, HS256) and password hashing (argon2).

argon2 is slow and memory-hard on purpose (about 50 ms and 64 MiB a call), so hashing and
verifying run in worker threads (argon2-cffi releases the GIL), at most
`password_hash_concurrency` at a time per event loop: the loop keeps answering while
logins are checked, and a burst of logins cannot take all memory."""

from __future__ import annotations

import asyncio
import secrets
import weakref
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from mall.config import get_settings
from mall.errors import TOKEN_EXPIRED, TOKEN_INVALID
from mall.kit import clock

TokenType = Literal["member", "member_refresh", "staff", "staff_refresh"]

_hasher = PasswordHasher()
_T = TypeVar("_T")
_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def hash_password(password: str) -> str:
    """Blocks for the hash's duration: requests use `hash_password_async`."""
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """Blocks for the hash's duration: requests use `verify_password_async`."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    try:
        return _hasher.check_needs_rehash(password_hash)
    except InvalidHashError:
        return False


async def _off_loop(fn: Callable[..., _T], *args: Any) -> _T:
    loop = asyncio.get_running_loop()
    gate = _gates.get(loop)
    if gate is None:
        gate = _gates[loop] = asyncio.Semaphore(max(1, get_settings().password_hash_concurrency))
    async with gate:
        return await asyncio.to_thread(fn, *args)


async def hash_password_async(password: str) -> str:
    return await _off_loop(hash_password, password)


async def verify_password_async(password_hash: str, password: str) -> bool:
    return await _off_loop(verify_password, password_hash, password)


def new_token_id() -> str:
    return secrets.token_hex(16)


def issue_token(subject: int, typ: TokenType, ttl_seconds: int, **claims: Any) -> str:
    issued = int(clock.now().timestamp())
    payload = {
        "sub": str(subject),
        "typ": typ,
        "iat": issued,
        "exp": issued + ttl_seconds,
        "jti": secrets.token_hex(8),
        **claims,
    }
    return jwt.encode(payload, get_settings().signing_key(), algorithm="HS256")


def decode_token(token: str, typ: TokenType) -> dict[str, Any]:
    try:
        payload: dict[str, Any] = jwt.decode(
            token,
            get_settings().signing_key(),
            algorithms=["HS256"],
            options={
                "require": ["exp", "sub", "typ"],
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
            },
        )
    except jwt.PyJWTError:
        raise TOKEN_INVALID() from None
    # expiry is checked against kit.clock so tests can move time
    if int(payload["exp"]) <= int(clock.now().timestamp()):
        raise TOKEN_EXPIRED()
    if payload.get("typ") != typ:
        raise TOKEN_INVALID()
    return payload


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None. The one parser
    behind the routes' dependencies (mall.deps) and the raw fast paths (kit.fastpath)."""
    scheme, _sep, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


# Verified member tokens -> (member id, expiry, claims): a member taps many times in a
# burst and the HMAC check is the largest cost left on a hot path. Expiry is still checked
# each time.
_verified: dict[str, tuple[int, int, dict[str, Any]]] = {}
_VERIFIED_MAX = 50_000


def member_token(token: str) -> tuple[int, dict[str, Any]]:
    """The member id a signed member token names and its whole payload (claims), without
    loading the member (TOKEN_* errors as `decode_token`); repeated tokens skip the
    signature check until they expire. The payload must not be changed by callers."""
    known = _verified.get(token)
    if known is not None and known[1] > clock.now().timestamp():
        return known[0], known[2]
    payload = decode_token(token, "member")
    if len(_verified) >= _VERIFIED_MAX:
        _verified.clear()
    found = int(payload["sub"])
    _verified[token] = (found, int(payload["exp"]), payload)
    return found, payload
