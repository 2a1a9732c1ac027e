"""kit.cache.Refreshing: a burst never waits on the database once a value is known."""

from __future__ import annotations

import asyncio
import logging

import pytest

from mall.kit.cache import Refreshing

pytestmark = pytest.mark.nodb


class Source:
    def __init__(self) -> None:
        self.reads = 0
        self.value = "v1"
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail = False

    async def load(self, key: int) -> str:
        self.reads += 1
        value = f"{key}:{self.value}"  # what the row held when the read began
        await self.gate.wait()
        if self.fail:
            raise RuntimeError("database down")
        return value


async def test_a_burst_of_first_reads_loads_once() -> None:
    source = Source()
    cache: Refreshing[int, str] = Refreshing(source.load, 60)
    source.gate.clear()
    burst = [asyncio.ensure_future(cache.get(7)) for _ in range(50)]
    await asyncio.sleep(0)
    source.gate.set()
    assert await asyncio.gather(*burst) == ["7:v1"] * 50
    assert source.reads == 1
    assert await cache.get(7) == "7:v1" and source.reads == 1  # fresh: no read


async def test_an_expired_copy_is_answered_while_one_background_load_runs() -> None:
    source = Source()
    cache: Refreshing[int, str] = Refreshing(source.load, 0)  # always expired
    assert await cache.get(1) == "1:v1"
    source.value, source.reads = "v2", 0
    source.gate.clear()
    answers = [await cache.get(1) for _ in range(20)]  # nobody waits on the load
    await asyncio.sleep(0)
    assert answers == ["1:v1"] * 20 and source.reads == 1
    source.gate.set()
    await asyncio.sleep(0.01)
    assert await cache.get(1) == "1:v2"


async def test_reload_reads_now_and_forget_drops_the_copy() -> None:
    source = Source()
    cache: Refreshing[int, str] = Refreshing(source.load, 60)
    assert await cache.get(1) == "1:v1"
    source.value = "v2"
    assert await cache.get(1) == "1:v1"
    assert await cache.reload(1) == "1:v2"
    source.value = "v3"
    cache.forget(1)
    assert await cache.get(1) == "1:v3"
    source.value = "v4"
    cache.forget()
    assert await cache.get(1) == "1:v4"


async def test_a_forgotten_load_in_flight_is_not_kept() -> None:
    source = Source()
    cache: Refreshing[int, str] = Refreshing(source.load, 60)
    source.gate.clear()
    first = asyncio.ensure_future(cache.get(1))
    for _ in range(3):  # the get, then its load, start
        await asyncio.sleep(0)
    assert source.reads == 1
    cache.forget(1)  # ops changed the row while it was being read
    source.value = "v2"
    source.gate.set()
    assert await first == "1:v1"
    assert await cache.get(1) == "1:v2"


async def test_a_failed_background_load_keeps_the_copy_and_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = Source()
    cache: Refreshing[int, str] = Refreshing(source.load, 0)
    assert await cache.get(1) == "1:v1"
    source.fail = True
    with caplog.at_level(logging.WARNING, logger="mall.kit.cache"):
        assert await cache.get(1) == "1:v1"
        await asyncio.sleep(0.01)
    assert "database down" in caplog.text
    assert await cache.get(1) == "1:v1"
    with pytest.raises(RuntimeError):
        await cache.reload(1)


async def test_batching_sends_the_reads_of_one_tick_as_one() -> None:
    from mall.kit.cache import Batching

    calls: list[list[int]] = []

    async def load_many(keys: list[int]) -> dict[int, str]:
        calls.append(sorted(keys))
        return {k: f"row-{k}" for k in keys if k != 13}

    reads: Batching[int, str] = Batching(load_many)
    answers = await asyncio.gather(*(reads.get(k, "none") for k in [1, 2, 3, 2, 13]))
    assert answers == ["row-1", "row-2", "row-3", "row-2", "none"]
    assert calls == [[1, 2, 3, 13]]  # one read, each key once
    assert await reads.get(4, "none") == "row-4" and calls[-1] == [4]


async def test_batching_keeps_one_load_in_flight_and_sends_what_came_meanwhile_as_one() -> None:
    # under a burst requests arrive a few to a tick: a load per tick would queue on the
    # one database connection, so the keys of the ticks during a load wait for it
    from mall.kit.cache import Batching

    calls: list[list[int]] = []
    release = asyncio.Event()

    async def load_many(keys: list[int]) -> dict[int, str]:
        calls.append(sorted(keys))
        if len(calls) == 1:
            await release.wait()
        return {k: f"row-{k}" for k in keys}

    reads: Batching[int, str] = Batching(load_many)
    first = asyncio.ensure_future(reads.get(1, "none"))
    for _ in range(5):
        await asyncio.sleep(0)
    assert calls == [[1]]
    later = []
    for key in (2, 3, 4):  # each in a tick of its own, while the first load runs
        later.append(asyncio.ensure_future(reads.get(key, "none")))
        await asyncio.sleep(0)
    assert calls == [[1]]
    release.set()
    assert await first == "row-1"
    assert await asyncio.gather(*later) == ["row-2", "row-3", "row-4"]
    assert calls == [[1], [2, 3, 4]]
    # idle again: the next read goes out in its own tick
    assert await reads.get(5, "none") == "row-5" and calls[-1] == [5]


async def test_batching_fails_every_read_of_a_failed_load() -> None:
    from mall.kit.cache import Batching

    async def load_many(keys: list[int]) -> dict[int, str]:
        raise RuntimeError("database down")

    reads: Batching[int, str] = Batching(load_many)
    results = await asyncio.gather(reads.get(1, ""), reads.get(2, ""), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
