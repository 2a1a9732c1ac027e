"""Coupon jobs (expiry, daily reminders) and the `coupons` reconciliation check."""

from __future__ import annotations

from mall.coupons import service
from mall.kit.checks import CheckReport
from mall.kit.jobs import Job


async def expire_coupons() -> int:
    return await service.expire_due()


async def check_coupons() -> CheckReport:
    """For every template loaded in Redis: the issued count (total less Redis stock)
    equals the coupon rows in the database, and the per-member counts add up to it,
    each judged on a stable reading (a claim between its Lua win and its row is a
    passing difference of one)."""
    report = CheckReport("coupons")
    for check in await service.reconcile():
        if check.ok:
            report.lines.append(check.describe())
        else:
            report.fail(check.describe())
    return report


JOBS = [
    Job("coupons.expire", 600, expire_coupons),
    Job("coupons.expiry_reminders", 3600, service.daily_expiry_reminders),
]
CHECKS = {"coupons": check_coupons}
