"""Background work: periodic jobs and long-running consumers.

Each domain's `tasks.py` may define `JOBS: list[Job]` and `CONSUMERS: list[Consumer]`
(`mall.domains` collects them). `mall worker` runs them; `mall serve` runs them in-process
too unless disabled.
A periodic job takes a Redis lease per run so several workers never run it twice."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mall.redis import get_redis

log = logging.getLogger("mall.jobs")


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


async def run_job_once(job: Job) -> bool:
    """Run `job` if no other worker holds its lease; True if it ran."""
    lease = max(int(job.interval_seconds * 0.9), 1)
    if not await get_redis().set(f"job:lease:{job.name}", "1", nx=True, ex=lease):
        return False
    await job.run()
    return True


async def _loop(job: Job, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await run_job_once(job)
        except Exception:
            log.exception("job %s failed", job.name)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=job.interval_seconds)


async def _consume(consumer: Consumer, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await consumer.run(stop)
        except Exception:
            log.exception("consumer %s crashed; restarting", consumer.name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)


class Runner:
    """Runs the given jobs and consumers as tasks until `close()`."""

    def __init__(self, jobs: list[Job], consumers: list[Consumer]) -> None:
        self.jobs = jobs
        self.consumers = consumers
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for job in self.jobs:
            self.tasks.append(asyncio.create_task(_loop(job, self.stop), name=f"job:{job.name}"))
        for consumer in self.consumers:
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
