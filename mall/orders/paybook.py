"""The orders' WeChat Pay records, for the reconciliation of WeChat Pay's bills
(`mall.wechat.reconcile`; found by `mall.domains.pay_books()`)."""

from __future__ import annotations

from datetime import datetime

from mall.orders.common import TRADE_PREFIX, out_trade_no
from mall.orders.models import Order, OrderRefund
from mall.wechat import pay as wechat_pay
from mall.wechat.reconcile import Book, MallPayment, MallRefund, PayRef

SENT = ("processing", "succeeded", "abnormal", "offline")


def _payment(order: Order) -> MallPayment:
    return MallPayment(out_trade_no(order), order.cash_fen, order.transaction_id or "")


async def paid_between(start: datetime, end: datetime) -> list[MallPayment]:
    rows = await Order.filter(paid_at__gte=start, paid_at__lt=end, cash_fen__gt=0)
    return [_payment(o) for o in rows]


async def payments(numbers: list[str]) -> dict[str, MallPayment]:
    """Paid orders, and closed ones whose late payment the mall took (and refunds)."""
    wanted = [n[len(TRADE_PREFIX) :] for n in numbers if n.startswith(TRADE_PREFIX)]
    rows = await Order.filter(number__in=wanted, cash_fen__gt=0)
    found = {}
    for order in rows:
        if order.paid_at is not None or order.transaction_id:
            found[out_trade_no(order)] = _payment(order)
    return found


def _refund(refund: OrderRefund, order: Order, attempt: int) -> MallRefund:
    return MallRefund(
        wechat_refund_no=wechat_pay.attempt_refund_no(refund.out_refund_no, attempt),
        out_trade_no=out_trade_no(order),
        amount_fen=refund.cash_fen,
        failed=refund.cash_status == "failed",
    )


async def refunds_between(start: datetime, end: datetime) -> list[MallRefund]:
    """Cash refunds sent in [start, end): first attempts by when they were made, ops
    retries by when they were resolved."""
    rows = await OrderRefund.filter(
        cash_fen__gt=0, cash_status__in=SENT, created_at__gte=start, created_at__lt=end
    ).prefetch_related("order")
    retried = await OrderRefund.filter(
        cash_fen__gt=0, cash_attempt__gt=0, resolved_at__gte=start, resolved_at__lt=end
    ).prefetch_related("order")
    found = [_refund(r, r.order, 0) for r in rows]
    found += [_refund(r, r.order, r.cash_attempt) for r in retried if r.cash_status in SENT]
    return found


async def refunds(numbers: list[str]) -> dict[str, MallRefund]:
    async def load(bases: set[str]) -> dict[str, OrderRefund]:
        found = OrderRefund.filter(out_refund_no__in=bases, cash_fen__gt=0)
        return {r.out_refund_no: r for r in await found.prefetch_related("order")}

    matched = await wechat_pay.find_refund_attempts(numbers, load, lambda r: r.cash_attempt)
    return {n: _refund(r, r.order, attempt) for n, (r, attempt) in matched.items()}


async def refs(numbers: list[str]) -> dict[str, PayRef]:
    """The orders these out_trade_no belong to, whatever their state."""
    wanted = [n[len(TRADE_PREFIX) :] for n in numbers if n.startswith(TRADE_PREFIX)]
    rows = await Order.filter(number__in=wanted).values_list("id", "number", "member_id")
    return {
        f"{TRADE_PREFIX}{number}": PayRef(member_id=member_id, order_id=order_id)
        for order_id, number, member_id in rows
    }


BOOK = Book(TRADE_PREFIX, paid_between, payments, refunds_between, refunds, refs)
