"""Orders for a unit held by another domain (`Order.source`): a flash-sale win is the
seckill item's unit, so its order takes no catalog stock; instead its holder hears when
the order is paid, closes unpaid, or is refunded in full. Each hook runs inside the
order's own transaction except `after_released`, which runs after its commit.

The holders are lower domains (see `mall.domains`), called through their services."""

from __future__ import annotations

import logging

from mall.blindbox import service as blindbox_service
from mall.orders.models import Order
from mall.pointsmall import service as pointsmall_service
from mall.seckill import service as seckill_service

log = logging.getLogger("mall.orders")

SECKILL = "seckill"
BLINDBOX = "blindbox"  # a prize shipped by an order of 0 fen
POINTSMALL = "pointsmall"  # the cash part of a points + cash redemption
SOURCES = (SECKILL, BLINDBOX, POINTSMALL)


def source_ref(source: str, ref: str) -> str:
    return f"{source}:{ref}"


def _ref(order: Order) -> str:
    return (order.source_ref or "").split(":", 1)[-1]


def takes_catalog_stock(order: Order) -> bool:
    return not order.source


async def on_paid(order: Order) -> None:
    if order.source == SECKILL:
        await seckill_service.mark_paid(_ref(order))
    elif order.source == POINTSMALL:
        await pointsmall_service.cash_paid(_ref(order))


async def on_released(order: Order, reason: str) -> None:
    """The order closed or was cancelled unpaid: the held unit expires."""
    if order.source == SECKILL:
        await seckill_service.expire_held(_ref(order), reason)
    elif order.source == POINTSMALL:
        await pointsmall_service.cash_released(_ref(order), reason)
    elif order.source == BLINDBOX:  # never unpaid in practice (0 fen); kept symmetric
        await _prize_back(order)


async def after_released(order: Order) -> None:
    """After the release's commit: the unit back on sale. Best effort: the seckill expiry
    job finishes give-backs left undone."""
    try:
        if order.source == SECKILL:
            await seckill_service.give_back_if_due(_ref(order))
        elif order.source == POINTSMALL:
            await pointsmall_service.cash_give_back_if_due(_ref(order))
    except Exception:
        log.exception("order %s: held unit not handed back yet", order.number)


async def on_refunded(order: Order) -> None:
    """Everything of the paid order came back."""
    if order.source == SECKILL:
        await seckill_service.refund_held(_ref(order))
    elif order.source == POINTSMALL:
        await pointsmall_service.cash_refunded(_ref(order))
    elif order.source == BLINDBOX:
        await _prize_back(order)


async def _prize_back(order: Order) -> None:
    """The prize's shipping order was cancelled: the prize waits again, and the order
    frees its `source_ref` (kept readable) so the member can ask for shipping again."""
    await blindbox_service.prize_order_cancelled(_ref(order), order.id)
    await Order.filter(id=order.id).update(source_ref=f"{order.source_ref}:{order.id}")
