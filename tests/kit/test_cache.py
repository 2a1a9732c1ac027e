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
