"""Stored value (储值金): a wallet per member with principal and bonus kept apart, its
append-only ledger, top-up plans, top-ups paid through WeChat Pay and their refunds.

Invariant (`mall check wallet`): for every member, sum(entries.principal_delta) ==
wallet.principal_fen >= 0 and sum(entries.bonus_delta) == wallet.bonus_fen >= 0.
Balances move only by conditional updates in the same transaction as their entry."""

from __future__ import annotations

from typing import Any

from tortoise import fields
from tortoise.models import Model

# Entry kinds
TOPUP = "topup"  # a paid top-up: principal + its bonus
PAY = "pay"  # an order paid from the wallet
REFUND = "refund"  # an order refund back to the wallet, in the payment's proportion
TOPUP_REFUND = "topup_refund"  # principal refunded to WeChat Pay, bonus forfeited
TOPUP_REFUND_RETURN = "topup_refund_return"  # a top-up refund WeChat Pay refused, undone
ADJUST = "adjust"  # a staff adjustment with a reason
ENTRY_KINDS = (TOPUP, PAY, REFUND, TOPUP_REFUND, TOPUP_REFUND_RETURN, ADJUST)

# Top-up states
PENDING = "pending"  # waiting for the member to pay
PAID = "paid"  # credited
CLOSED = "closed"  # not paid in time, or never opened at WeChat Pay
TOPUP_STATES = (PENDING, PAID, CLOSED)

# Top-up refund states
REFUND_PENDING = "pending"  # wallet debited; WeChat Pay not (yet) told
REFUND_PROCESSING = "processing"  # accepted by WeChat Pay
REFUND_SUCCEEDED = "succeeded"
REFUND_ABNORMAL = "abnormal"  # WeChat could not pay it out; ops retry or pay it offline
REFUND_FAILED = "failed"  # refused or closed; the wallet got it back
REFUND_OFFLINE = "offline"  # ops paid it out another way (bank transfer, cash) and said so
REFUND_STATES = (
    REFUND_PENDING,
    REFUND_PROCESSING,
    REFUND_SUCCEEDED,
    REFUND_ABNORMAL,
    REFUND_FAILED,
    REFUND_OFFLINE,
)


class Wallet(Model):
    """A member's balances. Changed only by the wallet service, with its entry."""

    id = fields.BigIntField(primary_key=True)
    member: Any = fields.OneToOneField(
        "models.Member", related_name=False, on_delete=fields.RESTRICT
    )
    member_id: int
    principal_fen = fields.BigIntField(default=0)
    bonus_fen = fields.BigIntField(default=0)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "wallet"


class WalletEntry(Model):
    """One change of a wallet. Never updated or deleted."""

    id = fields.BigIntField(primary_key=True)
    member: Any = fields.ForeignKeyField(
        "models.Member", related_name=False, db_index=True, on_delete=fields.RESTRICT
    )
    member_id: int
    kind = fields.CharField(max_length=24)
    principal_delta = fields.BigIntField()
    bonus_delta = fields.BigIntField()
    principal_after = fields.BigIntField()
    bonus_after = fields.BigIntField()
    reference = fields.CharField(max_length=128, default="", db_index=True)
    reason = fields.CharField(max_length=255, default="")
    idempotency_key = fields.CharField(max_length=191, unique=True)
    # the payment a refund returns to
    original_id = fields.BigIntField(null=True, db_index=True)
    staff_id = fields.BigIntField(null=True)
    created_at = fields.DatetimeField(db_index=True)

    class Meta:
        table = "wallet_entry"
        indexes = (("member_id", "id"),)


class TopUpPlan(Model):
    """Pay `amount_fen`, get `bonus_fen` on top — at most `per_member_limit` times."""

    id = fields.BigIntField(primary_key=True)
    name = fields.CharField(max_length=64)
    amount_fen = fields.BigIntField()
    bonus_fen = fields.BigIntField(default=0)
    per_member_limit = fields.IntField(null=True)
    active = fields.BooleanField(default=True)
    sort = fields.IntField(default=0)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "wallet_topup_plan"


class TopUp(Model):
    """One top-up: a WeChat Pay payment `out_trade_no` ("T..."), credited once."""

    id = fields.BigIntField(primary_key=True)
    member: Any = fields.ForeignKeyField(
        "models.Member", related_name=False, db_index=True, on_delete=fields.RESTRICT
    )
    member_id: int
    plan_id = fields.BigIntField(db_index=True)
    out_trade_no = fields.CharField(max_length=32, unique=True)
    amount_fen = fields.BigIntField()
    bonus_fen = fields.BigIntField()
    openid = fields.CharField(max_length=64)
    status = fields.CharField(max_length=16, default=PENDING)
    transaction_id = fields.CharField(max_length=64, default="")
    # kept so a member who dismissed the payment sheet gets fresh parameters for it
    prepay_id = fields.CharField(max_length=64, default="")
    # principal refunded (including refunds still in flight) and bonus forfeited with it
    refunded_principal_fen = fields.BigIntField(default=0)
    forfeited_bonus_fen = fields.BigIntField(default=0)
    entry_id = fields.BigIntField(null=True)
    expires_at = fields.DatetimeField()
    paid_at = fields.DatetimeField(null=True)
    last_queried_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField()

    class Meta:
        table = "wallet_topup"
        indexes = (("status", "created_at"), ("member_id", "plan_id"))


class TopUpRefund(Model):
    """Principal of a top-up going back through WeChat Pay (out_refund_no "RT...")."""

    id = fields.BigIntField(primary_key=True)
    top_up: Any = fields.ForeignKeyField(
        "models.TopUp", related_name=False, db_index=True, on_delete=fields.RESTRICT
    )
    top_up_id: int
    member_id = fields.BigIntField(db_index=True)
    out_refund_no = fields.CharField(max_length=64, unique=True)
    idempotency_key = fields.CharField(max_length=191, unique=True)
    # principal taken from the wallet; bonus taken; bonus already spent, paid for out
    # of the principal (`clawback_fen`); cash sent = principal - clawback
    principal_fen = fields.BigIntField()
    bonus_fen = fields.BigIntField()
    clawback_fen = fields.BigIntField(default=0)
    cash_fen = fields.BigIntField()
    status = fields.CharField(max_length=16, default=REFUND_PENDING)
    refund_id = fields.CharField(max_length=64, default="")
    error_code = fields.CharField(max_length=64, default="")
    reason = fields.CharField(max_length=255, default="")
    staff_id = fields.BigIntField(null=True)
    entry_id = fields.BigIntField(null=True)
    # an ABNORMAL refund ops sent again: attempt n goes to WeChat Pay as
    # "<out_refund_no>-<n>" (a new refund there); or ops paid it out another way
    attempt = fields.IntField(default=0)
    resolution = fields.CharField(max_length=16, default="")  # "" | retry | offline
    resolution_note = fields.CharField(max_length=255, default="")
    resolved_by = fields.BigIntField(null=True)
    resolved_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField()
    updated_at = fields.DatetimeField()

    class Meta:
        table = "wallet_topup_refund"
        indexes = (("status", "updated_at"),)
