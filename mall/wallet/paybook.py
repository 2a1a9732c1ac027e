"""The wallet's WeChat Pay records (top-ups "T...", their refunds), for the
reconciliation of WeChat Pay's bills (`mall.wechat.reconcile`; found by
`mall.domains.pay_books()`)."""

from __future__ import annotations

from datetime import datetime

from mall.wallet.models import (
    PAID,
    REFUND_ABNORMAL,
    REFUND_FAILED,
    REFUND_OFFLINE,
    REFUND_PROCESSING,
    REFUND_SUCCEEDED,
    TopUp,
    TopUpRefund,
)
from mall.wechat import pay as wechat_pay
from mall.wechat.reconcile import Book, MallPayment, MallRefund, PayRef

PREFIX = "T"
SENT = (REFUND_PROCESSING, REFUND_SUCCEEDED, REFUND_ABNORMAL, REFUND_OFFLINE)


def _payment(top_up: TopUp) -> MallPayment:
    return MallPayment(top_up.out_trade_no, top_up.amount_fen, top_up.transaction_id)


async def paid_between(start: datetime, end: datetime) -> list[MallPayment]:
    rows = await TopUp.filter(status=PAID, paid_at__gte=start, paid_at__lt=end)
    return [_payment(t) for t in rows]


async def payments(numbers: list[str]) -> dict[str, MallPayment]:
    rows = await TopUp.filter(out_trade_no__in=numbers, status=PAID)
    return {t.out_trade_no: _payment(t) for t in rows}


def _refund(refund: TopUpRefund, top_up: TopUp, attempt: int) -> MallRefund:
    return MallRefund(
        wechat_refund_no=wechat_pay.attempt_refund_no(refund.out_refund_no, attempt),
        out_trade_no=top_up.out_trade_no,
        amount_fen=refund.cash_fen,
        failed=refund.status == REFUND_FAILED,
    )


async def refunds_between(start: datetime, end: datetime) -> list[MallRefund]:
    """Refunds sent in [start, end): first attempts by when they were made, ops retries
    by when they were resolved."""
    rows = await TopUpRefund.filter(
        cash_fen__gt=0, status__in=SENT, created_at__gte=start, created_at__lt=end
    ).prefetch_related("top_up")
    retried = await TopUpRefund.filter(
        cash_fen__gt=0, attempt__gt=0, resolved_at__gte=start, resolved_at__lt=end
    ).prefetch_related("top_up")
    found = [_refund(r, r.top_up, 0) for r in rows]
    found += [_refund(r, r.top_up, r.attempt) for r in retried if r.status in SENT]
    return found


async def refunds(numbers: list[str]) -> dict[str, MallRefund]:
    async def load(bases: set[str]) -> dict[str, TopUpRefund]:
        found = TopUpRefund.filter(out_refund_no__in=bases)
        return {r.out_refund_no: r for r in await found.prefetch_related("top_up")}

    matched = await wechat_pay.find_refund_attempts(numbers, load, lambda r: r.attempt)
    return {n: _refund(r, r.top_up, attempt) for n, (r, attempt) in matched.items()}


async def refs(numbers: list[str]) -> dict[str, PayRef]:
    """The top-ups these out_trade_no belong to, whatever their state."""
    rows = await TopUp.filter(out_trade_no__in=numbers).values_list(
        "id", "out_trade_no", "member_id"
    )
    return {
        number: PayRef(member_id=member_id, top_up_id=top_up_id)
        for top_up_id, number, member_id in rows
    }


BOOK = Book(PREFIX, paid_between, payments, refunds_between, refunds, refs)
