"""Blind-box jobs, the draw-stream consumer, `mall check blindbox` and `mall drill
blindbox`."""

from __future__ import annotations

import asyncio
import logging

from mall.blindbox import service
from mall.config import get_settings
from mall.kit.checks import CheckFn, CheckReport
from mall.kit.jobs import Consumer, Job

log = logging.getLogger("mall.blindbox")


async def run_consumer(stop: asyncio.Event) -> None:
    """Persist draws until `stop`; a unique consumer name per process, so a dead one's
    pending entries are claimed by the others after the idle time."""
    await service.run_consumer(stop)


async def check_blindbox() -> CheckReport:
    """For every limited prize: Redis stock + confirmed draws + stream backlog +
    give-backs due == units allotted (initial stock plus audited adjustments)."""
    report = CheckReport("blindbox")
    results = await service.reconcile()
    for result in results:
        for agrees, line in result.lines:
            if agrees:
                report.lines.append(line)
            else:
                report.fail(line)
    report.lines.append(f"{len(results)} series checked")
    return report


async def _give_backs() -> None:
    finished = await service.finish_give_backs()
    if finished:
        log.warning("finished %s blind-box give-backs a crash left undone", finished)


async def _reconcile() -> None:
    # republish every series first, so a publish lost to a Redis hiccup heals itself
    for series_id in await service.series_ids():
        await service.warm(series_id)
    await service.reconcile(repair=True)  # a drift seen on two runs in a row is repaired
    report = await check_blindbox()
    if not report.ok:
        log.error("blind-box reconciliation failed:\n%s", "\n".join(report.lines))


async def _drill(args: list[str]) -> int:
    from mall.blindbox.drill import main

    return await main(args)


JOBS: list[Job] = [
    Job("blindbox.give_backs", get_settings().blindbox_give_back_interval_seconds, _give_backs),
    Job("blindbox.reconcile", get_settings().blindbox_reconcile_interval_seconds, _reconcile),
]
CONSUMERS = [Consumer("blindbox.draws", run_consumer)]
CHECKS: dict[str, CheckFn] = {"blindbox": check_blindbox}
DRILLS = {"blindbox": _drill}
