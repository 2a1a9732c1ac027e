"""`mall layout [migrate]`: the version of the Redis key layout, and its migration.

Old and new app nodes share Redis during a rolling deploy. As long as a release keeps
the key layout (`mall.redis.KEY_LAYOUT_VERSION`), nothing needs doing: nodes of both
releases decide on the same keys. A release that changes it (new key names, another
shape of stock or buyers) bumps the version and adds a step to MIGRATIONS, and the
deploy goes: roll out the new release (its nodes refuse hot-path decisions, 503, while
Redis still says the old version), then `mall layout migrate`:

1. the version key becomes `migrating:N->M`: no node of either release decides;
2. wait FENCE_SECONDS, longer than any node takes to notice plus a request in flight;
3. run each step (plain commands or EVAL on the warm keys; the steps must be safe to
   run again, a migration that died half-way is resumed);
4. the version key becomes M: the new nodes decide, the old ones (if any are left) keep
   answering 503 and fail readiness, so the load balancer takes them out.

Members see 503 + Retry-After for the fence and the steps (seconds); stock is never
decided on two layouts at once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mall import redis as mall_redis
from mall.redis import LAYOUT_KEY, RedisClient, get_redis

# from version N to N+1; version 1 is the first layout, so none yet
MIGRATIONS: dict[int, Callable[[RedisClient], Awaitable[None]]] = {}

# a node notices a new version within a recheck, keeps a stale good answer at most
# LAYOUT_STALE_SECONDS, and a request already past the check finishes in well under 2 s
FENCE_SECONDS = mall_redis.LAYOUT_STALE_SECONDS + 2 * mall_redis.LAYOUT_RECHECK_SECONDS + 2.0


class LayoutError(RuntimeError):
    """The layout cannot be migrated by this release (newer, unknown or busy)."""


@dataclass(frozen=True)
class LayoutStatus:
    stored: str | None
    known: int

    @property
    def ok(self) -> bool:
        return self.stored in (None, str(self.known))

    def line(self) -> str:
        verdict = "ok" if self.ok else "this release makes no hot-path decisions"
        return (
            f"Redis key layout: {self.stored or 'unset (claimed by the first node)'}; "
            f"this release: {self.known} ({verdict})"
        )


async def status() -> LayoutStatus:
    stored = await get_redis().get(LAYOUT_KEY)
    return LayoutStatus(None if stored is None else str(stored), mall_redis.KEY_LAYOUT_VERSION)


def _source(stored: str) -> int:
    """The version a stored value migrates from (`N`, or `migrating:N->M` resumed)."""
    text = stored.removeprefix("migrating:").split("->", 1)[0]
    if not text.isdigit():
        raise LayoutError(f"Redis holds an unknown key layout {stored!r}")
    return int(text)


async def migrate(
    *, fence_seconds: float = FENCE_SECONDS, say: Callable[[str], None] = print
) -> LayoutStatus:
    """Bring Redis to this release's layout (see the module docstring)."""
    redis = get_redis()
    target = mall_redis.KEY_LAYOUT_VERSION
    stored = await redis.get(LAYOUT_KEY)
    if stored is None:
        await redis.set(LAYOUT_KEY, target, nx=True)
        say(f"Redis had no key layout yet: now {target}")
        return await status()
    stored = str(stored)
    if stored == str(target):
        say(f"Redis is already at key layout {target}: nothing to do")
        return await status()
    source = _source(stored)
    if source > target:
        raise LayoutError(
            f"Redis is at key layout {source}, newer than this release ({target}): "
            "run the newer release's `mall layout migrate`, or roll back with its help"
        )
    missing = [v for v in range(source, target) if v not in MIGRATIONS]
    if missing:
        raise LayoutError(f"this release has no migration from key layout {missing[0]}")
    fence = f"migrating:{source}->{target}"
    previous = await redis.set(LAYOUT_KEY, fence, get=True)
    if previous is not None and str(previous) not in (stored, fence):
        await redis.set(LAYOUT_KEY, previous)
        raise LayoutError(f"the key layout changed meanwhile ({previous!r}); run again")
    say(f"fenced ({fence}): no node decides; waiting {fence_seconds:g}s for calls in flight")
    await asyncio.sleep(fence_seconds)
    for version in range(source, target):
        say(f"migrating key layout {version} -> {version + 1}")
        await MIGRATIONS[version](redis)
    await redis.set(LAYOUT_KEY, target)
    mall_redis.layout_guard.forget()
    say(f"Redis is at key layout {target}")
    return await status()
