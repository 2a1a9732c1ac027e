"""What touch holds about a member (see `mall.members.privacy`): the subscribe-message
permissions (deleted with the account, so nothing is ever sent again) and the touch
log (kept: it records what was sent, not who the member is)."""

from __future__ import annotations

from mall.members.privacy import Section
from mall.touch.models import SubscribeGrant, TouchLog

SECTIONS = [Section("subscribe_permissions", SubscribeGrant), Section("touches", TouchLog)]


async def erase(member_id: int) -> dict[str, int]:
    deleted = await SubscribeGrant.filter(member_id=member_id).delete()
    return {"subscribe_permissions_deleted": deleted}
