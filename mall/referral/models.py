"""Promoters, bindings, the commission ledger and the versioned promoter-level rules."""

from __future__ import annotations

from typing import Any

from tortoise import fields
from tortoise.models import Model


class Promoter(Model):
    """Someone customers can be bound to: a member (KOC) or a staff salesperson."""

    id = fields.BigIntField(primary_key=True)
    member_id = fields.BigIntField(null=True, unique=True)
    staff_id = fields.BigIntField(null=True, unique=True)
    code = fields.CharField(max_length=16, unique=True)
    level = fields.CharField(max_length=32)
    active = fields.BooleanField(default=True)
    created_at = fields.DatetimeField()

    class Meta:
        table = "referral_promoter"


class ReferralBinding(Model):
    """A customer bound to a promoter. One per customer (unique): the first binding wins
    and is never replaced."""

    id = fields.BigIntField(primary_key=True)
    customer_id = fields.BigIntField(unique=True)
    promoter: Any = fields.ForeignKeyField(
        "models.Promoter", related_name="bindings", on_delete=fields.RESTRICT
    )
    promoter_id: int
    code = fields.CharField(max_length=16)
    source = fields.CharField(max_length=16)  # share | login | ops
    bound_at = fields.DatetimeField()

    class Meta:
        table = "referral_binding"
        indexes = (("promoter_id", "id"),)


class CommissionEntry(Model):
    """One change of a promoter's commission. Never updated or deleted: an order's
    completion adds `rate x paid`; a refund adds a negative entry. `base_fen` is the paid
    amount the entry is on (negative for refunds), so an order's net base is a sum."""

    id = fields.BigIntField(primary_key=True)
    promoter: Any = fields.ForeignKeyField(
        "models.Promoter", related_name="commissions", on_delete=fields.RESTRICT
    )
    promoter_id: int
    customer_id = fields.BigIntField()
    order_id = fields.BigIntField(db_index=True)
    event = fields.CharField(max_length=16)  # completed | refunded
    # "order:<id>:completed" or "order:<id>:refund:<ref>": one entry per order event
    event_key = fields.CharField(max_length=191, unique=True)
    level = fields.CharField(max_length=32)
    rate_bp = fields.IntField()  # basis points: 500 = 5%
    base_fen = fields.BigIntField()
    amount_fen = fields.BigIntField()
    created_at = fields.DatetimeField()

    class Meta:
        table = "referral_commission"
        indexes = (("promoter_id", "id"),)


class ReferralRulesVersion(Model):
    """Promoter levels and their commission rates — every save is a new version."""

    id = fields.BigIntField(primary_key=True)
    version = fields.IntField(unique=True)
    document: dict[str, Any] = fields.JSONField()  # type: ignore[assignment]
    staff_id = fields.BigIntField(null=True)
    created_at = fields.DatetimeField()

    class Meta:
        table = "referral_rules"
