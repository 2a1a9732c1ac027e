"""Fixed-window rate limits decided atomically in Redis."""

from __future__ import annotations

from mall.errors import RATE_LIMITED
from mall.redis import get_redis

_HIT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('TTL', KEYS[1])
return {n, ttl}
"""


async def hit(key: str, limit: int, window_seconds: int) -> int:
    """Count one hit; raise RATE_LIMITED (with retry_after) past `limit` per window."""
    redis = get_redis()
    count, ttl = await redis.eval(_HIT, 1, f"rl:{key}", window_seconds)
    if int(count) > limit:
        raise RATE_LIMITED(retry_after=max(int(ttl), 1))
    return int(count)


async def over_limit(key: str, limit: int) -> bool:
    """True when `key` has already used up `limit` in its window (does not count)."""
    value = await get_redis().get(f"rl:{key}")
    return value is not None and int(value) >= limit


async def reset(key: str) -> None:
    await get_redis().delete(f"rl:{key}")


_GIVE_BACK = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('DECR', KEYS[1]) end
return 0
"""


async def give_back(key: str) -> None:
    """Undo one counted hit (e.g. a reserved failure that turned out a success); a window
    that has ended stays ended."""
    await get_redis().eval(_GIVE_BACK, 1, f"rl:{key}")
