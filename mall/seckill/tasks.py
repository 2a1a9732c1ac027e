"""Seckill jobs, the winner-stream consumer, `mall check seckill` and `mall drill seckill`."""

from __future__ import annotations

import asyncio
import logging

from mall.kit.checks import CheckReport
from mall.kit.jobs import Consumer, Job
from mall.seckill import service, winners

log = logging.getLogger("mall.seckill")


async def run_consumer(stop: asyncio.Event) -> None:
    """Persist wins until `stop`; a unique consumer name per process, so a dead one's
    pending entries are claimed by the others after the idle time."""
    await winners.CONSUMER.run(stop)


async def check_seckill() -> CheckReport:
    report = CheckReport("seckill")
    checks = await service.reconcile()
    if not checks:
        report.lines.append("no warm items")
    for check in checks:
        if check.ok:
            report.lines.append(check.line())
        else:
            report.fail(check.line())
    return report


async def _reconcile_job() -> None:
    for check in await service.reconcile(repair=True):
        if check.ok:
            log.info("seckill reconcile %s", check.line())
        else:
            log.error("seckill reconcile MISMATCH %s", check.line())


async def _drill(args: list[str]) -> int:
    from mall.seckill.drill import main

    return await main(args)


JOBS = [
    Job("seckill.warm", 30, service.warm_upcoming),
    Job("seckill.expire_unpaid", 15, service.expire_unpaid),
    Job("seckill.reconcile", 60, _reconcile_job),
    Job("seckill.retire", 3600, service.retire_ended),
]
CONSUMERS = [Consumer("seckill.wins", run_consumer)]
CHECKS = {"seckill": check_seckill}
DRILLS = {"seckill": _drill}
