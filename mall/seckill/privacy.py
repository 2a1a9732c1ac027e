"""What flash sales hold about a member (see `mall.members.privacy`): the wins. They
stay; a win waiting for its cash payment counts as an unfinished order."""

from __future__ import annotations

from mall.errors import MallError
from mall.members.privacy import UNFINISHED_ORDERS, Section
from mall.seckill.models import OrderStatus, SeckillOrder

SECTIONS = [Section("flash_sale_orders", SeckillOrder)]


async def blockers(member_id: int) -> list[MallError]:
    due = await SeckillOrder.filter(member_id=member_id, status=OrderStatus.PENDING_PAYMENT).count()
    return [UNFINISHED_ORDERS(count=due)] if due else []
