from __future__ import annotations

from datetime import date, datetime
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mall.kit.bounds import Count, Fen, Id, MemberLevel
from mall.kit.text import SafeLine, SafeText
from mall.pricing.calc import CouponKind, CouponScope

CouponStatus = Literal["usable", "locked", "used", "expired", "voided"]


class ClaimIn(BaseModel):
    template_id: Id = Field(examples=[12])


class CouponOut(BaseModel):
    id: int
    template_id: int
    name: str
    description: str
    kind: CouponKind
    face_value_fen: int
    threshold_fen: int
    discount_percent: int
    discount_cap_fen: int
    gift_sku_id: int | None
    scope: CouponScope
    scope_ids: list[int]
    status: CouponStatus = Field(description="`usable` coupons past expiry show as `expired`")
    source: str
    valid_from: datetime
    expires_at: datetime = Field(description="exclusive: the coupon works until this instant")
    last_valid_day: date = Field(description="the last Asia/Shanghai day the coupon works")
    created_at: datetime


class VoidIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: SafeLine = Field(min_length=1, max_length=128)


class VoidOut(BaseModel):
    id: int
    member_id: int
    status: CouponStatus
    voided_at: datetime | None
    void_reason: str


class CouponPage(BaseModel):
    items: list[CouponOut]
    next_cursor: str | None = None


# --- ops ----------------------------------------------------------------------


class _WindowCheck(BaseModel):
    @model_validator(mode="after")
    def _claim_window(self) -> Self:
        starts = getattr(self, "claim_starts_at", None)
        ends = getattr(self, "claim_ends_at", None)
        if starts and ends and starts >= ends:
            raise ValueError("claim_starts_at must be before claim_ends_at")
        return self


class TemplateIn(_WindowCheck):
    """A coupon template. Amounts are fen. `discount_percent` is what the member pays
    (90 = 10% off). Validity is `relative` (`valid_months` calendar months from issue) or
    `fixed` (`valid_from` .. `valid_until`, exclusive)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"name": "满100减20", "kind": "threshold", "face_value_fen": 2000,
                 "threshold_fen": 10000, "total_quantity": 1000, "per_member_limit": 1},
                {"name": "9折券", "kind": "discount", "discount_percent": 90,
                 "discount_cap_fen": 3000, "scope": "categories", "scope_ids": [3]},
            ]
        },
    )  # fmt: skip

    name: SafeLine = Field(min_length=1, max_length=64)
    description: SafeText = Field(default="", max_length=255)
    kind: CouponKind
    face_value_fen: int = Field(default=0, ge=0, le=10_000_000)
    threshold_fen: int = Field(default=0, ge=0, le=100_000_000)
    discount_percent: int = Field(default=100, ge=1, le=100)
    discount_cap_fen: Fen = Field(default=0, description="0 = no cap")
    gift_sku_id: Id | None = None
    gift_value_fen: Fen = Field(default=0, description="shown to the member; not charged")
    scope: CouponScope = "all"
    scope_ids: list[Id] = Field(default_factory=list, max_length=500)
    validity: Literal["relative", "fixed"] = "relative"
    valid_months: int | None = Field(default=None, ge=1, le=36, description="default: 3")
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    total_quantity: Count | None = Field(default=None, description="null = unlimited")
    per_member_limit: int = Field(default=1, ge=1, le=100)
    claimable: bool = True
    claim_starts_at: datetime | None = None
    claim_ends_at: datetime | None = None
    active: bool = True

    @model_validator(mode="after")
    def _terms(self) -> Self:
        kind = self.kind
        if kind == "cash" and (self.face_value_fen <= 0 or self.threshold_fen):
            raise ValueError("a cash coupon needs face_value_fen > 0 and no threshold")
        if kind == "threshold" and not 0 < self.face_value_fen <= self.threshold_fen:
            raise ValueError("a threshold coupon needs 0 < face_value_fen <= threshold_fen")
        if kind == "discount" and not 1 <= self.discount_percent <= 99:
            raise ValueError("a discount coupon needs discount_percent between 1 and 99")
        if kind == "gift" and self.gift_sku_id is None:
            raise ValueError("a gift coupon needs gift_sku_id")
        if kind == "exchange" and (self.scope != "products" or len(self.scope_ids) != 1):
            raise ValueError("an exchange voucher covers exactly one product (scope products)")
        if self.scope != "all" and not self.scope_ids:
            raise ValueError("scope_ids are needed unless scope is all")
        if self.validity == "fixed":
            if not self.valid_from or not self.valid_until or self.valid_from >= self.valid_until:
                raise ValueError("a fixed window needs valid_from before valid_until")
        return self


class TemplatePatch(_WindowCheck):
    """What may change after creation; the money terms never do (create a new template)."""

    model_config = ConfigDict(extra="forbid")

    name: SafeLine | None = Field(default=None, min_length=1, max_length=64)
    description: SafeText | None = Field(default=None, max_length=255)
    total_quantity: Count | None = Field(default=None, description="null = unlimited")
    per_member_limit: int | None = Field(default=None, ge=1, le=100)
    valid_months: int | None = Field(default=None, ge=1, le=36, description="for future issues")
    claimable: bool | None = None
    claim_starts_at: datetime | None = None
    claim_ends_at: datetime | None = None
    active: bool | None = None


class TemplateOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    description: str
    kind: CouponKind
    face_value_fen: int
    threshold_fen: int
    discount_percent: int
    discount_cap_fen: int
    gift_sku_id: int | None
    gift_value_fen: int
    scope: CouponScope
    scope_ids: list[int]
    validity: Literal["relative", "fixed"]
    valid_months: int
    valid_from: datetime | None
    valid_until: datetime | None
    total_quantity: int | None
    per_member_limit: int
    claimable: bool
    claim_starts_at: datetime | None
    claim_ends_at: datetime | None
    active: bool
    created_at: datetime
    issued: int = 0
    used: int = 0


class PackItem(BaseModel):
    template_id: Id
    quantity: int = Field(default=1, ge=1, le=20)


class GiftPackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: SafeLine = Field(min_length=1, max_length=64, examples=["新人礼包"])
    description: SafeText = Field(default="", max_length=255)
    items: list[PackItem] = Field(min_length=1, max_length=20)
    for_new_members: bool = Field(
        default=False, description="issued once to every member who joins"
    )
    active: bool = True


class GiftPackPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: SafeLine | None = Field(default=None, min_length=1, max_length=64)
    description: SafeText | None = Field(default=None, max_length=255)
    items: list[PackItem] | None = Field(default=None, min_length=1, max_length=20)
    for_new_members: bool | None = None
    active: bool | None = None


class GiftPackOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    description: str
    items: list[PackItem]
    for_new_members: bool
    active: bool
    created_at: datetime


class IssuePackIn(BaseModel):
    """Members by id, or a segment (every member with `tag`, and/or level >= `min_level`)."""

    model_config = ConfigDict(extra="forbid")

    member_ids: list[Id] = Field(default_factory=list, max_length=1000)
    tag: SafeLine | None = Field(default=None, max_length=64)
    min_level: MemberLevel | None = None

    @model_validator(mode="after")
    def _someone(self) -> Self:
        if not self.member_ids and self.tag is None and self.min_level is None:
            raise ValueError("give member_ids or a segment (tag, min_level)")
        return self


class IssueResult(BaseModel):
    member_id: int
    issued: bool
    coupon_ids: list[int] = Field(default_factory=list)
    skipped: list[dict[str, object]] = Field(
        default_factory=list, description="templates left out (sold out, inactive, ended)"
    )
    reason: str | None = Field(default=None, description="MEMBER_NOT_FOUND or ALREADY_ISSUED")


class IssuePackOut(BaseModel):
    pack_id: int
    members: int
    issued: int
    results: list[IssueResult]
