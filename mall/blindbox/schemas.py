from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mall.kit.bounds import Id
from mall.kit.text import ImageRef, SafeLine, SafeText
from mall.pricing.calc import Delivery

TIER_PATTERN = r"^[a-z0-9_]+$"

# --- shopper -----------------------------------------------------------------


class GuaranteeOut(BaseModel):
    tier: str
    every: int
    active: bool = Field(description="False while every prize of the tier is sold out")
    text: str


class SeriesCard(BaseModel):
    id: int
    name: str
    cover_image: str
    points_cost: int
    starts_at: datetime | None
    ends_at: datetime | None
    is_open: bool = Field(description="Drawing is possible now (on sale and inside its window)")
    sold_out: bool
    daily_draw_cap: int | None
    min_age: int
    allow_minors: bool
    guarantee: GuaranteeOut | None


class PrizeDisclosure(BaseModel):
    id: int
    name: str
    image: str
    kind: str
    tier: str
    value_fen: int
    weight: int
    effective_weight: int = Field(description="weight, or 0 while sold out")
    probability: float = Field(description="effective_weight / total_weight")
    stock_left: int | None = Field(description="None means unlimited")
    sold_out: bool


class TierDisclosure(BaseModel):
    tier: str
    probability: float
    prizes: int


class MyStatus(BaseModel):
    draws_today: int
    draws_left_today: int | None
    pity_count: int = Field(description="draws since your last prize of the guaranteed tier")
    guarantee_in: int | None = Field(description="the guarantee fires on this draw at the latest")


class SeriesDetail(SeriesCard):
    description: str
    rules: str
    total_weight: int
    prizes: list[PrizeDisclosure]
    tiers: list[TierDisclosure]
    sold_out_rule: str
    me: MyStatus | None = None


class PrizeWon(BaseModel):
    id: int
    name: str
    image: str
    kind: str
    tier: str
    value_fen: int
    coupon_template_id: int | None


class CouponWon(BaseModel):
    id: int
    template_id: int
    name: str
    valid_from: datetime
    expires_at: datetime = Field(description="exclusive: the coupon works until this instant")
    last_valid_day: date


DrawState = Literal["pending", "confirmed", "released"]


class DrawOut(BaseModel):
    """A draw: answered at once as `pending` (the prize is decided, the points are spent
    when it is recorded), then `confirmed` (points spent; a coupon issued or an item due)
    or `released` (`release_reason`; nothing spent, the prize went back)."""

    draw_id: str = Field(description="the draw's reservation id; GET /blind-boxes/draws/{id}")
    status: DrawState
    release_reason: str | None = Field(
        default=None, description="not_enough_points | prize_unavailable | oversell_guard"
    )
    message: str
    series_id: int
    seq: int
    prize: PrizeWon
    guaranteed: bool
    pity_before: int
    pity_after: int
    points_cost: int
    draws_today: int | None = Field(default=None, description="in the draw's own answer")
    fulfilment_status: str | None = Field(
        default=None, description="once confirmed: pending (items) or done (coupon issued)"
    )
    coupon: CouponWon | None = Field(
        default=None, description="the coupon a confirmed coupon prize put in the account"
    )
    created_at: datetime | None = Field(default=None, description="when it was recorded")


class MyDrawOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    draw_id: str
    series_id: int
    prize_id: int
    prize_name: str
    tier: str
    value_fen: int
    points_cost: int
    guaranteed: bool
    status: DrawState
    release_reason: str
    fulfilment_status: str = Field(
        description="pending (an item to ship or pick up), ordered (shipping asked for: "
        "see the order), done (a coupon issued)"
    )
    mall_order_id: int | None = Field(default=None, description="the order shipping it")
    coupon_id: int | None
    created_at: datetime


class PrizeShipIn(BaseModel):
    """Where an item prize goes: it becomes a mall order of 0 fen that ops ship with a
    carrier and tracking number (or that the member picks up)."""

    model_config = ConfigDict(extra="forbid")

    delivery: Delivery = "express"
    address_id: Id | None = Field(
        default=None, description="required unless the prize is picked up"
    )


# --- admin -------------------------------------------------------------------


class PrizeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: SafeLine = Field(min_length=1, max_length=64)
    image: ImageRef = Field(default="", max_length=512)
    kind: Literal["item", "coupon"] = "item"
    coupon_template_id: Id | None = None
    tier: str = Field(min_length=1, max_length=16, pattern=TIER_PATTERN, examples=["rare"])
    weight: int = Field(ge=0, le=1_000_000, description="relative chance; 0 parks the prize")
    stock: int | None = Field(default=None, ge=0, le=10_000_000, description="None = unlimited")
    value_fen: int = Field(default=0, ge=0, le=10_000_000_00)

    @model_validator(mode="after")
    def _coupon_needs_template(self) -> PrizeIn:
        if self.kind == "coupon" and self.coupon_template_id is None:
            raise ValueError("a coupon prize needs coupon_template_id")
        if self.kind == "item" and self.coupon_template_id is not None:
            raise ValueError("only a coupon prize has coupon_template_id")
        return self


class PrizePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: SafeLine | None = Field(default=None, min_length=1, max_length=64)
    image: ImageRef | None = Field(default=None, max_length=512)
    coupon_template_id: Id | None = None
    tier: str | None = Field(default=None, min_length=1, max_length=16, pattern=TIER_PATTERN)
    weight: int | None = Field(default=None, ge=0, le=1_000_000)
    value_fen: int | None = Field(default=None, ge=0, le=10_000_000_00)


class _SeriesFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cover_image: ImageRef | None = Field(default=None, max_length=512)
    description: SafeText | None = Field(default=None, max_length=10_000)
    rules: SafeText | None = Field(default=None, max_length=10_000)
    status: Literal["draft", "on_sale", "off_sale"] | None = None
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    daily_draw_cap: int | None = Field(default=None, ge=1, le=10_000)
    # under-8s may never buy blind boxes (SAMR 2023)
    min_age: int | None = Field(default=None, ge=8, le=100)
    allow_minors: bool | None = None
    guarantee_tier: str | None = Field(
        default=None, min_length=1, max_length=16, pattern=TIER_PATTERN
    )
    guarantee_every: int | None = Field(default=None, ge=2, le=10_000)


class SeriesIn(_SeriesFields):
    name: SafeLine = Field(min_length=1, max_length=64)
    points_cost: int = Field(ge=1, le=100_000_000)
    prizes: list[PrizeIn] = Field(default_factory=list, max_length=200)


class SeriesPatch(_SeriesFields):
    name: SafeLine | None = Field(default=None, min_length=1, max_length=64)
    points_cost: int | None = Field(default=None, ge=1, le=100_000_000)


class StockAdjustIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    delta: int = Field(ge=-10_000_000, le=10_000_000, description="units to add (or take away)")
    reason: SafeLine = Field(min_length=1, max_length=200)


class AdminPrizeOut(BaseModel):
    id: int
    name: str
    image: str
    kind: str
    coupon_template_id: int | None
    tier: str
    weight: int
    value_fen: int
    stock: int | None = Field(description="units ever allotted; None = unlimited")
    stock_left: int | None = Field(description="live figure from Redis")
    drawn: int


class AdminSeriesOut(BaseModel):
    id: int
    name: str
    cover_image: str
    description: str
    rules: str
    points_cost: int
    status: str
    starts_at: datetime | None
    ends_at: datetime | None
    daily_draw_cap: int | None
    min_age: int
    allow_minors: bool
    guarantee_tier: str | None
    guarantee_every: int | None
    draws: int = Field(description="confirmed draws")
    released: int = Field(description="draws released at persistence (nothing spent)")
    backlog: int = Field(description="draws answered but not persisted yet (the stream)")
    prizes: list[AdminPrizeOut]
    created_at: datetime
    updated_at: datetime


class AdminDrawOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    draw_id: str
    seq: int
    series_id: int
    member_id: int
    prize_id: int
    prize_name: str
    tier: str
    value_fen: int
    points_cost: int
    random_value: int
    probability_table: dict[str, object]
    guaranteed: bool
    pity_before: int
    pity_after: int
    points_entry_key: str
    business_day: date
    fulfilment_status: str
    coupon_id: int | None
    status: str
    release_reason: str
    created_at: datetime


class ReconcileOut(BaseModel):
    series_id: int
    ok: bool
    backlog: int
    lines: list[str] = Field(description="each limited prize's equation, then notes")
