"""Shipping an item prize: the member names an address (or pickup) and the prize becomes
a mall order of 0 fen (`Order.source` = "blindbox"), paid when placed, which ops ship
with a carrier and tracking number like any order. Asking is a compare-and-set on the
draw (an item prize still pending) inside the order's transaction, so a prize ships once;
cancelling that order before it ships lets the member ask again."""

from __future__ import annotations

from mall.blindbox.models import BlindBoxDraw, BlindBoxPrize
from mall.blindbox.schemas import PrizeShipIn
from mall.errors import ErrorCode
from mall.i18n import _
from mall.members.models import Member
from mall.orders import service as orders_service

DRAW_NOT_FOUND = ErrorCode("BLINDBOX_DRAW_NOT_FOUND", 404, _("This draw does not exist"))
PRIZE_NOT_SHIPPABLE = ErrorCode(
    "BLINDBOX_PRIZE_NOT_SHIPPABLE", 409, _("This prize is {status} and cannot be shipped")
)


async def ship_prize(member: Member, draw_id: str, body: PrizeShipIn) -> orders_service.Order:
    """The order shipping this prize, created once (asking again returns it)."""
    row = await BlindBoxDraw.get_or_none(draw_id=draw_id, member_id=member.id)
    if row is None:
        raise DRAW_NOT_FOUND()
    if row.mall_order_id is not None:
        return await orders_service.get_order(row.mall_order_id)
    prize = await BlindBoxPrize.get(id=row.prize_id)
    if prize.kind != "item" or row.fulfilment_status != "pending":
        raise PRIZE_NOT_SHIPPABLE(status=row.fulfilment_status)

    async def claim(order_id: int) -> None:
        moved = await BlindBoxDraw.filter(
            id=row.id, fulfilment_status="pending", mall_order_id__isnull=True
        ).update(fulfilment_status="ordered", mall_order_id=order_id)
        if not moved:
            fresh = await BlindBoxDraw.get(id=row.id)
            raise PRIZE_NOT_SHIPPABLE(status=fresh.fulfilment_status)

    return await orders_service.place_held_order(
        member,
        orders_service.HeldUnit(
            source=orders_service.BLINDBOX,
            ref=row.draw_id,
            name=row.prize_name,
            product_id=0,
            price_fen=0,
            pay_deadline=None,
            claim=claim,
        ),
        delivery=body.delivery,
        address_id=body.address_id,
        use_wallet=False,
    )
