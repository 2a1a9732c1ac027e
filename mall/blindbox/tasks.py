"""Blind-box jobs: settle draws a crashed request left in flight, and prove Redis
stock agrees with the draw log (`mall check blindbox`)."""

from __future__ import annotations

import logging

from mall.blindbox import service
from mall.config import get_settings
from mall.kit.checks import CheckFn, CheckReport
from mall.kit.jobs import Job

log = logging.getLogger("mall.blindbox")


async def check_blindbox() -> CheckReport:
    """For every limited prize: Redis stock + recorded draws + unrecorded in-flight
    draws == units allotted (initial stock plus audited adjustments)."""
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


async def _sweep() -> None:
    settled = await service.sweep_in_flight()
    if settled:
        log.warning("settled %s blind-box draws left in flight", settled)


async def _reconcile() -> None:
    # republish every series first, so a publish lost to a Redis hiccup heals itself
    for series_id in await service.series_ids():
        await service.warm(series_id)
    await service.reconcile(repair=True)  # a drift seen on two runs in a row is repaired
    report = await check_blindbox()
    if not report.ok:
        log.error("blind-box reconciliation failed:\n%s", "\n".join(report.lines))


JOBS: list[Job] = [
    Job("blindbox.sweep_in_flight", get_settings().blindbox_sweep_interval_seconds, _sweep),
    Job("blindbox.reconcile", get_settings().blindbox_reconcile_interval_seconds, _reconcile),
]

CHECKS: dict[str, CheckFn] = {"blindbox": check_blindbox}
