from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from mall.kit.masking import Phone
from mall.kit.text import SafeLine

_PHONE = r"^\+?[0-9][0-9 -]{4,18}[0-9]$"


class AddressIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: SafeLine = Field(min_length=1, max_length=32, examples=["张三"])
    phone: str = Field(max_length=20, pattern=_PHONE, examples=["13800138000"])
    region: SafeLine = Field(min_length=1, max_length=128, examples=["广东省 深圳市 南山区"])
    detail: SafeLine = Field(min_length=1, max_length=255, examples=["科技园路 1 号 3 栋 501"])
    is_default: bool = False


class AddressOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    phone: Phone
    region: str
    detail: str
    is_default: bool
    created_at: datetime
    updated_at: datetime


class AddressSnapshot(BaseModel):
    """What an order or a redemption keeps of the address at the time it was placed."""

    name: str
    phone: Phone = Field(description="masked (138****8000) in ops answers unless revealed")
    region: str
    detail: str
