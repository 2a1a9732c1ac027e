from __future__ import annotations

from datetime import datetime
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mall.kit.bounds import Id, Version
from mall.kit.text import SafeLine
from mall.members.schemas import MemberOut

LEVEL_CODE = r"^[a-z0-9_]+$"


class PromoterLevel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=1, max_length=32, pattern=LEVEL_CODE, examples=["koc"])
    name: SafeLine = Field(min_length=1, max_length=32, examples=["星推官"])
    rate_bp: int = Field(
        ge=0, le=5000, description="commission in basis points of the paid amount: 500 = 5%"
    )


def _default_levels() -> list[PromoterLevel]:
    return [
        PromoterLevel(code="member", name="会员推荐人", rate_bp=0),
        PromoterLevel(code="koc", name="星推官", rate_bp=500),
        PromoterLevel(code="salesperson", name="导购", rate_bp=300),
    ]


class ReferralRules(BaseModel):
    """Promoter levels with their commission rates, and the level new promoters get."""

    model_config = ConfigDict(extra="forbid")

    levels: list[PromoterLevel] = Field(
        default_factory=_default_levels, min_length=1, max_length=50
    )
    member_level: str = Field(
        default="member",
        max_length=32,
        pattern=LEVEL_CODE,
        description="level of a member's share code",
    )
    staff_level: str = Field(
        default="salesperson",
        max_length=32,
        pattern=LEVEL_CODE,
        description="level of a staff promoter",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        codes = [level.code for level in self.levels]
        if len(set(codes)) != len(codes):
            raise ValueError("level codes must be unique")
        if self.member_level not in codes or self.staff_level not in codes:
            raise ValueError("member_level and staff_level must be codes of the levels")
        return self

    def level(self, code: str) -> PromoterLevel | None:
        return next((lv for lv in self.levels if lv.code == code), None)


class RulesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: ReferralRules
    base_version: Version | None = Field(
        default=None, description="the version you edited; a stale one is refused"
    )


class RulesOut(BaseModel):
    version: int
    rules: ReferralRules
    updated_at: datetime | None


class BindIn(BaseModel):
    code: SafeLine = Field(min_length=4, max_length=16, examples=["K7QX2M9A"])


class BindingOut(BaseModel):
    customer_id: int
    promoter_id: int
    code: str
    source: str
    bound_at: datetime


class MyReferralOut(BaseModel):
    code: str = Field(description="share this code (e.g. in the share path's query)")
    level: str
    level_name: str
    rate_bp: int
    customers: int = Field(description="customers bound to me")
    commission_fen: int = Field(description="net commission earned (after refunds)")
    bound_to: str | None = Field(description="the share code I joined through, if any")


class ShareLoginIn(BaseModel):
    code: SafeLine = Field(min_length=1, max_length=128, description="from wx.login")
    share_code: SafeLine | None = Field(default=None, max_length=16, examples=["K7QX2M9A"])


class ReferralResult(BaseModel):
    bound: bool
    error: str | None = Field(default=None, description="why the share code was not bound")


class ShareLoginOut(BaseModel):
    token: str
    refresh_token: str
    expires_in: int
    member: MemberOut
    is_new: bool
    referral: ReferralResult | None


class CommissionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    promoter_id: int
    customer_id: int
    order_id: int
    event: str
    level: str
    rate_bp: int
    base_fen: int
    amount_fen: int
    created_at: datetime


class PromoterIn(BaseModel):
    """A member (KOC) or a staff account (salesperson); level defaults from the rules."""

    model_config = ConfigDict(extra="forbid")

    member_id: Id | None = None
    staff_id: Id | None = None
    level: SafeLine | None = Field(default=None, max_length=32)

    @model_validator(mode="after")
    def _one(self) -> Self:
        if (self.member_id is None) == (self.staff_id is None):
            raise ValueError("give exactly one of member_id and staff_id")
        return self


class PromoterPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    level: SafeLine | None = Field(default=None, max_length=32)
    active: bool | None = None


class PromoterOut(BaseModel):
    id: int
    kind: Literal["member", "staff"]
    member_id: int | None
    staff_id: int | None
    name: str
    code: str
    level: str
    level_name: str
    rate_bp: int
    active: bool
    customers: int
    commission_fen: int
    created_at: datetime


class CustomerOut(BaseModel):
    customer_id: int
    nickname: str
    source: str
    bound_at: datetime
    commission_fen: int = Field(description="net commission earned on this customer")
