"""Read-only figures about mall orders, for the ops dashboard."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from tortoise.functions import Count

from mall.orders.models import Order

# mall orders that count as a purchase (paid, whatever happened after, except a full refund)
PURCHASED = ("paid", "shipped", "completed")


async def purchases_per_member(since: datetime, until: datetime) -> Counter[int]:
    """Purchases per member in [since, until), by payment time."""
    per_member: Counter[int] = Counter()
    rows = (
        await Order.filter(status__in=PURCHASED, paid_at__gte=since, paid_at__lt=until)
        .annotate(n=Count("id"))
        .group_by("member_id")
        .values_list("member_id", "n")
    )
    for member_id, n in rows:
        per_member[int(member_id)] += int(n)
    return per_member
