"""Checkout and the member's orders."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from mall.deps import CurrentMember, IdempotencyKey
from mall.kit import idempotency
from mall.kit.bounds import Cursor, Id, Limit
from mall.orders import service
from mall.orders.models import STATUSES
from mall.orders.schemas import (
    CancelIn,
    CheckoutBreakdown,
    OrderIn,
    OrderOut,
    OrderPage,
    PreviewIn,
    RefundIn,
)

router = APIRouter(prefix="/api/v1", tags=["orders"])

_STATUS_PATTERN = "^(" + "|".join(STATUSES) + ")$"


@router.post("/orders/preview", response_model=CheckoutBreakdown)
async def preview(body: PreviewIn, member: CurrentMember) -> CheckoutBreakdown:
    """What this cart costs today, step by step (list, member price, coupon, points,
    shipping, amount due, then wallet and cash) and line by line, with each coupon the
    member holds and why it is usable or not (`coupons[].reason`). `coupon_error` says why
    the chosen coupon was not applied. Nothing is reserved."""
    return await service.preview(
        member,
        [(i.sku_id, i.quantity) for i in body.items],
        coupon_id=body.coupon_id,
        points=body.points,
        delivery=body.delivery,
        use_wallet=body.use_wallet,
    )


@router.post(
    "/orders",
    response_model=OrderOut,
    status_code=201,
    responses={
        409: {
            "description": "ORDER_OUT_OF_STOCK, ORDER_COUPON_NOT_USABLE, NOT_ENOUGH_POINTS, "
            "WALLET_INSUFFICIENT, ORDER_ITEM_UNAVAILABLE; nothing is reserved or spent"
        },
        422: {"description": "ORDER_ADDRESS_REQUIRED, ORDER_DELIVERY_UNAVAILABLE"},
    },
)
async def place_order(
    body: OrderIn, member: CurrentMember, idempotency_key: IdempotencyKey = None
) -> Any:
    """Place the order: stock is reserved, the coupon locked, the points held and the
    wallet part paid, all or nothing. Nothing left to pay: the order is `paid` at once.
    Otherwise it is `pending_payment` until `pay_deadline`, and `payment` holds the
    `wx.requestPayment` parameters (if WeChat Pay could not be reached, `payment_error`
    says so: call `POST /orders/{id}/pay`). Send an `Idempotency-Key`: a retry returns
    the same order."""

    async def work() -> OrderOut:
        order = await service.place_order(member, body, idempotency_key)
        return await service.order_out(order)

    return await idempotency.run(
        f"orders.create:{member.id}",
        idempotency_key,
        idempotency.fingerprint(body.model_dump()),
        work,
    )


@router.get("/orders", response_model=OrderPage)
async def list_orders(
    member: CurrentMember,
    status: str | None = Query(default=None, pattern=_STATUS_PATTERN),
    cursor: Cursor | None = None,
    size: Limit = 20,
) -> OrderPage:
    """The member's orders, newest first."""
    items, next_cursor = await service.list_orders(member.id, status, cursor, size)
    return OrderPage(items=items, next_cursor=next_cursor)


@router.get("/orders/{order_id}", response_model=OrderOut)
async def get_order(order_id: Id, member: CurrentMember) -> OrderOut:
    """One of the member's orders with its price breakdown, lines and refunds."""
    return await service.order_out(await service.own_order(member.id, order_id))


@router.post("/orders/{order_id}/pay", response_model=OrderOut)
async def pay(order_id: Id, member: CurrentMember) -> OrderOut:
    """The `wx.requestPayment` parameters of an unpaid order (created again if the first
    attempt failed). ORDER_PAYMENT_EXPIRED after the deadline."""
    return await service.order_out(await service.pay_order(member, order_id))


@router.post("/orders/{order_id}/cancel", response_model=OrderOut)
async def cancel(
    order_id: Id,
    member: CurrentMember,
    body: CancelIn | None = None,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Cancel before shipping. Unpaid: stock, coupon, points and wallet come back.
    Paid: refunded in full (cash to WeChat Pay, stored value to the wallet, points back,
    the coupon back while still valid)."""
    reason = body.reason if body else ""

    async def work() -> OrderOut:
        order = await service.cancel(
            order_id,
            reason=reason,
            member_id=member.id,
            request_key=f"member:{member.id}:{idempotency_key}" if idempotency_key else None,
        )
        return await service.order_out(order)

    return await idempotency.run(
        f"orders.cancel:{member.id}",
        idempotency_key,
        idempotency.fingerprint(order_id, reason),
        work,
    )


@router.post("/orders/{order_id}/refund", response_model=OrderOut)
async def refund(
    order_id: Id, body: RefundIn, member: CurrentMember, idempotency_key: IdempotencyKey = None
) -> Any:
    """Refund lines of a paid order before it ships (`lines` omitted: everything left).
    Each line gives back its share of what was paid and of the points; the coupon comes
    back (while valid) once the whole order is refunded. After shipping, ask the shop."""
    lines = [(ln.line_id, ln.quantity) for ln in body.lines] if body.lines is not None else None

    async def work() -> OrderOut:
        done = await service.refund(
            order_id,
            lines,
            reason=body.reason,
            member_id=member.id,
            request_key=f"member:{member.id}:{idempotency_key}" if idempotency_key else None,
        )
        return await service.order_out(await service.get_order(done.order_id))

    return await idempotency.run(
        f"orders.refund:{member.id}",
        idempotency_key,
        idempotency.fingerprint(order_id, body.model_dump()),
        work,
    )


@router.post("/orders/{order_id}/complete", response_model=OrderOut)
async def complete(order_id: Id, member: CurrentMember) -> OrderOut:
    """Confirm receipt of a shipped order; it completes and earns order-to-points."""
    return await service.order_out(await service.complete(order_id, member_id=member.id))
