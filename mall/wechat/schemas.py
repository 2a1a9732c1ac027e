"""Answers about WeChat Pay for the ops console."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, ConfigDict


class MismatchOut(BaseModel):
    kind: str  # paid_not_in_mall | amount_differs | not_paid_at_wechat | refund_...
    out_trade_no: str
    out_refund_no: str = ""
    wechat_fen: int | None = None
    mall_fen: int | None = None
    detail: str = ""
    # what out_trade_no is in the mall, when it is known there (the console's links)
    order_id: int | None = None
    top_up_id: int | None = None
    member_id: int | None = None


class ReconciliationOut(BaseModel):
    """One day's WeChat Pay bills against the mall (status ok | mismatch | failed)."""

    model_config = ConfigDict(from_attributes=True)

    bill_date: date
    status: str
    payments: int
    paid_fen: int
    refunds: int
    refunded_fen: int
    mismatches: list[MismatchOut]
    error: str
    ran_at: datetime
