"""Paying a win: a `pending_payment` reservation becomes a mall order (`Order.source` =
"seckill") paid like any order — wallet and/or WeChat Pay (JSAPI prepay expiring at the
reservation's deadline), the same breakdown, notification, shipping and refunds.

The unit stays the sale item's: the order takes no catalog stock. Taking the win to
payment is a compare-and-set on the reservation (still pending, unclaimed, before its
deadline) inside the order's transaction; from then on the order's close job owns the
deadline and expires the win if it closes unpaid (see `winners.py`)."""

from __future__ import annotations

from mall.errors import ErrorCode
from mall.i18n import _
from mall.kit import clock
from mall.members.models import Member
from mall.orders import service as orders_service
from mall.redis import get_redis
from mall.seckill.attempt import item_of_reservation
from mall.seckill.models import OrderStatus, SeckillItem, SeckillOrder
from mall.seckill.schemas import WinPayIn
from mall.seckill.stock import key
from mall.seckill.winners import RESERVATION_NOT_FOUND, SECKILL_ORDER_NOT_PAYABLE

SECKILL_WIN_NOT_READY = ErrorCode(
    "SECKILL_WIN_NOT_READY", 409, _("Your win is still being recorded; try again in a moment")
)


async def _own_win(member_id: int, reservation_id: str) -> SeckillOrder:
    win = await SeckillOrder.get_or_none(reservation_id=reservation_id)
    if win is not None:
        if win.member_id != member_id:
            raise RESERVATION_NOT_FOUND()
        return win
    item_id = item_of_reservation(reservation_id)
    if item_id is not None:
        owner = await get_redis().hget(key(item_id, "res"), reservation_id)
        if owner is not None and int(owner) == member_id:
            raise SECKILL_WIN_NOT_READY()  # won, not persisted by the consumer yet
    raise RESERVATION_NOT_FOUND()


async def pay_win(member: Member, reservation_id: str, body: WinPayIn) -> orders_service.Order:
    """The order paying this win, created once (a retry returns it, with fresh payment
    parameters if WeChat Pay could not be reached before)."""
    win = await _own_win(member.id, reservation_id)
    if win.mall_order_id is not None:
        order = await orders_service.get_order(win.mall_order_id)
        if order.status in (
            orders_service.CANCELLED,
            orders_service.CLOSED,
        ):  # closed unpaid: the win expired with it
            raise SECKILL_ORDER_NOT_PAYABLE(status=win.status.value)
        if order.status == orders_service.PENDING_PAYMENT and order.prepay is None:
            order = await orders_service.pay_order(member, order.id)
        return order
    if win.status != OrderStatus.PENDING_PAYMENT:
        raise SECKILL_ORDER_NOT_PAYABLE(status=win.status.value)
    item = await SeckillItem.get(id=win.item_id)

    async def claim(order_id: int) -> None:
        moved = await SeckillOrder.filter(
            id=win.id,
            status=OrderStatus.PENDING_PAYMENT,
            mall_order_id__isnull=True,
            pay_deadline__gt=clock.now(),
        ).update(mall_order_id=order_id)
        if not moved:
            fresh = await SeckillOrder.get(id=win.id)
            if fresh.status == OrderStatus.PENDING_PAYMENT and fresh.mall_order_id is None:
                raise orders_service.PAYMENT_EXPIRED()
            raise SECKILL_ORDER_NOT_PAYABLE(status=fresh.status.value)

    return await orders_service.place_held_order(
        member,
        orders_service.HeldUnit(
            source=orders_service.SECKILL,
            ref=win.reservation_id,
            name=item.title,
            product_id=item.product_id or 0,
            price_fen=win.cash_price_fen,
            pay_deadline=win.pay_deadline,  # type: ignore[arg-type]  # set on cash wins
            claim=claim,
        ),
        delivery=body.delivery,
        address_id=body.address_id,
        use_wallet=body.use_wallet,
    )
