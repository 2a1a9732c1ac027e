"""The redemption consumer, and the reconciler that proves Redis and the database agree."""

from __future__ import annotations

import logging

from mall.config import get_settings
from mall.kit.checks import CheckReport
from mall.kit.jobs import Consumer, Job
from mall.pointsmall import cash, persist, service

log = logging.getLogger("mall.pointsmall")


async def reconcile_job() -> None:
    result = await service.reconcile()
    if result.repaired or result.mismatches:
        log.info(
            "pointsmall reconcile: repaired %s, mismatches %s", result.repaired, result.mismatches
        )


async def check_pointsmall() -> CheckReport:
    """For every item: Redis stock + redeemed + pending reservations == total stock, and
    the database's stock == total - redeemed."""
    report = CheckReport("pointsmall")
    items = 0
    for item_id in await service.all_item_ids():
        items += 1
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
    ),
    Job(
        "pointsmall.expire_unpaid",
        get_settings().pointsmall_expire_interval_seconds,
        cash.expire_unpaid,
    ),
]


async def _drill(args: list[str]) -> int:
    from mall.pointsmall.drill import main

    return await main(args)


CONSUMERS = [Consumer("pointsmall.redemptions", persist.run_consumer)]
CHECKS = {"pointsmall": check_pointsmall}
DRILLS = {"pointsmall": _drill}
