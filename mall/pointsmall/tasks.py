"""The reconciler: returns expired reservations and proves Redis and the database agree."""

from __future__ import annotations

import logging

from mall.config import get_settings
from mall.kit.checks import CheckReport
from mall.kit.jobs import Job
from mall.pointsmall import service

log = logging.getLogger("mall.pointsmall")


async def reconcile_job() -> None:
    result = await service.reconcile()
    if result.returned or result.confirmed or result.repaired or result.mismatches:
        log.info(
            "pointsmall reconcile: returned %s, confirmed %s, repaired %s, mismatches %s",
            result.returned,
            result.confirmed,
            result.repaired,
            result.mismatches,
        )


async def check_pointsmall() -> CheckReport:
    """For every item: Redis stock + redeemed + pending reservations == total stock, and
    the database's stock == total - redeemed. Returns expired reservations first."""
    report = CheckReport("pointsmall")
    items = 0
    for item_id in await service.all_item_ids():
        items += 1
        returned, _confirmed = await service.return_expired(item_id)
        if returned:
            report.lines.append(f"item {item_id}: returned {returned} expired reservations")
        balance = await service.item_balance(item_id)
        if not balance.db_agrees:
            report.fail(
                f"item {item_id}: database stock {balance.db_stock} but total {balance.total}"
                f" - redeemed {balance.redeemed} = {balance.total - balance.redeemed}"
            )
        if not balance.warm:
            continue  # loaded from the database on next use
        if not balance.stable:
            report.lines.append(f"item {item_id}: busy, no stable reading; run again")
        elif not balance.redis_agrees:
            report.fail(balance.describe())
    report.lines.append(f"{items} items checked")
    return report


JOBS = [
    Job(
        "pointsmall.reconcile",
        get_settings().pointsmall_reconcile_interval_seconds,
        reconcile_job,
    )
]
CHECKS = {"pointsmall": check_pointsmall}
