"""Read-only figures about stored value, for the ops dashboard."""

from __future__ import annotations

from datetime import datetime

from tortoise.functions import Sum

from mall.wallet.models import WalletEntry


async def movement_since(moment: datetime) -> int:
    """Net principal + bonus moved in the (append-only) ledger from `moment` on."""
    later = (
        await WalletEntry.filter(created_at__gte=moment)
        .annotate(p=Sum("principal_delta"), b=Sum("bonus_delta"))
        .values("p", "b")
    )
    return int(later[0]["p"] or 0) + int(later[0]["b"] or 0) if later else 0
