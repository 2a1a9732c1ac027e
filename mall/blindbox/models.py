from __future__ import annotations

from enum import StrEnum
from typing import Any

from tortoise import fields
from tortoise.models import Model


class DrawStatus(StrEnum):
    CONFIRMED = "confirmed"  # points spent, prize granted (coupon) or due (item)
    RELEASED = "released"  # refused at persistence (e.g. not enough points); unit went back


class BlindBoxSeries(Model):
    """A blind-box series drawn with points.

    Odds, values, rules and the guarantee are disclosed before any draw (SAMR 2023
    blind-box guideline). Members need a birthday on file: never under 8 (`min_age`),
    and under-18s only when `allow_minors` is set."""

    id = fields.BigIntField(primary_key=True)
    name = fields.CharField(max_length=64)
    cover_image = fields.CharField(max_length=512, default="")
    description = fields.TextField(default="")
    rules = fields.TextField(default="")
    points_cost = fields.IntField()
    status = fields.CharField(max_length=16, default="draft")  # draft | on_sale | off_sale
    starts_at = fields.DatetimeField(null=True)
    ends_at = fields.DatetimeField(null=True)
    # per member per Asia/Shanghai business day; None = no cap
    daily_draw_cap = fields.IntField(null=True)
    min_age = fields.IntField(default=8)
    allow_minors = fields.BooleanField(default=False)
    # a prize of this tier at the latest on the N-th draw since the member's last one
    guarantee_tier = fields.CharField(max_length=16, null=True)
    guarantee_every = fields.IntField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    prizes: fields.ReverseRelation[BlindBoxPrize]

    class Meta:
        table = "blindbox_series"


class BlindBoxPrize(Model):
    """A prize in a series. `stock` is every unit ever allotted (initial plus audited
    adjustments); `drawn` counts its confirmed draws (the database's guard: a draw is
    confirmed only while drawn < stock); units left = stock - drawn, and Redis holds
    that live figure."""

    id = fields.BigIntField(primary_key=True)
    series: fields.ForeignKeyRelation[BlindBoxSeries] = fields.ForeignKeyField(
        "models.BlindBoxSeries", related_name="prizes", on_delete=fields.RESTRICT
    )
    series_id: int
    name = fields.CharField(max_length=64)
    image = fields.CharField(max_length=512, default="")
    kind = fields.CharField(max_length=16, default="item")  # item | coupon
    # coupon prizes name a coupon template; the draw issues one coupon of it
    coupon_template_id = fields.BigIntField(null=True)
    tier = fields.CharField(max_length=16, default="common")
    weight = fields.IntField()
    stock = fields.IntField(null=True)  # None = unlimited
    drawn = fields.IntField(default=0)
    value_fen = fields.BigIntField(default=0)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "blindbox_prize"


class BlindBoxDraw(Model):
    """Append-only draw log: enough to re-derive every result (`service.rederive`).
    Every decision the member was told ends here once: confirmed, or released with a
    reason (nothing spent; the unit went back)."""

    id = fields.BigIntField(primary_key=True)
    # the reservation id the draw answered: "<series id>-<hex>"
    draw_id = fields.CharField(max_length=48, unique=True)
    # the series' draw counter in Redis; the reconciler counts draws up to a snapshot of it
    seq = fields.BigIntField()
    series: fields.ForeignKeyRelation[BlindBoxSeries] = fields.ForeignKeyField(
        "models.BlindBoxSeries", related_name="draws", on_delete=fields.RESTRICT
    )
    series_id: int
    member: Any = fields.ForeignKeyField(
        "models.Member", related_name=False, on_delete=fields.RESTRICT
    )
    member_id: int
    prize: fields.ForeignKeyRelation[BlindBoxPrize] = fields.ForeignKeyField(
        "models.BlindBoxPrize", related_name="draws", on_delete=fields.RESTRICT
    )
    prize_id: int
    prize_name = fields.CharField(max_length=64)
    tier = fields.CharField(max_length=16)
    value_fen = fields.BigIntField(default=0)
    points_cost = fields.IntField()
    random_value = fields.BigIntField()  # r from `secrets`, 0 <= r < 2**53
    # {"mode": "normal"|"guarantee", "tier": ..., "total": W, "prizes": [[id, tier, w], ...]}
    probability_table: dict[str, Any] = fields.JSONField()  # type: ignore[assignment]
    guaranteed = fields.BooleanField(default=False)
    pity_before = fields.IntField(default=0)
    pity_after = fields.IntField(default=0)
    points_entry_key = fields.CharField(max_length=64)
    business_day = fields.DateField()
    # pending: an item waiting for delivery or pickup; ordered: the member asked for it
    # (the mall order `mall_order_id` ships it); done: a coupon issued with the draw
    fulfilment_status = fields.CharField(max_length=16, default="pending")
    mall_order_id = fields.BigIntField(null=True, unique=True)
    coupon_id = fields.BigIntField(null=True)  # the coupon a coupon prize issued
    status = fields.CharEnumField(DrawStatus, max_length=16, default=DrawStatus.CONFIRMED)
    release_reason = fields.CharField(max_length=32, default="")
    stock_returned = fields.BooleanField(default=False)  # a released draw's unit is back
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "blindbox_draw"
        indexes = (("series_id", "member_id"), ("series_id", "business_day"))
