"""Read-only figures about marketplace orders, for the ops dashboard."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from tortoise.functions import Count

from mall.points.models import ExternalOrder

MARKETPLACE_PURCHASED = ("paid", "shipped", "completed")


async def bound_purchases_per_member(since: datetime, until: datetime) -> Counter[int]:
    """Marketplace orders bound to a member, per member, paid in [since, until)."""
    per_member: Counter[int] = Counter()
    rows = (
        await ExternalOrder.filter(
            member_id__isnull=False,
            status__in=MARKETPLACE_PURCHASED,
            paid_at__gte=since,
            paid_at__lt=until,
        )
        .annotate(n=Count("id"))
        .group_by("member_id")
        .values_list("member_id", "n")
    )
    for member_id, n in rows:
        per_member[int(member_id)] += int(n)
    return per_member
