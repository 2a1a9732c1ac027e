from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tortoise import fields
from tortoise.models import Model

if TYPE_CHECKING:
    from mall.members.models import Member

ITEM_KINDS = ("gift", "voucher", "activity")
ITEM_STATUSES = ("draft", "on", "off")
LIMIT_PERIODS = ("", "day", "week", "month")

# gift: awaiting_shipment -> shipped | cancelled; voucher: issued (-> cancelled by ops);
# activity: enrolled -> cancelled; released: decided in Redis, refused by the database
# (release_reason says why: not_enough_points, level_too_low, ...), nothing spent.
# points + cash: pending_payment (points held, units taken) -> the kind's status once the
# cash is paid, or released (`unpaid`) when it is not; a paid one whose order is refunded
# in full is `refunded` (points back; its units stay out, like a shipped unit)
REDEMPTION_STATUSES = (
    "pending_payment",
    "awaiting_shipment",
    "shipped",
    "issued",
    "enrolled",
    "cancelled",
    "released",
    "refunded",
)
# the statuses whose units are out of stock (counted as redeemed)
ACTIVE_STATUSES = (
    "pending_payment",
    "awaiting_shipment",
    "shipped",
    "issued",
    "enrolled",
    "refunded",
)


class PointsMallItem(Model):
    """Something members redeem with points: a gift, a voucher or an activity entry.

    `stock` is what is left in the database: total_stock minus active redemptions,
    changed only by conditional updates. Redis holds the live copy the Lua decides on."""

    id = fields.BigIntField(primary_key=True)
    name = fields.CharField(max_length=64)
    description = fields.TextField(default="")
    pictures: list[str] = fields.JSONField(default=list)  # type: ignore[assignment]
    kind = fields.CharField(max_length=16, default="gift")
    points_price = fields.IntField()
    # points + cash: the cash part per unit (0: points only), paid as a mall order
    cash_price_fen = fields.BigIntField(default=0)
    marked_value_fen = fields.BigIntField(null=True)
    total_stock = fields.IntField(default=0)
    stock = fields.IntField(default=0)
    limit_per_member = fields.IntField(default=0)  # 0: no limit
    limit_per_period = fields.IntField(default=0)  # 0: no limit
    limit_period = fields.CharField(max_length=8, default="")  # "", day, week, month
    level_required = fields.IntField(default=0)
    # gated activities: the balance a member must hold, separate from the price
    min_points_balance = fields.IntField(default=0)
    # vouchers: the coupons template each unit issues; None keeps the voucher code
    coupon_template_id = fields.BigIntField(null=True)
    status = fields.CharField(max_length=8, default="draft")
    on_shelf_at = fields.DatetimeField(null=True)
    off_shelf_at = fields.DatetimeField(null=True)
    sort_order = fields.IntField(default=0)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "pointsmall_item"


class PointsMallRedemption(Model):
    """One redemption: written by the consumer in the same transaction as the points
    spend and the stock decrement; `reservation_id` ties it to the Redis decision
    (unique). A `released` one records a decision the database refused."""

    id = fields.BigIntField(primary_key=True)
    reservation_id = fields.CharField(max_length=64, unique=True)
    item: fields.ForeignKeyRelation[PointsMallItem] = fields.ForeignKeyField(
        "models.PointsMallItem", related_name="redemptions", on_delete=fields.RESTRICT
    )
    item_id: int
    member: fields.ForeignKeyRelation[Member] = fields.ForeignKeyField(
        "models.Member", related_name=False, on_delete=fields.RESTRICT
    )
    member_id: int
    item_name = fields.CharField(max_length=64)
    kind = fields.CharField(max_length=16)
    quantity = fields.IntField()
    points_spent = fields.IntField()
    status = fields.CharField(max_length=24, db_index=True)
    spend_key = fields.CharField(max_length=128)
    period_label = fields.CharField(max_length=16, default="")
    voucher_code = fields.CharField(max_length=32, null=True, unique=True)
    # coupons granted in the redemption's transaction (coupon-voucher items only)
    coupon_ids: list[int] | None = fields.JSONField(null=True)  # type: ignore[assignment]
    address: dict[str, Any] | None = fields.JSONField(null=True)  # type: ignore[assignment]
    carrier = fields.CharField(max_length=32, default="")
    tracking_number = fields.CharField(max_length=64, default="")
    shipped_at = fields.DatetimeField(null=True)
    cancelled_at = fields.DatetimeField(null=True)
    cancelled_by = fields.CharField(max_length=80, default="")
    cancel_reason = fields.CharField(max_length=255, default="")
    release_reason = fields.CharField(max_length=32, default="")
    # points + cash: the cash part, its deadline, the points hold and the paying order
    cash_fen = fields.BigIntField(default=0)
    pay_deadline = fields.DatetimeField(null=True)
    hold_id = fields.BigIntField(null=True)
    order_id = fields.BigIntField(null=True)
    # an unpaid one's units handed back to Redis (the expiry job finishes a crash's)
    stock_returned = fields.BooleanField(default=False)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "pointsmall_redemption"
        indexes = (("item_id", "status"), ("member_id", "item_id"))


class PointsMallStockAdjustment(Model):
    """Append-only record of every ops stock change (a delta, never an overwrite)."""

    id = fields.BigIntField(primary_key=True)
    item: fields.ForeignKeyRelation[PointsMallItem] = fields.ForeignKeyField(
        "models.PointsMallItem", related_name="stock_adjustments", on_delete=fields.RESTRICT
    )
    item_id: int
    delta = fields.IntField()
    total_after = fields.IntField()
    reason = fields.CharField(max_length=255)
    staff_id = fields.BigIntField(null=True)
    staff_username = fields.CharField(max_length=64, default="")
    idempotency_key = fields.CharField(max_length=160, null=True, unique=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "pointsmall_stock_adjustment"
