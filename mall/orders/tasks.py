"""Order jobs (close unpaid orders, complete delivered ones, resend cash refunds) and
`mall check orders`."""

from __future__ import annotations

from mall.config import get_settings
from mall.kit.checks import CheckFn, CheckReport
from mall.kit.jobs import Job
from mall.orders import service


async def check_orders() -> CheckReport:
    """Every order's money and lines add up and its give-backs match its refund records."""
    report = CheckReport("orders")
    checked, problems = await service.order_problems()
    report.lines.append(f"orders checked: {checked}")
    for problem in problems[:200]:
        report.fail(problem)
    if len(problems) > 200:
        report.fail(f"... and {len(problems) - 200} more")
    if not problems:
        report.lines.append("amounts, lines and refunds agree for every order")
    return report


JOBS: list[Job] = [
    Job("orders.close_overdue", get_settings().order_close_interval_seconds, service.close_overdue),
    Job("orders.retry_cash_refunds", 60.0, service.retry_cash_refunds),
    Job("orders.complete_delivered", 3600.0, service.complete_delivered),
]

CHECKS: dict[str, CheckFn] = {"orders": check_orders}
