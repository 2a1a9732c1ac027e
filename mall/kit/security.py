"""Signed tokens (JWT, HS256) and password hashing (argon2)."""

from __future__ import annotations

import secrets
from typing import Any, Literal

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from mall.config import get_settings
from mall.errors import TOKEN_EXPIRED, TOKEN_INVALID
from mall.kit import clock

TokenType = Literal["member", "member_refresh", "staff"]

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


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
    return jwt.encode(payload, get_settings().secret_key, algorithm="HS256")


def decode_token(token: str, typ: TokenType) -> dict[str, Any]:
    try:
        payload: dict[str, Any] = jwt.decode(
            token,
            get_settings().secret_key,
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
