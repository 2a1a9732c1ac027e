from __future__ import annotations

from pydantic import BaseModel, Field


class SubscriptionsIn(BaseModel):
    template_ids: list[str] = Field(
        min_length=1,
        max_length=3,  # wx.requestSubscribeMessage takes at most 3 templates at once
        examples=[["tmpl-coupon-expiry-1"]],
        description="the template ids the member accepted (result `accept`)",
    )


class GrantOut(BaseModel):
    template_id: str
    remaining: int
