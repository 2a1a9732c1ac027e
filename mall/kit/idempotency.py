"""`Idempotency-Key` for every request that spends or grants points, money, stock or
coupons: a retry with the same key returns the first answer and changes nothing.

The answer is kept in Redis (AOF-persisted) for `idempotency_ttl_seconds`. A key
is claimed with SET NX before the work runs, so two concurrent retries never both
run it. Ledgers keep their own unique keys in the database as the last line."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel

from mall.config import get_settings
from mall.errors import (
    IDEMPOTENCY_IN_PROGRESS,
    IDEMPOTENCY_KEY_REUSED,
    REGISTRY,
    VALIDATION_ERROR,
    MallError,
)
from mall.redis import get_redis
from mall.validation import field_message

_LEASE_SECONDS = 120
MAX_KEY_LENGTH = 128  # as declared on the header (mall.deps.IdempotencyKey)


def check_key(key: str | None) -> None:
    """An over-long key is a VALIDATION_ERROR naming the header, the same answer FastAPI
    gives where the header is declared, for the routes that read it by hand."""
    if key is not None and len(key) > MAX_KEY_LENGTH:
        error = {"type": "string_too_long", "ctx": {"max_length": MAX_KEY_LENGTH}}
        raise VALIDATION_ERROR(
            fields=[
                {
                    "field": "header.Idempotency-Key",
                    "message": field_message(error),
                    "type": "string_too_long",
                }
            ]
        )


def fingerprint(*parts: Any) -> str:
    raw = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


async def run(
    scope: str,
    key: str | None,
    request_fingerprint: str,
    work: Callable[[], Awaitable[Any]],
) -> Any:
    """Run `work` once per (scope, key); replay its answer (or its MallError) after."""
    if not key:
        return _jsonable(await work())
    check_key(key)
    redis = get_redis()
    rkey = f"idem:{scope}:{key}"
    claimed = await redis.set(
        rkey,
        json.dumps({"fp": request_fingerprint, "state": "running"}),
        nx=True,
        ex=_LEASE_SECONDS,
    )
    if not claimed:
        raw = await redis.get(rkey)
        if raw is None:  # expired between SET and GET: treat as in progress, client retries
            raise IDEMPOTENCY_IN_PROGRESS()
        stored = json.loads(raw)
        if stored.get("fp") != request_fingerprint:
            raise IDEMPOTENCY_KEY_REUSED()
        if stored["state"] == "running":
            raise IDEMPOTENCY_IN_PROGRESS()
        if stored["state"] == "error":
            error = REGISTRY.get(stored["code"])
            if error is not None:
                raise MallError(error, **stored.get("params", {}))
        return stored.get("body")
    ttl = get_settings().idempotency_ttl_seconds
    try:
        body = _jsonable(await work())
    except MallError as exc:
        if exc.status >= 500:
            await redis.delete(rkey)
            raise
        params = {k: v for k, v in exc.params.items() if isinstance(v, (int, str, float, bool))}
        await redis.set(
            rkey,
            json.dumps(
                {"fp": request_fingerprint, "state": "error", "code": exc.code, "params": params}
            ),
            ex=ttl,
        )
        raise
    except BaseException:
        await redis.delete(rkey)
        raise
    await redis.set(
        rkey,
        json.dumps({"fp": request_fingerprint, "state": "done", "body": body}, default=str),
        ex=ttl,
    )
    return body
