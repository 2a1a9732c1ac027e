"""What the coupons domain holds about a member (see `mall.members.privacy`). Coupons
are kept as they are on deletion (used ones are part of orders; usable ones can no
longer be used by anyone and expire as usual)."""

from __future__ import annotations

from mall.coupons.models import Coupon, GiftPackIssue
from mall.kit import clock
from mall.members.privacy import Section

SECTIONS = [
    Section("coupons", Coupon, exclude=("claim_id",)),
    Section("gift_packs_received", GiftPackIssue, exclude=("issue_key", "staff_id")),
]


async def forfeits(member_id: int) -> dict[str, int]:
    usable = await Coupon.filter(
        member_id=member_id, status="usable", expires_at__gt=clock.now()
    ).count()
    return {"usable_coupons": usable}
