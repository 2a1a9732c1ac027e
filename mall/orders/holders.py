"""Orders for a unit held by another domain (`Order.source`): a flash-sale win is the
seckill item's unit, so its order takes no catalog stock; instead its holder hears when
the order is paid, closes unpaid, or is refunded in full. Each hook runs inside the
order's own transaction except `after_released`, which runs after its commit.

The holders are lower domains (see `mall.domains`), called through their services."""

from __future__ import annotations

import logging

from mall.orders.models import Order
from mall.seckill import service as seckill_service

log = logging.getLogger("mall.orders")

SECKILL = "seckill"
SOURCES = (SECKILL,)


def source_ref(source: str, ref: str) -> str:
    return f"{source}:{ref}"


def _ref(order: Order) -> str:
    return (order.source_ref or "").split(":", 1)[-1]


def takes_catalog_stock(order: Order) -> bool:
    return not order.source


async def on_paid(order: Order) -> None:
    if order.source == SECKILL:
        await seckill_service.mark_paid(_ref(order))


async def on_released(order: Order, reason: str) -> None:
    """The order closed or was cancelled unpaid: the held unit expires."""
    if order.source == SECKILL:
        await seckill_service.expire_held(_ref(order), reason)


async def after_released(order: Order) -> None:
    """After the release's commit: the unit back on sale. Best effort: the seckill expiry
    job finishes give-backs left undone."""
    if order.source != SECKILL:
        return
    try:
        await seckill_service.give_back_if_due(_ref(order))
    except Exception:
        log.exception("order %s: seckill unit not handed back yet", order.number)


async def on_refunded(order: Order) -> None:
    """Everything of the paid order came back."""
    if order.source == SECKILL:
        await seckill_service.refund_held(_ref(order))
