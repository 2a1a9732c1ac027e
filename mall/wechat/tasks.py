"""WeChat Pay jobs: platform certificates kept fresh (certificate mode) and each day's
bills reconciled; `mall check pay [--date YYYY-MM-DD]` reconciles a day on demand."""

from __future__ import annotations

import logging
from datetime import date, timedelta

from mall import domains
from mall.config import get_settings
from mall.errors import MallError
from mall.kit import clock
from mall.kit.checks import CheckFn, CheckReport, check_day
from mall.kit.jobs import Job
from mall.wechat import certificates, pay, reconcile
from mall.wechat.models import FAILED

log = logging.getLogger("mall.wechat.tasks")


def yesterday() -> date:
    return clock.today() - timedelta(days=1)


async def reconcile_yesterday() -> bool:
    """The job: once WeChat Pay has made yesterday's bills (after `wechatpay_bill_hour`
    Shanghai time), reconcile them, once; a failed run is tried again next round.
    True when it ran."""
    if not pay.is_configured() or clock.local_now().hour < get_settings().wechatpay_bill_hour:
        return False
    day = yesterday()
    done = await reconcile.of_day(day)
    if done is not None and done.status != FAILED:
        return False
    try:
        await reconcile.run(day, domains.pay_books())
    except MallError as exc:
        log.warning("wechatpay bills of %s not reconciled yet: %s", day, exc.code)
    return True


async def check_pay() -> CheckReport:
    """WeChat Pay's trade and refund bills of a day (default yesterday) against orders and
    top-ups; every mismatch is a line (and kept for the console)."""
    report = CheckReport("pay")
    if not pay.is_configured():
        report.lines.append("WeChat Pay is not configured; nothing to reconcile")
        return report
    day = check_day.get() or yesterday()
    try:
        row = await reconcile.run(day, domains.pay_books())
    except MallError as exc:
        report.ok = False
        report.lines.append(f"FAILED {day}: bills not reconciled: {exc}")
        return report
    for mismatch in row.mismatches:
        report.fail(reconcile.Mismatch(**mismatch).line())
    report.lines.append(
        f"{day}: {row.payments} payments ({row.paid_fen} fen), {row.refunds} refunds "
        f"({row.refunded_fen} fen) at WeChat Pay; {len(row.mismatches)} mismatches"
    )
    return report


JOBS: list[Job] = [
    Job(
        "wechat.refresh_certificates",
        get_settings().wechatpay_cert_refresh_seconds,
        certificates.refresh_job,
    ),
    Job("wechat.reconcile_bills", 3600.0, reconcile_yesterday),
]
CHECKS: dict[str, CheckFn] = {"pay": check_pay}
