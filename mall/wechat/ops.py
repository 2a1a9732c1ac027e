"""Ops on the reconciliation of WeChat Pay's bills: the days kept, each mismatch with what
its payment is in the mall (order, top-up, member), and a day reconciled again on demand
(audited). The ops routes call these; the job and `mall check pay` use `reconcile`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

from mall import domains
from mall.audit import service as audit_service
from mall.audit.service import Actor
from mall.errors import ErrorCode, MallError
from mall.i18n import _
from mall.kit import clock
from mall.wechat import pay, reconcile
from mall.wechat.models import PayReconciliation
from mall.wechat.schemas import ReconciliationOut

# WeChat Pay hands out the bills of the last three months
BILL_DAYS_KEPT = 90

BILL_DATE_OUT_OF_RANGE = ErrorCode(
    "PAY_BILL_DATE_OUT_OF_RANGE",
    422,
    _("WeChat Pay's bills can be reconciled for the days from {first} to {last}"),
)
RECONCILIATION_DAY_NOT_FOUND = ErrorCode(
    "PAY_RECONCILIATION_DAY_NOT_FOUND", 404, _("{day} has not been reconciled with WeChat Pay")
)


async def answers(rows: Sequence[PayReconciliation]) -> list[ReconciliationOut]:
    """The kept days as ops see them: every mismatch names the order or top-up and the
    member behind its out_trade_no, where the mall knows it."""
    found = [ReconciliationOut.model_validate(row) for row in rows]
    numbers = {m.out_trade_no for day in found for m in day.mismatches}
    refs = await reconcile.references(numbers, domains.pay_books()) if numbers else {}
    for day in found:
        for mismatch in day.mismatches:
            ref = refs.get(mismatch.out_trade_no)
            if ref is not None:
                mismatch.member_id = ref.member_id
                mismatch.order_id = ref.order_id
                mismatch.top_up_id = ref.top_up_id
    return found


async def recent(limit: int) -> list[ReconciliationOut]:
    return await answers(await reconcile.recent(limit))


async def latest() -> ReconciliationOut | None:
    row = await reconcile.latest()
    return None if row is None else (await answers([row]))[0]


async def of_day(day: date) -> ReconciliationOut:
    row = await reconcile.of_day(day)
    if row is None:
        raise RECONCILIATION_DAY_NOT_FOUND(day=day.isoformat())
    return (await answers([row]))[0]


def bill_days() -> tuple[date, date]:
    """The first and last day whose bills can be asked for now (Shanghai days)."""
    today = clock.today()
    return today - timedelta(days=BILL_DAYS_KEPT), today - timedelta(days=1)


async def reconcile_day(actor: Actor, day: date) -> ReconciliationOut:
    """Ops reconcile a past day again (bills fetched anew, the kept result replaced),
    e.g. once WeChat has made a bill that was not ready, or after a mismatch was put
    right. Audited, failed runs too (the failure is kept and raised)."""
    first, last = bill_days()
    if not first <= day <= last:
        raise BILL_DATE_OUT_OF_RANGE(first=first.isoformat(), last=last.isoformat())
    if not pay.is_configured():
        raise pay.PAY_NOT_CONFIGURED()
    target = f"pay_reconciliation:{day.isoformat()}"
    try:
        row = await reconcile.run(day, domains.pay_books())
    except MallError as exc:
        if exc.error is not reconcile.RECONCILIATION_RUNNING:
            await audit_service.record(
                actor, "wechat.pay.reconcile", target, status="failed", error=exc.code
            )
        raise
    await audit_service.record(
        actor,
        "wechat.pay.reconcile",
        target,
        status=row.status,
        payments=row.payments,
        paid_fen=row.paid_fen,
        refunds=row.refunds,
        refunded_fen=row.refunded_fen,
        mismatches=len(row.mismatches),
    )
    return (await answers([row]))[0]
