from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field


class WeChatLoginIn(BaseModel):
    code: str = Field(min_length=1, max_length=128, examples=["0a3xYz000abcDe1"])


class RefreshIn(BaseModel):
    refresh_token: str = Field(min_length=1, max_length=2048)


class PhoneIn(BaseModel):
    code: str = Field(min_length=1, max_length=128, examples=["e31968a7f94cc5ee25fafc2aef2773f0"])


class MemberOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    nickname: str
    avatar_url: str
    phone: str | None
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

    nickname: str | None = Field(default=None, min_length=1, max_length=32)
    avatar_url: str | None = Field(default=None, max_length=512)
    birthday: date | None = None


class StaffLoginIn(BaseModel):
    username: str = Field(min_length=1, max_length=64, examples=["admin"])
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
