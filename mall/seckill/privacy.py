"""What flash sales hold about a member (see `mall.members.privacy`): the wins, the
bookings and an ops flag if there is one. Wins stay; a win waiting for its cash payment
counts as an unfinished order. Bookings go with the account (nothing to remind any
more); a flag stays, as the record of why ops turned the account away."""

from __future__ import annotations

from mall.errors import MallError
from mall.members.privacy import UNFINISHED_ORDERS, Section
from mall.seckill.models import MemberFlag, OrderStatus, SeckillBooking, SeckillOrder

SECTIONS = [
    Section("flash_sale_orders", SeckillOrder),
    Section("flash_sale_bookings", SeckillBooking),
    Section("flash_sale_flags", MemberFlag, exclude=("flagged_by",)),
]


async def blockers(member_id: int) -> list[MallError]:
    due = await SeckillOrder.filter(member_id=member_id, status=OrderStatus.PENDING_PAYMENT).count()
    return [UNFINISHED_ORDERS(count=due)] if due else []


async def erase(member_id: int) -> dict[str, int]:
    deleted = await SeckillBooking.filter(member_id=member_id).delete()
    return {"flash_sale_bookings_deleted": deleted}
