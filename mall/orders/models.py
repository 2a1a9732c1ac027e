"""Mall orders, their lines (a price snapshot in integer fen) and every give-back.

Money of an order: `goods_fen` (after member price and coupon) - `points_fen` + `shipping_fen`
= `amount_due_fen` = `wallet_fen` + `cash_fen`. Lines add up exactly: sum(line.due_fen)
= goods_fen - points_fen. Status moves only by conditional updates (compare-and-set):

    pending_payment -> paid | cancelled | closed (unpaid at the deadline)
    paid -> shipped -> completed;  paid -> cancelled (full refund before shipping)
    paid | shipped | completed -> refunded (once every line is refunded)
"""

from __future__ import annotations

from typing import Any

from tortoise import fields
from tortoise.models import Model

PENDING_PAYMENT = "pending_payment"
PAID = "paid"
SHIPPED = "shipped"
COMPLETED = "completed"
CANCELLED = "cancelled"
CLOSED = "closed"
REFUNDED = "refunded"
STATUSES = (PENDING_PAYMENT, PAID, SHIPPED, COMPLETED, CANCELLED, CLOSED, REFUNDED)


class Order(Model):
    id = fields.BigIntField(primary_key=True)
    number = fields.CharField(max_length=32, unique=True)
    member: Any = fields.ForeignKeyField(
        "models.Member", related_name=False, on_delete=fields.RESTRICT
    )
    member_id: int
    # "<member id>:<Idempotency-Key>": the same checkout retried is the same order
    request_key = fields.CharField(max_length=191, null=True, unique=True)
    status = fields.CharField(max_length=24, default=PENDING_PAYMENT, db_index=True)
    delivery = fields.CharField(max_length=16)
    # an order for a unit held elsewhere ("seckill": a flash-sale win): its lines take no
    # catalog stock, and paying, closing and refunding it tell the holder (orders/held.py)
    source = fields.CharField(max_length=16, default="")
    source_ref = fields.CharField(max_length=64, null=True, unique=True)
    address: dict[str, str] | None = fields.JSONField(null=True)  # type: ignore[assignment]
    breakdown: dict[str, Any] = fields.JSONField(default=dict)  # type: ignore[assignment]

    list_total_fen = fields.BigIntField(default=0)
    member_total_fen = fields.BigIntField(default=0)
    coupon_id = fields.BigIntField(null=True)
    coupon_fen = fields.BigIntField(default=0)
    goods_fen = fields.BigIntField(default=0)
    points_used = fields.BigIntField(default=0)
    points_fen = fields.BigIntField(default=0)
    points_hold_id = fields.BigIntField(null=True)
    shipping_fen = fields.BigIntField(default=0)
    amount_due_fen = fields.BigIntField(default=0)
    wallet_fen = fields.BigIntField(default=0)
    wallet_principal_fen = fields.BigIntField(default=0)
    wallet_bonus_fen = fields.BigIntField(default=0)
    cash_fen = fields.BigIntField(default=0)

    pay_deadline = fields.DatetimeField(null=True)
    # wx.requestPayment parameters of the WeChat Pay order, once it was created
    prepay: dict[str, str] | None = fields.JSONField(null=True)  # type: ignore[assignment]
    prepay_at = fields.DatetimeField(null=True)
    pay_error = fields.CharField(max_length=64, default="")
    transaction_id = fields.CharField(max_length=64, null=True)
    paid_at = fields.DatetimeField(null=True)

    shipping_company = fields.CharField(max_length=32, default="")
    tracking_no = fields.CharField(max_length=64, default="")
    shipped_at = fields.DatetimeField(null=True)
    completed_at = fields.DatetimeField(null=True)
    cancelled_at = fields.DatetimeField(null=True)
    closed_at = fields.DatetimeField(null=True)
    cancel_reason = fields.CharField(max_length=128, default="")

    # what came back so far (sums of this order's refunds)
    refunded_fen = fields.BigIntField(default=0)  # wallet + cash
    refunded_cash_fen = fields.BigIntField(default=0)
    refunded_wallet_fen = fields.BigIntField(default=0)
    refunded_points = fields.BigIntField(default=0)
    # order-to-points granted on completion, on `earn_base_fen` (paid less refunded by then)
    earn_base_fen = fields.BigIntField(default=0)
    earned_points = fields.BigIntField(default=0)
    earned_points_reversed = fields.BigIntField(default=0)
    refunded_fen_at_completion = fields.BigIntField(default=0)

    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    lines: fields.ReverseRelation[OrderLine]
    refunds: fields.ReverseRelation[OrderRefund]

    class Meta:
        table = "mall_order"
        indexes = (("member_id", "id"), ("status", "pay_deadline"), ("status", "shipped_at"))


class OrderLine(Model):
    """One SKU of an order as priced when it was placed. `points_used` is the order's
    points shared over the lines like `points_fen`, so a refund by line knows its points."""

    id = fields.BigIntField(primary_key=True)
    order: fields.ForeignKeyRelation[Order] = fields.ForeignKeyField(
        "models.Order", related_name="lines", on_delete=fields.CASCADE
    )
    order_id: int
    sku_id = fields.BigIntField()
    product_id = fields.BigIntField()
    name = fields.CharField(max_length=64)
    specs: dict[str, str] = fields.JSONField(default=dict)  # type: ignore[assignment]
    quantity = fields.IntField()
    is_gift = fields.BooleanField(default=False)
    unit_list_fen = fields.BigIntField()
    unit_member_fen = fields.BigIntField()
    list_total_fen = fields.BigIntField()
    member_total_fen = fields.BigIntField()
    coupon_fen = fields.BigIntField(default=0)
    points_fen = fields.BigIntField(default=0)
    points_used = fields.BigIntField(default=0)
    due_fen = fields.BigIntField()
    refunded_quantity = fields.IntField(default=0)
    refunded_due_fen = fields.BigIntField(default=0)
    refunded_points = fields.BigIntField(default=0)

    class Meta:
        table = "mall_order_line"


class OrderRefund(Model):
    """One give-back: a cancel, a close at the deadline, a (partial) refund, or the cash of
    a payment that arrived after the order had closed. `out_refund_no` is unique, so the
    WeChat refund can be retried safely."""

    id = fields.BigIntField(primary_key=True)
    order: fields.ForeignKeyRelation[Order] = fields.ForeignKeyField(
        "models.Order", related_name="refunds", on_delete=fields.CASCADE
    )
    order_id: int
    out_refund_no = fields.CharField(max_length=64, unique=True)
    kind = fields.CharField(max_length=16)  # cancel | close | refund | late_payment
    request_key = fields.CharField(max_length=191, null=True, unique=True)
    lines: list[dict[str, int]] = fields.JSONField(default=list)  # type: ignore[assignment]
    goods_fen = fields.BigIntField(default=0)  # lines' due_fen given back
    shipping_fen = fields.BigIntField(default=0)
    money_fen = fields.BigIntField(default=0)  # wallet + cash
    wallet_fen = fields.BigIntField(default=0)
    cash_fen = fields.BigIntField(default=0)
    points = fields.BigIntField(default=0)  # spent points given back
    earned_points_reversed = fields.BigIntField(default=0)
    coupon_status = fields.CharField(max_length=16, default="")
    restocked = fields.BooleanField(default=True)
    reason = fields.CharField(max_length=128, default="")
    staff_id = fields.BigIntField(null=True)
    # none | pending (to send) | processing | succeeded | failed (ops must look) |
    # abnormal (WeChat could not pay it out: ops retry it or pay it offline) | offline
    cash_status = fields.CharField(max_length=16, default="none", db_index=True)
    cash_refund_id = fields.CharField(max_length=64, default="")
    cash_error = fields.CharField(max_length=255, default="")
    # ops retries of an abnormal cash refund: attempt n goes to WeChat Pay as
    # "<out_refund_no>-<n>"; `resolution` says what ops did (retry | offline)
    cash_attempt = fields.IntField(default=0)
    resolution = fields.CharField(max_length=16, default="")
    resolution_note = fields.CharField(max_length=255, default="")
    resolved_by = fields.BigIntField(null=True)
    resolved_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "mall_order_refund"
