"""`mall check referral`: the commission ledger adds up."""

from __future__ import annotations

from typing import Any

from tortoise.functions import Sum

from mall.kit.checks import CheckReport
from mall.referral.models import CommissionEntry


async def check_referral() -> CheckReport:
    """Per order: net commission and net base are never negative, and every reversal has
    the grant it reverses."""
    report = CheckReport("referral")
    rows: list[dict[str, Any]] = (
        await CommissionEntry.all()
        .annotate(amount=Sum("amount_fen"), base=Sum("base_fen"))
        .group_by("order_id")
        .values("order_id", "amount", "base")
    )
    granted = set(
        await CommissionEntry.filter(event="completed").values_list("order_id", flat=True)
    )
    for r in rows:
        order_id, amount, base = int(r["order_id"]), int(r["amount"] or 0), int(r["base"] or 0)
        if amount < 0 or base < 0:
            report.fail(f"order {order_id}: net commission={amount} net base={base}")
        if order_id not in granted:
            report.fail(f"order {order_id}: reversed but never granted")
    report.lines.append(f"{len(rows)} orders with commission checked")
    return report


CHECKS = {"referral": check_referral}
