"""Points + cash redemptions: an item with a cash part (`cash_price_fen`) is decided in
Redis like any other, but the consumer HOLDS the points (instead of spending them) and
writes the redemption `pending_payment` with a deadline; nothing is issued yet. The member
pays the cash part as a mall order (`payment.py`, `Order.source` = "pointsmall"); the
order's hooks (`mall.orders.holders`) then call:

- `paid`: the hold is captured and the redemption completes as a points-only one would
  (voucher code, awaiting_shipment, enrolled);
- `released`: the order closed or was cancelled unpaid: the hold is voided (points back),
  the database's units come back and the status becomes `released` (`unpaid`); after the
  commit `give_back_if_due` hands the units back to Redis, once;
- `refunded`: the paid order was refunded in full: the captured points come back (the
  units stay out, like a shipped unit; ops restock by hand).

Who owns the deadline: until the member takes the redemption to payment, `expire_unpaid`
(a job); once an order exists (`order_id`, set by a compare-and-set before the deadline),
the order's close job. Never both. A payment arriving after the release is refunded in
full by the orders' own path (the order is closed)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from tortoise.expressions import F
from tortoise.transactions import in_transaction

from mall.config import get_settings
from mall.errors import ErrorCode
from mall.i18n import _
from mall.kit import clock
from mall.points import service as points_service
from mall.pointsmall import stock
from mall.pointsmall.models import PointsMallItem, PointsMallRedemption
from mall.pointsmall.redeem import ACTIVITY_FULL, OUT_OF_STOCK, POINTS_THRESHOLD_NOT_MET

log = logging.getLogger("mall.pointsmall")

REDEMPTION_NOT_PAYABLE = ErrorCode(
    "REDEMPTION_NOT_PAYABLE", 409, _("This redemption is {status} and cannot be paid")
)
REDEMPTION_NOT_READY = ErrorCode(
    "REDEMPTION_NOT_READY",
    409,
    _("Your redemption is still being recorded; try again in a moment"),
)

PENDING_PAYMENT = "pending_payment"
UNPAID = "unpaid"
_STATUS_AFTER_PAY = {"gift": "awaiting_shipment", "voucher": "issued", "activity": "enrolled"}


def hold_key(reservation_id: str) -> str:
    """The points hold's idempotency key; a captured hold is reversed by it (refunds)."""
    return f"pointsmall:hold:{reservation_id}"


def _hold_expires(deadline: datetime) -> datetime:
    """The hold outlives the deadline and the order's forced close, so the points job
    never voids a hold a payment may still capture (the close job owns the deadline)."""
    settings = get_settings()
    return deadline + timedelta(
        seconds=settings.order_close_force_after_seconds + settings.points_hold_timeout_seconds
    )


async def write_pending(
    item: PointsMallItem,
    *,
    reservation_id: str,
    member_id: int,
    quantity: int,
    points: int,
    cash_fen: int,
    label: str,
    address: dict[str, Any] | None,
) -> PointsMallRedemption:
    """The consumer's writes for a points + cash redemption, inside its savepoint: the
    points held (NOT_ENOUGH_POINTS refuses it, as a spend would), the threshold, the row
    `pending_payment` and the database's stock guard. A MallError undoes them all."""
    deadline = clock.now() + timedelta(seconds=get_settings().pointsmall_payment_seconds)
    key = hold_key(reservation_id)
    held = await points_service.hold(
        member_id,
        points,
        idempotency_key=key,
        reason="pointsmall.redeem",
        reference=f"pointsmall_item:{item.id}",
        expires_at=_hold_expires(deadline),
    )
    if item.min_points_balance:
        before = await points_service.get_balance(member_id) + points
        if before < item.min_points_balance:
            raise POINTS_THRESHOLD_NOT_MET(threshold=item.min_points_balance, balance=before)
    redemption = await PointsMallRedemption.create(
        reservation_id=reservation_id,
        item_id=item.id,
        member_id=member_id,
        item_name=item.name,
        kind=item.kind,
        quantity=quantity,
        points_spent=points,
        status=PENDING_PAYMENT,
        spend_key=key,
        period_label=label,
        address=address,
        cash_fen=cash_fen,
        pay_deadline=deadline,
        hold_id=held.id,
    )
    taken = await PointsMallItem.filter(id=item.id, stock__gte=quantity).update(
        stock=F("stock") - quantity
    )
    if not taken:
        raise ACTIVITY_FULL() if item.kind == "activity" else OUT_OF_STOCK()
    return redemption


# --- the order's hooks (inside the order's transaction unless said otherwise) -----------


async def _get(reservation_id: str) -> PointsMallRedemption | None:
    return await PointsMallRedemption.get_or_none(reservation_id=reservation_id)


async def paid(reservation_id: str) -> PointsMallRedemption | None:
    """The cash part is paid: pending_payment -> the kind's status, once; the points
    hold is captured (the points are spent)."""
    from mall.pointsmall.persist import _voucher_code  # the consumer's codes (it imports us)

    r = await _get(reservation_id)
    if r is None:
        return None
    status = _STATUS_AFTER_PAY.get(r.kind, "issued")
    code = _voucher_code() if r.kind == "voucher" else None
    moved = await PointsMallRedemption.filter(id=r.id, status=PENDING_PAYMENT).update(
        status=status, voucher_code=code, updated_at=clock.now()
    )
    if not moved:
        fresh = await _get(reservation_id)
        if fresh is not None and fresh.status == PENDING_PAYMENT:
            raise REDEMPTION_NOT_PAYABLE(status=fresh.status)
        return fresh
    if r.hold_id is not None:
        key = f"{hold_key(r.reservation_id)}:paid"
        await points_service.capture(r.hold_id, idempotency_key=key)
    return await _get(reservation_id)


async def _release(r: PointsMallRedemption, **only: Any) -> bool:
    """pending_payment -> released (`unpaid`), compare-and-set on `only` besides the
    status: the hold voided (points back) and the database's units back. Call inside a
    transaction; the Redis units go back after its commit (`give_back_if_due`)."""
    moved = await PointsMallRedemption.filter(id=r.id, status=PENDING_PAYMENT, **only).update(
        status="released", release_reason=UNPAID, points_spent=0, updated_at=clock.now()
    )
    if not moved:
        return False
    if r.hold_id is not None:
        await points_service.void(r.hold_id, idempotency_key=f"{hold_key(r.reservation_id)}:void")
    await PointsMallItem.filter(id=r.item_id).update(stock=F("stock") + r.quantity)
    return True


async def released(reservation_id: str, reason: str) -> None:
    """The order paying this redemption closed or was cancelled unpaid."""
    r = await _get(reservation_id)
    if r is not None and await _release(r):
        log.info("pointsmall redemption %s released: order %s", r.id, reason)


async def give_back_if_due(reservation_id: str) -> None:
    """After the commit that released an unpaid redemption: its units (and the member's
    limit counters) back to Redis, once per reservation id."""
    r = await _get(reservation_id)
    if r is None or r.status != "released" or r.release_reason != UNPAID or r.stock_returned:
        return
    reply = await stock.give_back(stock.item_keys(r.item_id, r.period_label), r)
    log.debug("pointsmall redemption %s units back: %s", r.id, reply.status)
    await PointsMallRedemption.filter(id=r.id, stock_returned=False).update(stock_returned=True)


async def refunded(reservation_id: str) -> None:
    """The paid order was refunded in full: the redemption is `refunded` and its points
    come back (a reversal of the captured hold). Its units stay out."""
    r = await _get(reservation_id)
    if r is None or r.status in ("refunded", "released", PENDING_PAYMENT, "cancelled"):
        return
    moved = await PointsMallRedemption.filter(id=r.id, status=r.status).update(
        status="refunded",
        cancelled_at=clock.now(),
        cancelled_by="order_refund",
        cancel_reason="order refunded",
    )
    if moved and r.points_spent > 0:
        await points_service.reverse(
            r.spend_key,
            idempotency_key=f"{hold_key(r.reservation_id)}:refund",
            reason="pointsmall.refund",
        )


# --- the deadline of redemptions nobody took to payment ---------------------------------


async def expire_unpaid(limit: int = 500) -> int:
    """Job: pending_payment redemptions past their deadline with no order are released
    (hold voided, units back once); an order's are its close job's. Also finishes the
    Redis give-backs a crash left undone."""
    due = await PointsMallRedemption.filter(
        status=PENDING_PAYMENT, pay_deadline__lte=clock.now(), order_id__isnull=True
    ).limit(limit)
    expired = 0
    for r in due:
        async with in_transaction():
            done = await _release(r, order_id__isnull=True)
        if done:
            expired += 1
            await give_back_if_due(r.reservation_id)
    late = await PointsMallRedemption.filter(
        status="released", release_reason=UNPAID, stock_returned=False
    ).limit(limit)
    for r in late:
        await give_back_if_due(r.reservation_id)
    return expired
