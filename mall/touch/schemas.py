from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from mall.kit.text import SafeLine


class SubscriptionsIn(BaseModel):
    template_ids: list[Annotated[SafeLine, Field(min_length=1, max_length=128)]] = Field(
        min_length=1,
        max_length=3,  # wx.requestSubscribeMessage takes at most 3 templates at once
        examples=[["tmpl-coupon-expiry-1"]],
        description="the template ids the member accepted (result `accept`)",
    )


class GrantOut(BaseModel):
    template_id: str
    remaining: int
