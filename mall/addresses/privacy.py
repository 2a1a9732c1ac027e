"""What the addresses domain holds about a member (see `mall.members.privacy`): the
delivery addresses. Orders and redemptions keep their own snapshots, so the addresses
themselves are simply deleted with the account."""

from __future__ import annotations

from typing import Any

from mall.addresses.models import Address
from mall.members.privacy import Section

SECTIONS = [Section("addresses", Address)]


def anonymised_snapshot(snapshot: dict[str, Any] | None) -> dict[str, Any] | None:
    """An order's or redemption's copy of the address without the person: the region
    (province, city, district) stays for regional figures; name, phone and street go."""
    if not snapshot:
        return snapshot
    return {**snapshot, "name": "", "phone": "", "detail": ""}


async def erase(member_id: int) -> dict[str, int]:
    return {"addresses_deleted": await Address.filter(member_id=member_id).delete()}
