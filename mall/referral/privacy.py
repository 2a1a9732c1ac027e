"""What referral holds about a member (see `mall.members.privacy`): the member's own
binding to a promoter and, for a member who is a promoter (KOC), that promoter and its
commission ledger. Bindings and the ledger stay (commissions are money); a promoter
account is switched off on deletion so nobody is bound to a deleted member any more.
The commission rows name the customers they came from; those ids are other members'
and are left out of the export."""

from __future__ import annotations

from mall.members.privacy import Section
from mall.referral.models import CommissionEntry, Promoter, ReferralBinding

SECTIONS = [
    Section("referral_binding", ReferralBinding, member_field="customer_id"),
    Section("promoter", Promoter, exclude=("staff_id",)),
    Section(
        "promoter_commissions",
        CommissionEntry,
        member_field="promoter__member_id",
        exclude=("customer_id", "event_key"),
    ),
]


async def erase(member_id: int) -> dict[str, int]:
    stopped = await Promoter.filter(member_id=member_id, active=True).update(active=False)
    return {"promoter_deactivated": stopped}
