"""Ops on the reconciliation of WeChat Pay's bills: the days kept, each mismatch with what
its payment is in the mall (order, top-up, member). The ops routes call these; the job
and `mall check pay` use `reconcile`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from mall import domains
from mall.errors import ErrorCode
from mall.i18n import _
from mall.wechat import reconcile
from mall.wechat.models import PayReconciliation
from mall.wechat.schemas import ReconciliationOut

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
