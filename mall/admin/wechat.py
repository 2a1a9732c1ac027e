"""Ops: WeChat Pay's daily bills reconciled with orders and top-ups (what `mall check pay`
and the daily job found), and a past day reconciled again on demand."""

from __future__ import annotations

from datetime import date

from fastapi import APIRouter

from mall.deps import CurrentStaff
from mall.errors import ErrorCode, error_responses
from mall.i18n import _
from mall.kit.bounds import Limit
from mall.wechat import bills, ops, reconcile
from mall.wechat import pay as wechat_pay
from mall.wechat.schemas import ReconciliationOut

router = APIRouter(tags=["admin: wechat pay"])

RECONCILIATION_NOT_FOUND = ErrorCode(
    "PAY_RECONCILIATION_NOT_FOUND", 404, _("No day has been reconciled with WeChat Pay yet")
)


@router.get(
    "/pay/reconciliations/latest",
    response_model=ReconciliationOut,
    responses=error_responses(RECONCILIATION_NOT_FOUND),
)
async def latest_reconciliation(_staff: CurrentStaff) -> ReconciliationOut:
    """The last day reconciled, with every mismatch for ops to look into."""
    found = await ops.latest()
    if found is None:
        raise RECONCILIATION_NOT_FOUND()
    return found


@router.get("/pay/reconciliations", response_model=list[ReconciliationOut])
async def list_reconciliations(_staff: CurrentStaff, limit: Limit = 30) -> list[ReconciliationOut]:
    """The most recent days reconciled, newest first. Each mismatch names the order or
    top-up (and member) its out_trade_no is in the mall, when it is known there."""
    return await ops.recent(limit)


@router.get(
    "/pay/reconciliations/{bill_date}",
    response_model=ReconciliationOut,
    responses=error_responses(ops.RECONCILIATION_DAY_NOT_FOUND),
)
async def day_reconciliation(bill_date: date, _staff: CurrentStaff) -> ReconciliationOut:
    """One day's reconciliation (a Shanghai day, YYYY-MM-DD) with its mismatches."""
    return await ops.of_day(bill_date)


@router.post(
    "/pay/reconciliations/{bill_date}/run",
    response_model=ReconciliationOut,
    responses=error_responses(
        ops.BILL_DATE_OUT_OF_RANGE,
        reconcile.RECONCILIATION_RUNNING,
        wechat_pay.PAY_NOT_CONFIGURED,
        bills.BILL_NOT_READY,
        bills.BILL_INVALID,
    ),
)
async def run_reconciliation(bill_date: date, staff: CurrentStaff) -> ReconciliationOut:
    """Reconcile a past day (from 90 days ago to yesterday) again: WeChat Pay's bills are
    fetched anew and the kept result replaced. A bill WeChat has not made yet
    (`PAY_BILL_NOT_READY`, before about 10:00 the next day) is kept as a failed run.
    Moves no money; audited."""
    return await ops.reconcile_day(staff, bill_date)
