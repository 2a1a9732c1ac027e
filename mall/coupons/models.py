from __future__ import annotations

from typing import Any

from tortoise import fields
from tortoise.models import Model


class CouponTemplate(Model):
    """What ops design. Money terms (kind, amounts, scope) are fixed once created so an
    issued coupon never changes its promise; quantity, limits and windows may change.

    kinds: cash (no threshold), threshold (spend X save Y), discount (pay N%, capped),
    gift (a free SKU with an order over X), exchange (one unit of a product; pay shipping)."""

    id = fields.BigIntField(primary_key=True)
    name = fields.CharField(max_length=64)
    description = fields.CharField(max_length=255, default="")
    kind = fields.CharField(max_length=16)
    face_value_fen = fields.BigIntField(default=0)
    threshold_fen = fields.BigIntField(default=0)
    discount_percent = fields.IntField(default=100)
    discount_cap_fen = fields.BigIntField(default=0)
    gift_sku_id = fields.BigIntField(null=True)
    gift_value_fen = fields.BigIntField(default=0)
    scope = fields.CharField(max_length=16, default="all")  # all | categories | products
    scope_ids: list[int] = fields.JSONField(default=list)  # type: ignore[assignment]
    validity = fields.CharField(max_length=16, default="relative")  # relative | fixed
    valid_months = fields.IntField(default=3)
    valid_from = fields.DatetimeField(null=True)
    valid_until = fields.DatetimeField(null=True)
    total_quantity = fields.BigIntField(null=True)  # None = unlimited
    per_member_limit = fields.IntField(default=1)
    claimable = fields.BooleanField(default=True)  # shoppers may claim it themselves
    claim_starts_at = fields.DatetimeField(null=True)
    claim_ends_at = fields.DatetimeField(null=True)
    active = fields.BooleanField(default=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "coupon_template"


class Coupon(Model):
    """One issued coupon. Status moves only by conditional updates:
    usable -> locked (unpaid order) -> used, locked/used -> usable again on cancel or
    refund while still valid (else expired), usable -> expired past `expires_at`,
    usable/expired (never used) -> voided by ops or by cancelling what issued it."""

    id = fields.BigIntField(primary_key=True)
    template: fields.ForeignKeyRelation[CouponTemplate] = fields.ForeignKeyField(
        "models.CouponTemplate", related_name="coupons", on_delete=fields.RESTRICT
    )
    template_id: int
    member: Any = fields.ForeignKeyField("models.Member", related_name="coupons")
    member_id: int
    claim_id = fields.CharField(max_length=96, unique=True)
    source = fields.CharField(max_length=16)  # claim | pack | new_member | blind_box | points_mall
    status = fields.CharField(max_length=16, default="usable", db_index=True)
    valid_from = fields.DatetimeField()
    expires_at = fields.DatetimeField(db_index=True)  # exclusive
    order_ref = fields.CharField(max_length=64, null=True)
    locked_at = fields.DatetimeField(null=True)
    used_at = fields.DatetimeField(null=True)
    reminded_at = fields.DatetimeField(null=True)
    voided_at = fields.DatetimeField(null=True)
    void_reason = fields.CharField(max_length=128, default="")
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "coupon"
        indexes = (("member_id", "status"),)


class GiftPack(Model):
    """A named bundle of templates: `items` = [{"template_id": 1, "quantity": 2}, ...].
    Packs with `for_new_members` are issued once to every member who joins."""

    id = fields.BigIntField(primary_key=True)
    name = fields.CharField(max_length=64)
    description = fields.CharField(max_length=255, default="")
    items: list[dict[str, int]] = fields.JSONField(default=list)  # type: ignore[assignment]
    for_new_members = fields.BooleanField(default=False)
    active = fields.BooleanField(default=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "gift_pack"


class GiftPackIssue(Model):
    """One pack given to one member — `issue_key` is unique, so a pack is given once per key
    ("join" for the new-member pack, the ops request's key otherwise)."""

    id = fields.BigIntField(primary_key=True)
    pack: Any = fields.ForeignKeyField("models.GiftPack", related_name="issues")
    pack_id: int
    member: Any = fields.ForeignKeyField("models.Member", related_name="gift_pack_issues")
    member_id: int
    issue_key = fields.CharField(max_length=192, unique=True)
    coupon_ids: list[int] = fields.JSONField(default=list)  # type: ignore[assignment]
    skipped: list[dict[str, object]] = fields.JSONField(default=list)  # type: ignore[assignment]
    staff_id = fields.BigIntField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "gift_pack_issue"
