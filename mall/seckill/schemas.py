from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from mall.kit.bounds import Id
from mall.kit.masking import Phone
from mall.kit.text import ImageRef, SafeLine
from mall.pricing.calc import Delivery

AttemptResult = Literal["won", "sold_out", "limit_reached", "not_started", "ended", "rate_limited"]
ReservationStatus = Literal[
    "pending", "confirmed", "pending_payment", "paid", "expired", "released", "refunded"
]
SessionState = Literal["upcoming", "live", "ended", "closed"]


class AttemptOut(BaseModel):
    result: AttemptResult
    reservation_id: str | None = None
    message: str
    retry_after_ms: int | None = None


class ReservationOut(BaseModel):
    reservation_id: str
    item_id: int
    status: ReservationStatus
    points_price: int | None = None
    cash_price_fen: int | None = None
    pay_deadline: datetime | None = None
    release_reason: str | None = None
    order_id: int | None = Field(
        default=None, description="the mall order paying this win, once taken to payment"
    )


class ItemOut(BaseModel):
    id: int
    title: str
    product_id: int | None
    image_url: str
    points_price: int
    cash_price_fen: int
    stock: int
    stock_left: int
    per_member_limit: int


class SaleRules(BaseModel):
    """Who may attempt a session's items (fair sales). Level, phone and join date are read
    from the member's access token; flagged and booked members from Redis."""

    model_config = ConfigDict(extra="forbid")

    require_phone: bool = False
    joined_before: AwareDatetime | None = Field(
        default=None, description="Only members who joined before this instant"
    )
    min_level: int = Field(default=0, ge=0, le=100)
    exclude_flagged: bool = Field(default=False, description="Turn away members ops flagged")
    require_booking: bool = Field(default=False, description="Only members who booked it")


class SessionOut(BaseModel):
    id: int
    name: str
    starts_at: datetime
    ends_at: datetime
    state: SessionState
    rules: SaleRules
    items: list[ItemOut]


# --- ops ---------------------------------------------------------------------------


class ItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: SafeLine = Field(min_length=1, max_length=100)
    product_id: Id | None = None
    image_url: ImageRef = Field(default="", max_length=512)
    points_price: int = Field(default=0, ge=0, le=100_000_000)
    cash_price_fen: int = Field(default=0, ge=0, le=100_000_000)
    stock: int = Field(ge=0, le=10_000_000)
    per_member_limit: int = Field(default=1, ge=1, le=1000)


class ItemPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: SafeLine | None = Field(default=None, min_length=1, max_length=100)
    product_id: Id | None = None
    image_url: ImageRef | None = Field(default=None, max_length=512)
    points_price: int | None = Field(default=None, ge=0, le=100_000_000)
    cash_price_fen: int | None = Field(default=None, ge=0, le=100_000_000)
    stock: int | None = Field(default=None, ge=0, le=10_000_000)
    per_member_limit: int | None = Field(default=None, ge=1, le=1000)


class SessionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: SafeLine = Field(min_length=1, max_length=100)
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    rules: SaleRules = Field(default_factory=SaleRules)
    items: list[ItemIn] = Field(default_factory=list, max_length=50)


class SessionPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: SafeLine | None = Field(default=None, min_length=1, max_length=100)
    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None
    rules: SaleRules | None = Field(default=None, description="Replaces the rules as a whole")


class AdminItemOut(ItemOut):
    sold: int
    warm: bool
    held: int
    backlog: int


class AdminSessionOut(BaseModel):
    id: int
    name: str
    starts_at: datetime
    ends_at: datetime
    status: str
    state: SessionState
    rules: SaleRules
    closed_at: datetime | None
    created_at: datetime
    items: list[AdminItemOut] = Field(default_factory=list)


class WinnerOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    reservation_id: str
    member_id: int
    status: str
    release_reason: str
    points_price: int
    cash_price_fen: int
    pay_deadline: datetime | None
    mall_order_id: int | None = Field(default=None, description="the order paying the win")
    won_at: datetime


class ItemCheckOut(BaseModel):
    item_id: int
    title: str
    initial: int
    redis_stock: int | None
    held: int
    backlog: int
    returns_due: int
    ok: bool
    problems: list[str]


class WinPayIn(BaseModel):
    """How to pay a cash (or points + cash) win: it becomes a mall order with the sale's
    price; the wallet pays what it covers if asked, WeChat Pay the rest."""

    model_config = ConfigDict(extra="forbid")

    use_wallet: bool = Field(default=False, description="pay what the wallet covers from it")
    delivery: Delivery = "express"
    address_id: Id | None = Field(
        default=None, description="required unless the prize is picked up"
    )


# --- fair sales: bookings, flags, suspicious patterns -----------------------------------


class BookingOut(BaseModel):
    session_id: int
    session_name: str
    starts_at: datetime
    ends_at: datetime
    booked_at: datetime
    reminder: str


_NICKNAME = "The member's nickname; null: the account no longer exists"
_PHONE = "The member's phone, masked (138****8000); null: none bound"


class AdminBookingOut(BaseModel):
    id: int
    member_id: int
    member_nickname: str | None = Field(default=None, description=_NICKNAME)
    member_phone: Phone | None = Field(default=None, description=_PHONE)
    created_at: datetime
    cancelled_at: datetime | None
    reminder: str
    reminded_at: datetime | None


class FlagIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: SafeLine = Field(min_length=1, max_length=200)


class FlagOut(BaseModel):
    id: int = Field(description="The flag's id: `before_id` of the next page of flags")
    member_id: int
    member_nickname: str | None = Field(default=None, description=_NICKNAME)
    member_phone: Phone | None = Field(default=None, description=_PHONE)
    reason: str
    flagged_by: str
    flagged_at: datetime


class SharedMemberOut(BaseModel):
    id: int
    nickname: str | None = Field(default=None, description=_NICKNAME)
    phone: Phone | None = Field(default=None, description=_PHONE)


class SharedOut(BaseModel):
    """Several accounts sharing one phone, delivery address or login address."""

    value: str = Field(description="The phone, address or IP (phones masked unless revealed)")
    member_count: int
    member_ids: list[int] = Field(description="At most 200")
    flagged_ids: list[int]
    members: list[SharedMemberOut] = Field(
        default_factory=list, description="`member_ids` with who each account is"
    )
