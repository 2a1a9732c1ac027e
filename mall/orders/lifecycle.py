"""Member and ops actions on an order (cancel, refund, ship, complete) and the timed jobs."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from tortoise.transactions import in_transaction

from mall.audit import service as audit_service
from mall.audit.service import Actor
from mall.config import get_settings
from mall.errors import MallError
from mall.kit import clock
from mall.orders.checkout import on_order_paid
from mall.orders.common import (
    NOT_CANCELLABLE,
    NOT_COMPLETABLE,
    NOT_SHIPPABLE,
    ORDER_CHANGED,
    ORDER_NOT_FOUND,
    TRACKING_REQUIRED,
    _earn_key,
    _ref,
    get_order,
    out_trade_no,
    own_order,
)
from mall.orders.models import (
    CANCELLED,
    CLOSED,
    COMPLETED,
    PAID,
    PENDING_PAYMENT,
    SHIPPED,
    Order,
    OrderRefund,
)
from mall.orders.refunds import _refund_paid, _release_unpaid, send_cash_refund
from mall.points import service as points_service
from mall.referral import service as referral_service
from mall.wechat import pay as wechat_pay

log = logging.getLogger("mall.orders")


async def cancel(
    order_id: int,
    *,
    reason: str = "",
    member_id: int | None = None,
    staff: Actor | None = None,
    request_key: str | None = None,
) -> Order:
    """Cancel before shipping: an unpaid order releases what it holds; a paid one is
    refunded in full (cash, wallet, points, coupon, stock)."""
    order = await (own_order(member_id, order_id) if member_id else get_order(order_id))
    if order.status == PENDING_PAYMENT:
        if await _release_unpaid(order.id, to=CANCELLED, reason=reason, staff=staff) is None:
            order = await get_order(order.id)
            if order.status != PAID:
                raise NOT_CANCELLABLE(status=order.status)
    if order.status == PAID:
        await _refund_paid(
            order.id,
            None,
            kind="cancel",
            allowed=(PAID,),
            reason=reason,
            restock=True,
            request_key=request_key,
            staff=staff,
            member_id=member_id,
        )
    elif order.status != PENDING_PAYMENT:
        raise NOT_CANCELLABLE(status=order.status)
    return await get_order(order.id)


async def refund(
    order_id: int,
    lines: list[tuple[int, int]] | None,
    *,
    reason: str = "",
    member_id: int | None = None,
    staff: Actor | None = None,
    restock: bool = True,
    request_key: str | None = None,
) -> OrderRefund:
    """Refund lines (or everything left). Shoppers refund themselves before shipping;
    ops refund shipped and completed orders too (after the goods came back)."""
    wanted: dict[int, int] | None = None
    if lines is not None:
        wanted = defaultdict(int)
        for line_id, quantity in lines:
            wanted[line_id] += quantity
        wanted = dict(wanted)
    allowed = (PAID,) if staff is None else (PAID, SHIPPED, COMPLETED)
    done = await _refund_paid(
        order_id,
        wanted,
        kind="refund",
        allowed=allowed,
        reason=reason,
        restock=restock,
        request_key=request_key,
        staff=staff,
        member_id=member_id,
    )
    order = await get_order(order_id)
    if order.status == COMPLETED or order.completed_at is not None:
        await _referral_event(
            referral_service.on_order_refunded,
            order_id,
            order.member_id,
            done.money_fen,
            refund_ref=done.id,
        )
    return done


async def ship(
    order_id: int, *, shipping_company: str, tracking_no: str, staff: Actor | None
) -> Order:
    order = await get_order(order_id)
    if order.delivery == "express" and not tracking_no:
        raise TRACKING_REQUIRED()
    now = clock.now()
    async with in_transaction():
        moved = await Order.filter(id=order.id, status=PAID).update(
            status=SHIPPED,
            shipping_company=shipping_company,
            tracking_no=tracking_no,
            shipped_at=now,
            updated_at=now,
        )
        if not moved:
            order = await get_order(order.id)
            raise NOT_SHIPPABLE(status=order.status)
        await audit_service.record(
            staff,
            "order.ship",
            f"order:{order.id}",
            shipping_company=shipping_company,
            tracking_no=tracking_no,
        )
    return await get_order(order.id)


async def complete(
    order_id: int, *, member_id: int | None = None, staff: Actor | None = None
) -> Order:
    """shipped (or, by ops, paid: e.g. picked up) -> completed; grants order-to-points and
    growth on what was paid (wallet + cash, less refunds so far)."""
    allowed = (SHIPPED,) if staff is None else (PAID, SHIPPED)
    now = clock.now()
    async with in_transaction():
        order = await Order.filter(id=order_id).select_for_update().first()
        if order is None or (member_id is not None and order.member_id != member_id):
            raise ORDER_NOT_FOUND()
        if order.status not in allowed:
            raise NOT_COMPLETABLE(status=order.status)
        base = order.amount_due_fen - order.refunded_fen
        earned = 0
        if base > 0:
            entry = await points_service.grant_for_order(
                order.member_id, base, idempotency_key=_earn_key(order), reference=_ref(order)
            )
            earned = entry.delta if entry is not None else 0
        moved = await Order.filter(
            id=order.id, status=order.status, refunded_fen=order.refunded_fen
        ).update(
            status=COMPLETED,
            completed_at=now,
            earn_base_fen=base,
            earned_points=earned,
            refunded_fen_at_completion=order.refunded_fen,
            updated_at=now,
        )
        if not moved:
            raise ORDER_CHANGED()
        if staff is not None:
            await audit_service.record(
                staff, "order.complete", f"order:{order.id}", earned_points=earned
            )
    await _referral_event(referral_service.on_order_completed, order.id, order.member_id, base)
    return await get_order(order.id)


async def _referral_event(
    event: Callable[..., Awaitable[object]], order_id: int, member_id: int, fen: int, **kw: Any
) -> None:
    """Promoter commission after the order's own commit; idempotent per order event, so a
    failure here is logged and a retry (or `mall check referral`) finds it."""
    try:
        await event(order_id, member_id, fen, **kw)
    except Exception:
        log.exception("referral %s failed for order %s", event.__name__, order_id)


# --- jobs ---------------------------------------------------------------------------


async def close_overdue(batch: int = 200) -> int:
    """Close orders unpaid at their deadline. WeChat Pay is asked first (a payment that
    made it is confirmed instead); if it cannot be asked, the order waits until
    `order_close_force_after_seconds` past its deadline, then closes anyway (a payment
    arriving later is refunded)."""
    now = clock.now()
    force_after = timedelta(seconds=get_settings().order_close_force_after_seconds)
    rows = (
        await Order.filter(status=PENDING_PAYMENT, pay_deadline__lte=now)
        .order_by("pay_deadline", "id")
        .limit(batch)
    )
    closed = 0
    ask = wechat_pay.is_configured()
    for order in rows:
        if ask and order.cash_fen > 0:
            try:
                result = await wechat_pay.query_payment(out_trade_no(order))
            except Exception as exc:
                deadline: datetime = order.pay_deadline  # type: ignore[assignment]
                if now < deadline + force_after:
                    log.warning("cannot ask wechat pay about %s: %r", order.number, exc)
                    continue
                result = None
            if result is not None and result.trade_state == "SUCCESS":
                try:
                    await on_order_paid(result)
                except MallError:
                    log.exception("order %s: payment found at close but refused", order.number)
                continue
        if await _release_unpaid(order.id, to=CLOSED, reason="unpaid at the deadline"):
            closed += 1
    return closed


async def complete_delivered(batch: int = 200) -> int:
    """Shipped orders complete themselves `order_auto_complete_days` after shipping."""
    due = clock.now() - timedelta(days=get_settings().order_auto_complete_days)
    ids = (
        await Order.filter(status=SHIPPED, shipped_at__lte=due)
        .order_by("shipped_at")
        .limit(batch)
        .values_list("id", flat=True)
    )
    done = 0
    for order_id in ids:
        try:
            await complete(int(order_id), staff=None, member_id=None)  # type: ignore[call-overload]
            done += 1
        except MallError as exc:
            log.info("auto-complete of order %s skipped: %s", order_id, exc.code)
    return done


async def retry_cash_refunds(batch: int = 100, older_than_seconds: int = 60) -> int:
    """Send again the WeChat refunds that failed to send or are still processing."""
    before = clock.now() - timedelta(seconds=older_than_seconds)
    ids = (
        await OrderRefund.filter(cash_status__in=["pending", "processing"], updated_at__lte=before)
        .order_by("id")
        .limit(batch)
        .values_list("id", flat=True)
    )
    for refund_id in ids:
        await send_cash_refund(int(refund_id))  # type: ignore[call-overload]
    return len(ids)
