"""Giving back: releasing unpaid orders, planning and paying refunds (points, wallet, cash)."""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.expressions import F
from tortoise.transactions import in_transaction

from mall.audit import service as audit_service
from mall.audit.service import Actor
from mall.catalog import service as catalog_service
from mall.coupons import service as coupons_service
from mall.errors import MallError
from mall.kit import clock
from mall.kit.bulk import select_in
from mall.orders import holders
from mall.orders.common import (
    NOT_CANCELLABLE,
    NOT_REFUNDABLE,
    NOTHING_TO_REFUND,
    ORDER_CHANGED,
    ORDER_NOT_FOUND,
    PAY_UNAVAILABLE,
    REFUND_LINE_UNKNOWN,
    REFUND_NOT_ABNORMAL,
    REFUND_NOT_FOUND,
    REFUND_RETRY_REFUSED,
    REFUND_TOO_MANY,
    _earn_key,
    _points_key,
    _ref,
    _wallet_key,
    out_trade_no,
)
from mall.orders.models import (
    CANCELLED,
    PENDING_PAYMENT,
    REFUNDED,
    Order,
    OrderLine,
    OrderRefund,
)
from mall.points import service as points_service
from mall.wallet import service as wallet_service
from mall.wechat import pay as wechat_pay

log = logging.getLogger("mall.orders")


# --- giving back ---------------------------------------------------------------------


async def _release_unpaid(
    order_id: int, *, to: str, reason: str, staff: Actor | None = None
) -> OrderRefund | None:
    """pending_payment -> cancelled | closed: stock, coupon (if still valid), points hold
    and the wallet part come back. None if the order was no longer pending."""
    now = clock.now()
    async with in_transaction():
        order = await Order.filter(id=order_id).select_for_update().first()
        if order is None:
            raise ORDER_NOT_FOUND()
        stamp = {"cancelled_at": now} if to == CANCELLED else {"closed_at": now}
        moved = await Order.filter(id=order.id, status=PENDING_PAYMENT).update(
            status=to,
            cancel_reason=reason[:128],
            refunded_fen=F("refunded_fen") + order.wallet_fen,
            refunded_wallet_fen=F("refunded_wallet_fen") + order.wallet_fen,
            refunded_points=F("refunded_points") + order.points_used,
            updated_at=now,
            **stamp,
        )
        if not moved:
            return None
        lines = await OrderLine.filter(order_id=order.id).order_by("id")
        if holders.takes_catalog_stock(order):
            stock: dict[int, int] = defaultdict(int)
            for line in lines:
                stock[line.sku_id] += line.quantity
            for sku_id in sorted(stock):
                await catalog_service.release_stock(sku_id, stock[sku_id])
        else:
            await holders.on_released(order, "cancelled" if to == CANCELLED else "unpaid")
        coupon_status = ""
        if order.coupon_id is not None:
            coupon_status = await coupons_service.release(order.coupon_id, _ref(order))
        if order.points_hold_id is not None:
            await points_service.void(
                order.points_hold_id, idempotency_key=f"{_points_key(order)}:void"
            )
        if order.wallet_fen > 0:
            await wallet_service.refund(
                _wallet_key(order),
                order.wallet_fen,
                idempotency_key=f"{_wallet_key(order)}:back",
                reason=f"order {to}",
            )
        refund = await OrderRefund.create(
            order_id=order.id,
            out_refund_no=f"R{order.number}C",
            kind="cancel" if to == CANCELLED else "close",
            lines=[{"line_id": ln.id, "quantity": ln.quantity} for ln in lines],
            money_fen=order.wallet_fen,
            wallet_fen=order.wallet_fen,
            points=order.points_used,
            coupon_status=coupon_status,
            reason=reason[:128],
            staff_id=staff.id if staff else None,
        )
        if staff is not None:
            await audit_service.record(
                staff, f"order.{refund.kind}", f"order:{order.id}", reason=reason
            )
    await holders.after_released(order)
    if order.cash_fen > 0 and wechat_pay.is_configured():
        try:
            await wechat_pay.close_payment(out_trade_no(order))
        except Exception as exc:  # best effort: the WeChat order expires anyway
            log.warning("closing wechat pay order %s failed: %r", order.number, exc)
    return refund


@dataclass
class LineRefund:
    line_id: int
    sku_id: int
    quantity: int
    due_fen: int
    points: int


@dataclass
class RefundPlan:
    lines: list[LineRefund]
    goods_fen: int
    shipping_fen: int
    money_fen: int
    cash_fen: int
    wallet_fen: int
    points: int
    earned_points_reversed: int
    everything: bool


def _upto(total: int, part: int, whole: int) -> int:
    """The share of `total` for `part` of `whole`, rounded down; all of it at the end, so
    successive partial shares always add up to `total` exactly."""
    if whole <= 0 or part >= whole:
        return total
    return total * part // whole


def plan_refund(order: Order, lines: list[OrderLine], wanted: dict[int, int] | None) -> RefundPlan:
    """What a refund of `wanted` {line id: quantity} (None: all that is left) gives back.

    Each line gives back its due and its points for the units refunded, shares rounded
    down until the last unit; shipping comes back with the last line. The money goes back
    to wallet and cash in the proportion they paid, and order-to-points earned on
    completion are reversed in proportion to the money refunded since."""
    by_id = {ln.id: ln for ln in lines}
    if wanted is None:
        wanted = {ln.id: ln.quantity - ln.refunded_quantity for ln in lines}
        wanted = {k: v for k, v in wanted.items() if v > 0}
        if not wanted:
            raise NOTHING_TO_REFUND()
    planned: list[LineRefund] = []
    for line_id, quantity in wanted.items():
        line = by_id.get(line_id)
        if line is None:
            raise REFUND_LINE_UNKNOWN(line_id=line_id)
        left = line.quantity - line.refunded_quantity
        if quantity > left:
            raise REFUND_TOO_MANY(left=left, line_id=line_id)
        after = line.refunded_quantity + quantity
        planned.append(
            LineRefund(
                line_id=line.id,
                sku_id=line.sku_id,
                quantity=quantity,
                due_fen=_upto(line.due_fen, after, line.quantity) - line.refunded_due_fen,
                points=_upto(line.points_used, after, line.quantity) - line.refunded_points,
            )
        )
    everything = all(ln.refunded_quantity + wanted.get(ln.id, 0) >= ln.quantity for ln in lines)
    goods = sum(p.due_fen for p in planned)
    shipping = order.shipping_fen if everything else 0
    money = goods + shipping
    money_after = order.refunded_fen + money
    cash = _upto(order.cash_fen, money_after, order.amount_due_fen) - order.refunded_cash_fen
    earned = 0
    if order.earned_points > 0 and order.earn_base_fen > 0:
        since = money_after - order.refunded_fen_at_completion
        earned = (
            _upto(order.earned_points, since, order.earn_base_fen) - order.earned_points_reversed
        )
    return RefundPlan(
        lines=planned,
        goods_fen=goods,
        shipping_fen=shipping,
        money_fen=money,
        cash_fen=cash,
        wallet_fen=money - cash,
        points=sum(p.points for p in planned),
        earned_points_reversed=max(earned, 0),
        everything=everything,
    )


async def _refund_paid(
    order_id: int,
    wanted: dict[int, int] | None,
    *,
    kind: str,
    allowed: tuple[str, ...],
    reason: str,
    restock: bool,
    request_key: str | None,
    staff: Actor | None = None,
    member_id: int | None = None,
) -> OrderRefund:
    """Refund (part of) a paid order in one transaction: lines, stock, coupon on a full
    refund, spent points, earned points pro rata, wallet; the cash is sent to WeChat Pay
    after the commit (retried by a job until WeChat answers)."""
    if request_key is not None:
        found = await OrderRefund.get_or_none(request_key=request_key)
        if found is not None:
            return found
    now = clock.now()
    try:
        async with in_transaction():
            order = await Order.filter(id=order_id).select_for_update().first()
            if order is None or (member_id is not None and order.member_id != member_id):
                raise ORDER_NOT_FOUND()
            if order.status not in allowed:
                error = NOT_CANCELLABLE if kind == "cancel" else NOT_REFUNDABLE
                raise error(status=order.status)
            lines = await OrderLine.filter(order_id=order.id).order_by("id")
            plan = plan_refund(order, lines, wanted)
            count = await OrderRefund.filter(order_id=order.id).count()
            refund = await OrderRefund.create(
                order_id=order.id,
                out_refund_no=f"R{order.number}{count + 1:02d}",
                kind=kind,
                request_key=request_key,
                lines=[{"line_id": p.line_id, "quantity": p.quantity} for p in plan.lines],
                goods_fen=plan.goods_fen,
                shipping_fen=plan.shipping_fen,
                money_fen=plan.money_fen,
                wallet_fen=plan.wallet_fen,
                cash_fen=plan.cash_fen,
                points=plan.points,
                restocked=restock and holders.takes_catalog_stock(order),
                reason=reason[:128],
                staff_id=staff.id if staff else None,
                cash_status="pending" if plan.cash_fen > 0 else "none",
            )
            for p in plan.lines:
                line = next(ln for ln in lines if ln.id == p.line_id)
                moved = await OrderLine.filter(
                    id=line.id, refunded_quantity=line.refunded_quantity
                ).update(
                    refunded_quantity=line.refunded_quantity + p.quantity,
                    refunded_due_fen=line.refunded_due_fen + p.due_fen,
                    refunded_points=line.refunded_points + p.points,
                )
                if not moved:
                    raise ORDER_CHANGED()
            new_status = order.status
            if plan.everything:
                new_status = CANCELLED if kind == "cancel" else REFUNDED
            changes: dict[str, Any] = {
                "status": new_status,
                "refunded_fen": order.refunded_fen + plan.money_fen,
                "refunded_cash_fen": order.refunded_cash_fen + plan.cash_fen,
                "refunded_wallet_fen": order.refunded_wallet_fen + plan.wallet_fen,
                "refunded_points": order.refunded_points + plan.points,
                "earned_points_reversed": order.earned_points_reversed
                + plan.earned_points_reversed,
                "updated_at": now,
            }
            if kind == "cancel":
                changes |= {"cancelled_at": now, "cancel_reason": reason[:128]}
            moved = await Order.filter(
                id=order.id, status=order.status, refunded_fen=order.refunded_fen
            ).update(**changes)
            if not moved:
                raise ORDER_CHANGED()
            if plan.everything:
                await holders.on_refunded(order)
            if restock and holders.takes_catalog_stock(order):
                stock: dict[int, int] = defaultdict(int)
                for p in plan.lines:
                    stock[p.sku_id] += p.quantity
                for sku_id in sorted(stock):
                    await catalog_service.release_stock(sku_id, stock[sku_id])
            if plan.everything and order.coupon_id is not None:
                refund.coupon_status = await coupons_service.release(order.coupon_id, _ref(order))
            if plan.points > 0:
                await points_service.reverse(
                    _points_key(order),
                    idempotency_key=f"{_points_key(order)}:back:{refund.id}",
                    reason="order refund",
                    points=plan.points,
                )
            if plan.earned_points_reversed > 0:
                entry = await points_service.reverse(
                    _earn_key(order),
                    idempotency_key=f"{_earn_key(order)}:back:{refund.id}",
                    reason="order refund",
                    points=plan.earned_points_reversed,
                )
                # a claw-back never drives the balance below zero: record what it took
                refund.earned_points_reversed = -entry.delta
            if plan.wallet_fen > 0:
                await wallet_service.refund(
                    _wallet_key(order),
                    plan.wallet_fen,
                    idempotency_key=f"{_wallet_key(order)}:back:{refund.id}",
                    reason=f"order {kind}",
                )
            await refund.save(update_fields=["coupon_status", "earned_points_reversed"])
            if staff is not None:
                await audit_service.record(
                    staff,
                    f"order.{kind}",
                    f"order:{order.id}",
                    refund_id=refund.id,
                    lines=refund.lines,
                    money_fen=refund.money_fen,
                    cash_fen=refund.cash_fen,
                    wallet_fen=refund.wallet_fen,
                    points=refund.points,
                    restock=restock,
                    reason=reason,
                )
    except IntegrityError:
        if request_key is not None:
            found = await OrderRefund.get_or_none(request_key=request_key)
            if found is not None:
                return found
        raise
    if refund.cash_fen > 0:
        await send_cash_refund(refund.id)
        await refund.refresh_from_db()
    return refund


_CASH_STATUS = {"SUCCESS": "succeeded", "PROCESSING": "processing", "ABNORMAL": "abnormal"}


def wechat_refund_no(refund: OrderRefund) -> str:
    """The number WeChat Pay knows the cash refund's current attempt by."""
    return wechat_pay.attempt_refund_no(refund.out_refund_no, refund.cash_attempt)


async def _refund_of(wechat_no: str) -> OrderRefund | None:
    """The refund whose current attempt WeChat reports (None for a replaced attempt)."""
    for number, attempt in wechat_pay.refund_attempts(wechat_no):
        found = await OrderRefund.get_or_none(out_refund_no=number)
        if found is not None:
            return found if found.cash_attempt == attempt else None
    return None


async def _record_cash_result(refund: OrderRefund, result: Any) -> None:
    state = str(getattr(result, "status", "PROCESSING") or "PROCESSING").upper()
    status = _CASH_STATUS.get(state, "failed")
    if status in ("failed", "abnormal"):
        log.error("wechat refund %s ended %s; ops must resolve it", wechat_refund_no(refund), state)
    await OrderRefund.filter(
        id=refund.id, cash_attempt=refund.cash_attempt, cash_status__in=["pending", "processing"]
    ).update(
        cash_status=status,
        cash_refund_id=str(getattr(result, "refund_id", "") or "")[:64],
        cash_error="" if status in ("succeeded", "processing") else state,
        updated_at=clock.now(),
    )


async def send_cash_refund(refund_id: int) -> OrderRefund:
    """Ask WeChat Pay to refund the cash part (same number on every retry, so it is
    refunded once). Without WeChat Pay the refund stays pending. An ops retry of an
    abnormal refund that WeChat refuses goes back to abnormal."""
    refund = await OrderRefund.get(id=refund_id)
    if refund.cash_status not in ("pending", "processing") or refund.cash_fen <= 0:
        return refund
    order = await Order.get(id=refund.order_id)
    now = clock.now()
    try:
        result = None
        if refund.cash_status == "processing":
            result = await wechat_pay.query_refund(wechat_refund_no(refund))
        if result is None:
            result = await wechat_pay.refund(
                out_trade_no=out_trade_no(order),
                out_refund_no=wechat_refund_no(refund),
                refund_fen=refund.cash_fen,
                total_fen=order.cash_fen,
                reason=refund.reason[:80],
            )
    except Exception as exc:  # kept pending; the retry job sends it again
        code = exc.code if isinstance(exc, MallError) else repr(exc)
        log.warning("wechat refund %s failed: %s", wechat_refund_no(refund), code)
        changes: dict[str, Any] = {"cash_error": code[:255], "updated_at": now}
        if (
            isinstance(exc, MallError)
            and (exc.error in wechat_pay.FINAL_ERRORS or exc.error is wechat_pay.PAY_NOT_ENOUGH)
            and refund.cash_attempt > 0
        ):
            changes["cash_status"] = "abnormal"
            changes["cash_error"] = str(exc.params.get("wechat_code") or code)[:255]
        await OrderRefund.filter(id=refund.id, cash_status__in=["pending", "processing"]).update(
            **changes
        )
        return await OrderRefund.get(id=refund_id)
    await _record_cash_result(refund, result)
    return await OrderRefund.get(id=refund_id)


async def on_order_refund(result: Any) -> None:
    """A verified refund notification for an order (`REFUND_HANDLERS["O"]`)."""
    refund = await _refund_of(str(result.out_refund_no))
    if refund is None:
        log.info("refund notification %s: no current attempt; ignored", result.out_refund_no)
        return
    await _record_cash_result(refund, result)


async def resolve_abnormal_refund(
    refund_id: int, *, action: str, note: str, staff: Actor
) -> OrderRefund:
    """Ops settle a cash refund WeChat Pay reported ABNORMAL (the member's account
    refused it, e.g. a closed bank card). Audited, and idempotent: asking again for what
    was done answers the refund as it is.

    - `retry`: WeChat Pay is asked about the refund first (it may have gone through
      since); if it still did not, it is sent again to the original payment as a new
      attempt ("<out_refund_no>-<n>"). If WeChat Pay refuses (typically: the abnormal
      refund still holds the amount), it stays abnormal and ORDER_REFUND_RETRY_REFUSED
      says to pay it out another way.
    - `offline`: ops paid the member another way (bank transfer, cash); `note` says how.
    The order's own figures do not move: the money was refunded when the refund was
    made; only how it reached the member changes."""
    refund = await OrderRefund.get_or_none(id=refund_id)
    if refund is None:
        raise REFUND_NOT_FOUND()
    if refund.resolution == action and refund.cash_status != "abnormal":
        return refund
    if refund.cash_status != "abnormal":
        raise REFUND_NOT_ABNORMAL(status=refund.cash_status)
    now = clock.now()
    who = {"resolved_by": staff.id, "resolved_at": now, "updated_at": now}
    if action == "offline":
        async with in_transaction():
            moved = await OrderRefund.filter(id=refund.id, cash_status="abnormal").update(
                cash_status="offline", resolution="offline", resolution_note=note[:255], **who
            )
            if not moved:
                return await _resolved_meanwhile(refund.id, action)
            await audit_service.record(
                staff,
                "order.refund.offline",
                f"order:{refund.order_id}",
                refund_id=refund.id,
                out_refund_no=refund.out_refund_no,
                cash_fen=refund.cash_fen,
                note=note,
            )
        return await OrderRefund.get(id=refund.id)

    if not wechat_pay.is_configured():
        raise PAY_UNAVAILABLE()
    result = await wechat_pay.query_refund(wechat_refund_no(refund))
    state = str(getattr(result, "status", "") or "").upper()
    if state in ("SUCCESS", "PROCESSING"):
        async with in_transaction():
            moved = await OrderRefund.filter(id=refund.id, cash_status="abnormal").update(
                cash_status=_CASH_STATUS[state], cash_error="", resolution="retry", **who
            )
            if moved:
                await audit_service.record(
                    staff,
                    "order.refund.retry",
                    f"order:{refund.order_id}",
                    refund_id=refund.id,
                    out_refund_no=wechat_refund_no(refund),
                    wechat_status=state,
                )
        return await OrderRefund.get(id=refund.id)
    attempt = refund.cash_attempt + 1
    async with in_transaction():
        moved = await OrderRefund.filter(
            id=refund.id, cash_status="abnormal", cash_attempt=refund.cash_attempt
        ).update(
            cash_status="pending",
            cash_attempt=attempt,
            cash_error="",
            resolution="retry",
            resolution_note=note[:255],
            **who,
        )
        if not moved:
            return await _resolved_meanwhile(refund.id, action)
        await audit_service.record(
            staff,
            "order.refund.retry",
            f"order:{refund.order_id}",
            refund_id=refund.id,
            out_refund_no=f"{refund.out_refund_no}-{attempt}",
            previous=wechat_refund_no(refund),
            previous_status=state,
            cash_fen=refund.cash_fen,
        )
    refund = await send_cash_refund(refund.id)
    if refund.cash_status == "abnormal":
        raise REFUND_RETRY_REFUSED(wechat_code=refund.cash_error or "-")
    return refund


async def _resolved_meanwhile(refund_id: int, action: str) -> OrderRefund:
    fresh = await OrderRefund.get(id=refund_id)
    if fresh.resolution == action:
        return fresh
    raise REFUND_NOT_ABNORMAL(status=fresh.cash_status)


async def abnormal_refunds() -> list[OrderRefund]:
    """Cash refunds waiting for ops: WeChat Pay could not pay them out."""
    return await OrderRefund.filter(cash_status="abnormal").order_by("id")


async def members_of_refunds(refunds: list[OrderRefund]) -> dict[int, int]:
    """The member of each refund's order, by refund id (a query per 1,000 orders)."""
    rows = await select_in(Order, "id", sorted({r.order_id for r in refunds}), ["id", "member_id"])
    members = {int(order_id): int(member_id) for order_id, member_id in rows}
    return {r.id: members[r.order_id] for r in refunds if r.order_id in members}
