"""Paying the cash part of a points + cash redemption: a `pending_payment` redemption
becomes a mall order (`Order.source` = "pointsmall") for its cash part, paid like any
order — wallet and/or WeChat Pay (JSAPI prepay expiring at the redemption's deadline),
the same breakdown and notification. The order takes no catalog stock (the units are the
item's) and ships nothing (a gift ships as a redemption, to the address chosen at
redemption).

Taking the redemption to payment is a compare-and-set (still pending, no order, before
its deadline) inside the order's transaction; from then on the order's close job owns
the deadline (see `cash.py`)."""

from __future__ import annotations

from mall.kit import clock
from mall.members.models import Member
from mall.orders import service as orders_service
from mall.pointsmall.cash import PENDING_PAYMENT, REDEMPTION_NOT_PAYABLE, REDEMPTION_NOT_READY
from mall.pointsmall.models import PointsMallRedemption
from mall.pointsmall.redeem import REDEMPTION_NOT_FOUND, reservation
from mall.pointsmall.schemas import RedemptionPayIn


async def _own(member_id: int, reservation_id: str) -> PointsMallRedemption:
    found = await PointsMallRedemption.get_or_none(reservation_id=reservation_id)
    if found is not None:
        if found.member_id != member_id:
            raise REDEMPTION_NOT_FOUND()
        return found
    # decided in Redis, not written yet (REDEMPTION_NOT_FOUND if it is not the member's)
    await reservation(member_id, reservation_id)
    found = await PointsMallRedemption.get_or_none(reservation_id=reservation_id)
    if found is None or found.member_id != member_id:
        raise REDEMPTION_NOT_READY()
    return found


async def pay(member: Member, reservation_id: str, body: RedemptionPayIn) -> orders_service.Order:
    """The order paying this redemption's cash part, created once (a retry returns it,
    with fresh payment parameters if WeChat Pay could not be reached before)."""
    r = await _own(member.id, reservation_id)
    if r.order_id is not None:
        order = await orders_service.get_order(r.order_id)
        if order.status in (orders_service.CANCELLED, orders_service.CLOSED):
            raise REDEMPTION_NOT_PAYABLE(status=r.status)  # closed unpaid: released with it
        if order.status == orders_service.PENDING_PAYMENT and order.prepay is None:
            order = await orders_service.pay_order(member, order.id)
        return order
    if r.status != PENDING_PAYMENT or r.cash_fen <= 0:
        raise REDEMPTION_NOT_PAYABLE(status=r.status)

    async def claim(order_id: int) -> None:
        moved = await PointsMallRedemption.filter(
            id=r.id, status=PENDING_PAYMENT, order_id__isnull=True, pay_deadline__gt=clock.now()
        ).update(order_id=order_id)
        if not moved:
            fresh = await PointsMallRedemption.get(id=r.id)
            if fresh.status == PENDING_PAYMENT and fresh.order_id is None:
                raise orders_service.PAYMENT_EXPIRED()
            raise REDEMPTION_NOT_PAYABLE(status=fresh.status)

    return await orders_service.place_held_order(
        member,
        orders_service.HeldUnit(
            source=orders_service.POINTSMALL,
            ref=r.reservation_id,
            name=r.item_name,
            product_id=0,
            price_fen=r.cash_fen,
            pay_deadline=r.pay_deadline,
            claim=claim,
        ),
        delivery="pickup",  # nothing ships with the order: the redemption ships a gift
        address_id=None,
        use_wallet=body.use_wallet,
    )
