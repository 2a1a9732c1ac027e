"""A Redis outage in the logs: the job runner writes one line when it starts and one when
it ends, with quiet retries and backoff in between (not a traceback per second), and work
resumes; requests answer 503 with one line for the burst, not one each."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from mall import errors
from mall import redis as mall_redis
from mall.kit import jobs

OUTAGE_SECONDS = 1.2


@pytest.fixture
async def dead_redis(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Redis]:
    """Point the process-wide client at a socket nobody listens on; the shared client is
    returned (the outage ends) by `end_outage`."""
    monkeypatch.setattr(jobs, "RETRY_FIRST_SECONDS", 0.1)
    monkeypatch.setattr(jobs, "RETRY_MAX_SECONDS", 0.4)
    monkeypatch.setattr(jobs, "outage", jobs.Outage())
    shared = mall_redis.get_redis()
    dead = mall_redis.connect("unix:///nonexistent-mall-test/redis.sock")
    try:
        yield shared
    finally:
        mall_redis.set_client(shared)
        await dead.aclose()


async def test_consumer_and_job_log_an_outage_once_and_resume(
    dead_redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    calls = {"consumer": 0, "job": 0}
    resumed = {"consumer": asyncio.Event(), "job": asyncio.Event()}

    async def consume(stop: asyncio.Event) -> None:
        calls["consumer"] += 1
        await mall_redis.get_redis().ping()  # raises while Redis is down
        resumed["consumer"].set()
        await stop.wait()

    async def job_run() -> None:
        calls["job"] += 1
        resumed["job"].set()

    stop = asyncio.Event()
    caplog.set_level(logging.DEBUG, logger="mall.jobs")
    tasks = [
        asyncio.create_task(jobs._consume(jobs.Consumer("test.consumer", consume), stop)),
        # an hourly job meets the outage at its lease and retries soon, not an hour later
        asyncio.create_task(jobs._loop(jobs.Job("test.outage-job", 3600, job_run), stop)),
    ]
    await asyncio.sleep(OUTAGE_SECONDS)
    assert not any(e.is_set() for e in resumed.values())
    during = dict(calls)
    mall_redis.set_client(dead_redis)  # Redis is back
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in resumed.values())), timeout=5)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=5)

    # retried with backoff (0.1, 0.2, 0.4, 0.4 ...), probing Redis instead of re-running
    assert during["consumer"] == 1 and during["job"] == 0, during
    assert calls == {"consumer": 2, "job": 1}
    records = [r for r in caplog.records if r.name == "mall.jobs"]
    warnings = [r for r in records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "Redis unreachable" in warnings[0].getMessage()
    assert warnings[0].exc_info is None  # a line, not a traceback
    assert sum("reachable again" in r.getMessage() for r in records) == 1


async def test_a_crashing_consumer_backs_off_and_logs_each_crash(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug (not an outage) still shows its traceback, but restarts slow down."""
    monkeypatch.setattr(jobs, "RETRY_FIRST_SECONDS", 0.05)
    monkeypatch.setattr(jobs, "outage", jobs.Outage())
    calls = 0

    async def consume(stop: asyncio.Event) -> None:
        nonlocal calls
        calls += 1
        raise ValueError("bug")

    stop = asyncio.Event()
    caplog.set_level(logging.ERROR, logger="mall.jobs")
    task = asyncio.create_task(jobs._consume(jobs.Consumer("test.crash", consume), stop))
    await asyncio.sleep(0.5)  # 0.05 + 0.1 + 0.2 = 0.35: four runs, not ten
    stop.set()
    await asyncio.wait_for(task, timeout=5)
    assert 3 <= calls <= 4, calls
    crashes = [r for r in caplog.records if r.name == "mall.jobs"]
    assert len(crashes) == calls and all(r.exc_info for r in crashes)


async def test_requests_during_an_outage_answer_503_with_one_log_line(
    client: httpx.AsyncClient,
    member_headers: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    headers = await member_headers("outage")
    shared = mall_redis.get_redis()
    dead = mall_redis.connect("unix:///nonexistent-mall-test/redis.sock")
    monkeypatch.setattr(errors, "_redis_down_log", errors._QuietLog())
    caplog.set_level(logging.INFO, logger="mall.errors")
    try:
        statuses = [
            (
                await client.post(
                    "/api/v1/points/sign-in", headers={**headers, "Idempotency-Key": f"k{n}"}
                )
            ).status_code
            for n in range(20)
        ]
    finally:
        mall_redis.set_client(shared)
        await dead.aclose()
    assert statuses == [503] * 20
    lines = [r.getMessage() for r in caplog.records if r.name == "mall.errors"]
    assert len(lines) == 1 and "redis unavailable" in lines[0], lines
