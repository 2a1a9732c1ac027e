"""Background work: periodic jobs and long-running consumers.

Each domain's `tasks.py` may define `JOBS: list[Job]` and `CONSUMERS: list[Consumer]`.
`mall worker` runs them; `mall serve` runs them in-process too unless disabled.
A periodic job takes a Redis lease per run so several workers never run it twice."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from mall.domains import domain_modules
from mall.redis import get_redis

log = logging.getLogger("mall.jobs")

# Backoff after a failure: first delay, doubled per failure, capped. A consumer that
# ran this long without failing starts again at the first delay.
RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 5.0
CRASH_MAX_SECONDS = 60.0
STABLE_SECONDS = 30.0


@dataclass(frozen=True)
class Job:
    name: str
    interval_seconds: float
    run: Callable[[], Awaitable[object]]


@dataclass(frozen=True)
class Consumer:
    """A coroutine that runs until `stop` is set (e.g. a stream consumer group)."""

    name: str
    run: Callable[[asyncio.Event], Awaitable[None]]


def all_jobs() -> list[Job]:
    return [job for module in domain_modules("tasks") for job in getattr(module, "JOBS", [])]


def all_consumers() -> list[Consumer]:
    return [c for module in domain_modules("tasks") for c in getattr(module, "CONSUMERS", [])]


async def run_job_once(job: Job) -> bool:
    """Run `job` if no other worker holds its lease; True if it ran."""
    lease = max(int(job.interval_seconds * 0.9), 1)
    if not await get_redis().set(f"job:lease:{job.name}", "1", nx=True, ex=lease):
        return False
    await job.run()
    return True


def unreachable(exc: BaseException) -> bool:
    """Redis cannot be reached (down, restarting, loading its AOF): an outage, not a bug."""
    return isinstance(exc, RedisConnectionError | RedisTimeoutError)


class Outage:
    """One per process: the first loop that meets an unreachable Redis logs one line;
    every other loop and every retry stays quiet until Redis answers again (one line)."""

    def __init__(self) -> None:
        self.since: float | None = None

    def failed(self, where: str, exc: BaseException) -> None:
        if self.since is None:
            self.since = time.monotonic()
            log.warning(
                "Redis unreachable (%s: %s) in %s; background jobs retry quietly with backoff",
                type(exc).__name__,
                exc,
                where,
            )

    def recovered(self) -> None:
        if self.since is not None:
            log.info(
                "Redis reachable again after %.1fs; background jobs resumed",
                time.monotonic() - self.since,
            )
            self.since = None

    async def probe(self) -> bool:
        """During an outage: True once Redis answers (and the outage is over)."""
        if self.since is None:
            return True
        try:
            await get_redis().ping()
        except Exception as exc:
            if unreachable(exc):
                return False
            raise
        self.recovered()
        return True


outage = Outage()


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


async def _loop(job: Job, stop: asyncio.Event) -> None:
    retry = RETRY_FIRST_SECONDS
    while not stop.is_set():
        wait = job.interval_seconds
        try:
            if await outage.probe():
                await run_job_once(job)
                retry = RETRY_FIRST_SECONDS
            else:
                wait, retry = min(retry, wait), min(retry * 2, RETRY_MAX_SECONDS)
        except Exception as exc:
            if unreachable(exc):
                outage.failed(f"job {job.name}", exc)
                # try again soon (not a whole interval later), quietly
                wait, retry = min(retry, wait), min(retry * 2, RETRY_MAX_SECONDS)
            else:
                log.exception("job %s failed", job.name)
        await _sleep(stop, wait)


async def _consume(consumer: Consumer, stop: asyncio.Event) -> None:
    retry = RETRY_FIRST_SECONDS
    while not stop.is_set():
        started = time.monotonic()
        try:
            if await outage.probe():
                await consumer.run(stop)
                continue
            wait, retry = retry, min(retry * 2, RETRY_MAX_SECONDS)
        except Exception as exc:
            if time.monotonic() - started >= STABLE_SECONDS:
                retry = RETRY_FIRST_SECONDS
            if unreachable(exc):
                outage.failed(f"consumer {consumer.name}", exc)
                wait, retry = retry, min(retry * 2, RETRY_MAX_SECONDS)
            else:
                wait, retry = retry, min(retry * 2, CRASH_MAX_SECONDS)
                log.exception("consumer %s crashed; restarting in %.1fs", consumer.name, wait)
        await _sleep(stop, wait)


class Runner:
    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for job in all_jobs():
            self.tasks.append(asyncio.create_task(_loop(job, self.stop), name=f"job:{job.name}"))
        for consumer in all_consumers():
            self.tasks.append(
                asyncio.create_task(_consume(consumer, self.stop), name=f"consumer:{consumer.name}")
            )

    async def close(self) -> None:
        self.stop.set()
        if self.tasks:
            _done, pending = await asyncio.wait(self.tasks, timeout=10)
            for task in pending:
                task.cancel()
        self.tasks.clear()
