"""Coupon jobs (expiry, daily reminders) and the `coupons` reconciliation check."""

from __future__ import annotations

from mall.coupons import service
from mall.coupons.models import Coupon, CouponTemplate
from mall.kit.checks import CheckReport
from mall.kit.jobs import Job


async def expire_coupons() -> int:
    return await service.expire_due()


async def check_coupons() -> CheckReport:
    """For every template loaded in Redis: the issued count equals the coupon rows in the
    database, and the per-member counts add up to it. (A claim between its Lua win and
    its row shows as a passing difference of one; run the check again to confirm.)"""
    report = CheckReport("coupons")
    for template in await CouponTemplate.all().order_by("id"):
        counts = await service.redis_counts(template.id)
        rows = await Coupon.filter(template_id=template.id).count()
        if counts is None:
            report.lines.append(f"template {template.id}: not loaded in Redis, {rows} rows")
            continue
        issued, held = counts
        if issued != rows:
            report.fail(f"template {template.id}: redis issued={issued} db rows={rows}")
        elif sum(held.values()) != issued:
            report.fail(
                f"template {template.id}: per-member counts sum={sum(held.values())} "
                f"issued={issued}"
            )
        else:
            report.lines.append(f"template {template.id}: issued={issued} ok")
    return report


JOBS = [
    Job("coupons.expire", 600, expire_coupons),
    Job("coupons.expiry_reminders", 3600, service.daily_expiry_reminders),
]
CHECKS = {"coupons": check_coupons}
