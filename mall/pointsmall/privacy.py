"""What the points mall holds about a member (see `mall.members.privacy`): redemptions.
They stay (points ledger); a gift still waiting for shipment blocks deletion (its
address is needed); on deletion each redemption's address snapshot loses the person."""

from __future__ import annotations

from mall.addresses.privacy import anonymised_snapshot
from mall.errors import MallError
from mall.members.privacy import UNFINISHED_REDEMPTIONS, Section
from mall.pointsmall.models import PointsMallRedemption

SECTIONS = [
    Section("points_mall_redemptions", PointsMallRedemption, exclude=("spend_key", "cancelled_by"))
]


async def blockers(member_id: int) -> list[MallError]:
    waiting = await PointsMallRedemption.filter(
        member_id=member_id, status="awaiting_shipment"
    ).count()
    return [UNFINISHED_REDEMPTIONS(count=waiting)] if waiting else []


async def erase(member_id: int) -> dict[str, int]:
    changed = 0
    for redemption_id, address in await PointsMallRedemption.filter(
        member_id=member_id, address__isnull=False
    ).values_list("id", "address"):
        cleaned = anonymised_snapshot(address)
        if cleaned != address:
            await PointsMallRedemption.filter(id=redemption_id).update(address=cleaned)
            changed += 1
    return {"redemption_addresses_anonymised": changed}
