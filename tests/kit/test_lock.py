"""kit.lock: one holder at a time across processes (Redis), released by its holder only."""

from __future__ import annotations

from mall.kit import lock
from mall.redis import get_redis


async def test_one_holder_at_a_time_and_released_when_done() -> None:
    async with lock.held("test:lock", 60) as first:
        assert first
        async with lock.held("test:lock", 60) as second:
            assert not second
        # the refused one released nothing
        assert await get_redis().exists("test:lock")
    assert not await get_redis().exists("test:lock")
    async with lock.held("test:lock", 60) as again:
        assert again


async def test_a_crashed_holders_lock_lapses_and_a_late_holder_leaves_the_next_ones() -> None:
    async with lock.held("test:lock", 60) as first:
        assert first
        await get_redis().delete("test:lock")  # as if it lapsed
        async with lock.held("test:lock", 60) as second:
            assert second
            ttl = await get_redis().ttl("test:lock")
            assert 0 < ttl <= 60
        await get_redis().set("test:lock", "someone else")
    # the first holder, done late, leaves the next holder's lock alone
    assert await get_redis().get("test:lock") == "someone else"
