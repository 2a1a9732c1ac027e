from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mall.kit.masking import Phone
from mall.kit.text import SafeLine, WebUrl


class WeChatLoginIn(BaseModel):
    code: SafeLine = Field(min_length=1, max_length=128, examples=["0a3xYz000abcDe1"])


class RefreshIn(BaseModel):
    refresh_token: str = Field(min_length=1, max_length=2048)


class PhoneIn(BaseModel):
    code: SafeLine = Field(
        min_length=1, max_length=128, examples=["e31968a7f94cc5ee25fafc2aef2773f0"]
    )


class MemberOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    nickname: str
    avatar_url: str
    phone: Phone | None
    birthday: date | None
    level: int
    growth_value: int
    points_balance: int
    created_at: datetime


class MeOut(MemberOut):
    level_name: str = ""
    wallet_balance: int = 0


class LoginOut(BaseModel):
    token: str
    refresh_token: str
    expires_in: int
    member: MemberOut
    is_new: bool


class TokenOut(BaseModel):
    token: str
    refresh_token: str
    expires_in: int


class MePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    nickname: SafeLine | None = Field(default=None, min_length=1, max_length=32)
    avatar_url: WebUrl | None = Field(
        default=None, max_length=512, description='an http(s) URL; "" removes the avatar'
    )
    birthday: date | None = None


class StaffLoginIn(BaseModel):
    username: SafeLine = Field(min_length=1, max_length=64, examples=["admin"])
    password: str = Field(min_length=1, max_length=256)


class StaffOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    role: str
    active: bool


class StaffLoginOut(BaseModel):
    token: str
    refresh_token: str
    expires_in: int
    staff: StaffOut


class StaffCreateIn(BaseModel):
    username: str = Field(min_length=3, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    password: str = Field(min_length=8, max_length=256)
    role: str = Field(default="ops", pattern="^(admin|ops)$")


# --- privacy: account deletion, data export, members seen by staff ----------------------


class ProblemOut(BaseModel):
    code: str = Field(examples=["WALLET_BALANCE_NOT_REFUNDED"])
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class DeletionCheckOut(BaseModel):
    can_delete: bool
    blockers: list[ProblemOut] = Field(
        description="what must finish first; deletion answers the first one as its error"
    )
    forfeits: dict[str, int] = Field(
        description="what is given up: `points`, `wallet_bonus_fen` (the top-up bonus), "
        "`usable_coupons`",
        examples=[{"points": 1200, "wallet_bonus_fen": 5000, "usable_coupons": 2}],
    )


class DeletionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    confirm: Literal[True] = Field(description="must be true: the member confirmed")
    reason: SafeLine = Field(default="", max_length=200, description="optional, kept in the audit")


class DeletionOut(BaseModel):
    member_id: int
    deleted_at: datetime
    already_deleted: bool = Field(description="true when an earlier request deleted it")


class AdminDeletionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: SafeLine = Field(
        min_length=1, max_length=200, examples=["member asked by phone, ticket 2026-1042"]
    )


class AdminDeletionOut(DeletionOut):
    erased: dict[str, int] = Field(description="what the deletion removed or anonymised")


class MemberExportOut(BaseModel):
    member_id: int
    generated_at: datetime
    sections: dict[str, list[dict[str, Any]]] = Field(
        description="rows per kind of data (profile, addresses, points_entries, coupons, "
        "wallet_entries, orders, referral_binding, ...), oldest first"
    )
    truncated: list[str] = Field(
        description="sections cut at the row limit (ask customer service for the rest)"
    )


class AdminMemberOut(BaseModel):
    """A member as ops see it. `phone` is masked unless an admin asked `?reveal=phone`."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    nickname: str
    avatar_url: str
    phone: Phone | None
    birthday: date | None
    level: int
    growth_value: int
    points_balance: int
    tags: list[str]
    created_at: datetime
    deleted_at: datetime | None
