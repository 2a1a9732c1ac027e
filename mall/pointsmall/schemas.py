from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mall.addresses.schemas import AddressSnapshot
from mall.kit.bounds import Fen, Id, Points, SortOrder
from mall.kit.text import ImageRef, SafeLine, SafeText

ItemKind = Literal["gift", "voucher", "activity"]
LimitPeriod = Literal["", "day", "week", "month"]
# URLs from the upload route (site-relative) or absolute http(s) URLs
PictureUrl = Annotated[ImageRef, Field(min_length=1, max_length=512)]


class ItemFields(BaseModel):
    """Fields ops may set on create and change on edit."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: SafeLine = Field(min_length=1, max_length=64, examples=["保温杯 500ml"])
    description: SafeText = Field(default="", max_length=5000)
    pictures: list[PictureUrl] = Field(
        default_factory=list,
        max_length=12,
        description="Image URLs returned by `POST /api/admin/v1/uploads/images`.",
        examples=[["/static/uploads/ab/abcdef-750.webp"]],
    )
    points_price: int = Field(ge=1, le=100_000_000, examples=[1200])
    cash_price_fen: Fen = Field(
        default=0,
        description="Points + cash: the cash part per unit, in fen (0: points only). The "
        "points are held at redemption and the cash paid with `POST "
        "/api/v1/points-mall/reservations/{id}/pay` before the deadline.",
        examples=[0, 990],
    )
    marked_value_fen: Fen | None = Field(
        default=None, description="Value shown to members, in fen.", examples=[6900]
    )
    limit_per_member: int = Field(default=0, ge=0, le=10_000, description="0 means no limit.")
    limit_per_period: int = Field(default=0, ge=0, le=10_000, description="0 means no limit.")
    limit_period: LimitPeriod = Field(
        default="", description="Calendar period (Asia/Shanghai) of `limit_per_period`."
    )
    level_required: int = Field(default=0, ge=0, le=100)
    min_points_balance: Points = Field(
        default=0,
        description="Gated activities: the balance a member must hold to join, besides the price.",
    )
    coupon_template_id: Id | None = Field(
        default=None,
        description="Vouchers only: each unit redeemed issues one coupon of this template "
        "(`/api/admin/v1/coupon-templates`); without it a voucher gets a voucher code.",
    )
    on_shelf_at: datetime | None = Field(default=None, description="Shelf window start.")
    off_shelf_at: datetime | None = Field(default=None, description="Shelf window end.")
    sort_order: SortOrder = Field(default=0, description="Higher first among equals.")

    @model_validator(mode="after")
    def _check(self) -> ItemFields:
        if self.limit_per_period and not self.limit_period:
            raise ValueError("limit_per_period needs limit_period (day, week or month)")
        if self.on_shelf_at and self.off_shelf_at and self.off_shelf_at <= self.on_shelf_at:
            raise ValueError("off_shelf_at must be after on_shelf_at")
        return self


class ItemCreate(ItemFields):
    kind: ItemKind = "gift"
    total_stock: int = Field(ge=0, le=10_000_000, examples=[200])
    on_shelf: bool = Field(default=False, description="Put on the shelf right away.")

    @model_validator(mode="after")
    def _coupon_for_vouchers(self) -> ItemCreate:
        if self.coupon_template_id is not None and self.kind != "voucher":
            raise ValueError("coupon_template_id is for items of kind voucher")
        return self

    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=True,
        json_schema_extra={
            "examples": [
                {
                    "name": "保温杯 500ml",
                    "kind": "gift",
                    "points_price": 1200,
                    "marked_value_fen": 6900,
                    "total_stock": 200,
                    "limit_per_member": 1,
                    "pictures": ["/static/uploads/ab/abcdef-750.webp"],
                    "on_shelf": True,
                },
                {
                    "name": "训练营",
                    "kind": "activity",
                    "points_price": 500,
                    "min_points_balance": 1000,
                    "total_stock": 30,
                    "on_shelf": True,
                },
            ]
        },
    )


class ItemPatch(BaseModel):
    """Partial edit; stock changes go through stock adjustments."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: SafeLine | None = Field(default=None, min_length=1, max_length=64)
    description: SafeText | None = Field(default=None, max_length=5000)
    pictures: list[PictureUrl] | None = Field(default=None, max_length=12)
    points_price: int | None = Field(default=None, ge=1, le=100_000_000)
    cash_price_fen: Fen | None = None
    marked_value_fen: Fen | None = None
    limit_per_member: int | None = Field(default=None, ge=0, le=10_000)
    limit_per_period: int | None = Field(default=None, ge=0, le=10_000)
    limit_period: LimitPeriod | None = None
    level_required: int | None = Field(default=None, ge=0, le=100)
    min_points_balance: Points | None = None
    coupon_template_id: Id | None = Field(
        default=None, description="null takes the coupon off (back to voucher codes)."
    )
    on_shelf_at: datetime | None = None
    off_shelf_at: datetime | None = None
    sort_order: SortOrder | None = None


class StockAdjustIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    delta: int = Field(
        ge=-10_000_000,
        le=10_000_000,
        description="Units to add (positive) or take away (negative).",
    )
    reason: SafeLine = Field(min_length=1, max_length=255, examples=["补货 50 件"])

    @model_validator(mode="after")
    def _nonzero(self) -> StockAdjustIn:
        if self.delta == 0:
            raise ValueError("delta must be a non-zero number of units")
        return self


class StockAdjustOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    item_id: int
    delta: int
    total_after: int
    reason: str
    staff_username: str
    created_at: datetime


class AdminItemOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    description: str
    pictures: list[str]
    kind: str
    points_price: int
    cash_price_fen: int
    marked_value_fen: int | None
    total_stock: int
    stock: int = Field(description="Units left in the database (total minus redeemed).")
    redis_stock: int | None = Field(default=None, description="Live units left in Redis.")
    limit_per_member: int
    limit_per_period: int
    limit_period: str
    level_required: int
    min_points_balance: int
    coupon_template_id: int | None
    status: str
    on_shelf_at: datetime | None
    off_shelf_at: datetime | None
    sort_order: int
    created_at: datetime
    updated_at: datetime


class AdminItemPage(BaseModel):
    items: list[AdminItemOut]
    next_cursor: str | None = None


class ItemOut(BaseModel):
    """An item as a member sees it."""

    id: int
    name: str
    description: str
    pictures: list[str]
    kind: str
    points_price: int
    cash_price_fen: int = Field(default=0, description="The cash part per unit (fen), if any.")
    marked_value_fen: int | None
    stock_left: int
    limit_per_member: int
    limit_per_period: int
    limit_period: str
    level_required: int
    min_points_balance: int
    coupon_template_id: int | None = Field(
        default=None, description="Vouchers that issue a coupon of this template."
    )
    on_shelf: bool
    off_shelf_at: datetime | None
    affordable: bool = Field(description="The member's balance covers the price (and threshold).")
    level_allowed: bool
    unavailable_reason: str | None = Field(
        default=None,
        description="Error code the member would get now, e.g. OUT_OF_STOCK; null if redeemable.",
        examples=[None, "LEVEL_TOO_LOW"],
    )


class ItemPage(BaseModel):
    items: list[ItemOut]
    next_cursor: str | None = None
    points_balance: int


class RedeemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    quantity: int = Field(default=1, ge=1, le=99)
    address_id: Id | None = Field(
        default=None, description="Required for physical gifts (kind `gift`)."
    )


class RedemptionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    item_id: int
    item_name: str
    kind: str
    quantity: int
    points_spent: int
    status: str
    voucher_code: str | None
    coupon_ids: list[int] = Field(
        default_factory=list,
        description="Coupons issued by this redemption (see `/api/v1/coupons`).",
    )
    address: AddressSnapshot | None
    carrier: str
    tracking_number: str
    shipped_at: datetime | None
    cancelled_at: datetime | None
    cancel_reason: str
    release_reason: str = Field(
        default="",
        description="Why a `released` redemption was refused, e.g. not_enough_points, or "
        "`unpaid` (points + cash, not paid by the deadline).",
    )
    cash_fen: int = Field(default=0, description="Points + cash: the cash part (fen).")
    pay_deadline: datetime | None = Field(
        default=None, description="Points + cash: pay before this (`pending_payment`)."
    )
    order_id: int | None = Field(
        default=None, description="Points + cash: the mall order paying the cash part."
    )
    created_at: datetime

    @field_validator("coupon_ids", mode="before")
    @classmethod
    def _none_is_empty(cls, value: object) -> object:
        return [] if value is None else value


class ReservationOut(BaseModel):
    """A redemption as decided: `pending` until the consumer writes it, then the
    redemption's own status (e.g. `issued`, `awaiting_shipment`), or `released` with
    `release_reason` (e.g. `not_enough_points`) when the database refused it."""

    reservation_id: str = Field(examples=["42-9f8e7d6c5b4a39281706"])
    status: str = Field(examples=["pending", "issued", "released"])
    item_id: int
    item_name: str
    kind: str
    quantity: int
    points: int = Field(description="Points this redemption spends (0 once released).")
    redemption_id: int | None = Field(
        default=None, description="The written redemption (`/points-mall/redemptions/{id}`)."
    )
    release_reason: str | None = Field(default=None, examples=[None, "not_enough_points"])
    cash_fen: int = Field(
        default=0,
        description="Points + cash: the cash part (fen). The written redemption is "
        "`pending_payment` until paid with `POST .../pay`.",
    )
    pay_deadline: datetime | None = None
    order_id: int | None = None


class AdminRedemptionOut(RedemptionOut):
    member_id: int
    reservation_id: str
    cancelled_by: str


class RedemptionPage(BaseModel):
    items: list[RedemptionOut]
    next_cursor: str | None = None


class AdminRedemptionPage(BaseModel):
    items: list[AdminRedemptionOut]
    next_cursor: str | None = None


class RedemptionPayIn(BaseModel):
    """How to pay the cash part of a points + cash redemption: it becomes a mall order for
    the cash part; the wallet pays what it covers if asked, WeChat Pay the rest. A gift
    ships to the address chosen at redemption, so none is asked here."""

    model_config = ConfigDict(extra="forbid")

    use_wallet: bool = Field(default=False, description="pay what the wallet covers from it")


class ShipIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    carrier: SafeLine = Field(min_length=1, max_length=32, examples=["SF"])
    tracking_number: str = Field(
        min_length=4, max_length=64, pattern=r"^[A-Za-z0-9-]+$", examples=["SF1234567890123"]
    )


class CancelIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    reason: SafeLine = Field(default="", max_length=255)
