"""What segments hold about a member (see `mall.members.privacy`): the auto tags derived
from the member's data (profiling: deleted with the account, and the auto-tag job skips
deleted accounts) and the campaigns the member was part of (kept: campaign figures)."""

from __future__ import annotations

from mall.members.privacy import Section
from mall.segments.models import CampaignRecipient, MemberAutoTag

SECTIONS = [
    Section("auto_tags", MemberAutoTag),
    Section("campaigns_received", CampaignRecipient),
]


async def erase(member_id: int) -> dict[str, int]:
    return {"auto_tags_deleted": await MemberAutoTag.filter(member_id=member_id).delete()}
