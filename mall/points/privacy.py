"""What the points domain holds about a member (see `mall.members.privacy`).

On deletion the ledger stays; the balance left is forfeited by one `adjust` entry (so
the points liability and the ledger check stay right), and the phone on the member's
bound marketplace orders is masked (the order number stays, for reconciliation)."""

from __future__ import annotations

from typing import Any

from mall.kit.masking import mask_phone
from mall.members.models import Member
from mall.members.privacy import Section
from mall.points import service
from mall.points.models import (
    ADJUST,
    ExternalOrder,
    LevelChange,
    PointsDebt,
    PointsEntry,
    PointsHold,
    PointsLot,
    SignIn,
)

SECTIONS = [
    Section("points_entries", PointsEntry, exclude=("idempotency_key",)),
    Section("points_lots", PointsLot),
    Section("points_holds", PointsHold, exclude=("idempotency_key", "closed_key")),
    Section("sign_ins", SignIn),
    Section("level_changes", LevelChange),
    Section("points_owed", PointsDebt),
    Section("bound_marketplace_orders", ExternalOrder),
]
NOT_EXPORTED = {"PointsLotUse": "internal: which lot paid which entry (no member field)"}

FORFEIT_REASON = "account deleted"


async def _balance(member_id: int) -> int:
    found: list[Any] = await Member.filter(id=member_id).values_list("points_balance", flat=True)
    return int(found[0]) if found else 0


async def forfeits(member_id: int) -> dict[str, int]:
    return {"points": max(0, await _balance(member_id))}


async def erase(member_id: int) -> dict[str, int]:
    points = await _balance(member_id)
    if points > 0:
        # the ledger core's own debit (lots consumed soonest-expiring first), as an
        # adjustment: forfeited points count as deducted, not as spent
        await service._take(
            member_id,
            points,
            service._key(f"privacy:forfeit:{member_id}"),
            kind=ADJUST,
            reason=FORFEIT_REASON,
            reference=f"member:{member_id}:deleted",
        )
    masked = 0
    for order in await ExternalOrder.filter(member_id=member_id):
        if "*" not in order.phone:
            await ExternalOrder.filter(id=order.id).update(phone=mask_phone(order.phone))
            masked += 1
    return {"points_forfeited": max(0, points), "marketplace_phones_masked": masked}
