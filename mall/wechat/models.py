"""What the mall keeps about WeChat Pay itself: each day's reconciliation of its bills."""

from __future__ import annotations

from typing import Any

from tortoise import fields
from tortoise.models import Model

OK = "ok"
MISMATCH = "mismatch"
FAILED = "failed"  # the bills could not be fetched or read; `error` says why


class PayReconciliation(Model):
    """WeChat Pay's trade and refund bills of one Shanghai day against the mall's records.
    Run again for a day, the row is replaced (the latest run is what ops see)."""

    id = fields.BigIntField(primary_key=True)
    bill_date = fields.DateField(unique=True)
    status = fields.CharField(max_length=16)
    payments = fields.IntField(default=0)  # payment rows in the trade bill
    paid_fen = fields.BigIntField(default=0)
    refunds = fields.IntField(default=0)  # rows in the refund bill
    refunded_fen = fields.BigIntField(default=0)
    # [{"kind", "out_trade_no", "out_refund_no", "wechat_fen", "mall_fen", "detail"}]
    mismatches: list[dict[str, Any]] = fields.JSONField(default=list)  # type: ignore[assignment]
    error = fields.CharField(max_length=255, default="")
    ran_at = fields.DatetimeField()

    class Meta:
        table = "wechat_pay_reconciliation"
