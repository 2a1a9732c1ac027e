"""Answers about WeChat Pay for the ops console."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mall.kit.text import SafeLine


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


class ResolveRefundIn(BaseModel):
    """How ops settle a refund WeChat Pay could not pay out (status `abnormal`): an order's
    cash refund or a wallet top-up's."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["retry", "offline"] = Field(
        description="`retry`: send it to the original payment again; `offline`: it was "
        "paid out another way"
    )
    note: SafeLine = Field(
        default="", max_length=255, description="required for offline: how it was paid"
    )

    @model_validator(mode="after")
    def _offline_says_how(self) -> ResolveRefundIn:
        if self.action == "offline" and len(self.note.strip()) < 2:
            raise ValueError("say how the refund was paid out (note)")
        return self
