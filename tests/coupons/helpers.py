from __future__ import annotations

from typing import Any

from mall.coupons import service
from mall.coupons.models import CouponTemplate
from mall.members.models import Member


async def make_template(**overrides: Any) -> CouponTemplate:
    data: dict[str, Any] = {
        "name": "满100减20",
        "kind": "threshold",
        "face_value_fen": 2000,
        "threshold_fen": 10000,
        "total_quantity": 100,
        "per_member_limit": 1,
    }
    data.update(overrides)
    return await service.create_template(data)


async def make_members(count: int, prefix: str = "m") -> list[Member]:
    await Member.bulk_create([Member(openid=f"{prefix}{i}") for i in range(count)])
    return await Member.filter(openid__startswith=prefix).order_by("id")
