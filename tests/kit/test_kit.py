from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from mall.errors import IDEMPOTENCY_KEY_REUSED, NOT_FOUND, MallError
from mall.kit import clock, idempotency, jobs, ratelimit
from mall.kit.money import apply_rate, fmt_yuan
from mall.redis import get_redis


async def test_idempotency_runs_once_and_replays() -> None:
    calls = 0

    async def work() -> dict[str, int]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return {"n": calls}

    fp = idempotency.fingerprint("POST", "/x", {"a": 1})
    results = await asyncio.gather(
        *(idempotency.run("m1", "key-1", fp, work) for _ in range(10)), return_exceptions=True
    )
    successes = [r for r in results if isinstance(r, dict)]
    in_progress = [r for r in results if isinstance(r, MallError)]
    assert calls == 1
    assert successes and all(r == {"n": 1} for r in successes)
    assert all(e.code == "IDEMPOTENCY_IN_PROGRESS" for e in in_progress)
    assert await idempotency.run("m1", "key-1", fp, work) == {"n": 1}
    assert calls == 1
    # same key, different request: refused, not replayed
    with pytest.raises(MallError) as exc:
        await idempotency.run("m1", "key-1", idempotency.fingerprint("other"), work)
    assert exc.value.error is IDEMPOTENCY_KEY_REUSED
    # another principal's key space is separate
    assert await idempotency.run("m2", "key-1", fp, work) == {"n": 2}


async def test_idempotency_replays_business_errors_but_not_crashes() -> None:
    calls = 0

    async def refuse() -> None:
        nonlocal calls
        calls += 1
        raise NOT_FOUND()

    for _ in range(2):
        with pytest.raises(MallError):
            await idempotency.run("m1", "k", "fp", refuse)
    assert calls == 1

    async def crash() -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("boom")

    for _ in range(2):
        with pytest.raises(RuntimeError):
            await idempotency.run("m1", "k2", "fp", crash)
    assert calls == 3  # a crash releases the key so a retry runs again


async def test_rate_limit_window() -> None:
    for _ in range(3):
        await ratelimit.hit("t", 3, 60)
    with pytest.raises(MallError) as exc:
        await ratelimit.hit("t", 3, 60)
    assert exc.value.code == "RATE_LIMITED"
    assert 0 < exc.value.params["retry_after"] <= 60
    assert await ratelimit.over_limit("t", 3)
    await ratelimit.reset("t")
    assert not await ratelimit.over_limit("t", 3)


async def test_job_lease_runs_once_across_workers() -> None:
    ran = 0

    async def run() -> None:
        nonlocal ran
        ran += 1

    job = jobs.Job("test-lease", 60, run)
    outcomes = await asyncio.gather(*(jobs.run_job_once(job) for _ in range(5)))
    assert outcomes.count(True) == 1 and ran == 1
    assert await get_redis().ttl("job:lease:test-lease") > 0


@pytest.mark.clock
@pytest.mark.nodb
def test_clock_business_day_is_shanghai() -> None:
    clock.set_now(datetime(2026, 11, 30, 16, 30, tzinfo=UTC))  # 00:30 on 1 Dec in Shanghai
    assert clock.today().isoformat() == "2026-12-01"
    clock.advance(timedelta(hours=-1))
    assert clock.today().isoformat() == "2026-11-30"
    clock.reset()
    with pytest.raises(ValueError):
        clock.set_now(datetime(2026, 1, 1))


@pytest.mark.nodb
def test_money_helpers() -> None:
    assert fmt_yuan(990) == "¥9.90"
    assert fmt_yuan(-5) == "-¥0.05"
    assert apply_rate(999, 9, 10) == 899  # 899.1 -> 899
    assert apply_rate(995, 1, 2) == 498  # 497.5 rounds half up
