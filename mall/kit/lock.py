"""A lock held in Redis across processes: taken with SET NX EX, so a crashed holder's
lapses after its time, and released only by its holder (a holder that outlived its time
does not release the next one's)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from mall.redis import get_redis


@asynccontextmanager
async def held(key: str, seconds: int) -> AsyncIterator[bool]:
    """`async with held(key, seconds) as mine:` mine is False when another holds it."""
    redis = get_redis()
    owner = secrets.token_hex(8)
    mine = bool(await redis.set(key, owner, nx=True, ex=seconds))
    try:
        yield mine
    finally:
        if mine and await redis.get(key) == owner:
            await redis.delete(key)
