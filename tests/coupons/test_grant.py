"""Coupons given by other domains (blind-box prizes, points-mall vouchers)."""

from __future__ import annotations

import asyncio

import pytest

from mall.coupons import service
from mall.coupons.models import Coupon, CouponTemplate
from mall.errors import MallError
from mall.members.models import Member


async def _template(**terms: object) -> CouponTemplate:
    return await service.create_template(
        {"name": "¥10 off", "kind": "cash", "face_value_fen": 1000, **terms}
    )


async def test_grant_once_per_key_ignores_member_limit_and_respects_quantity() -> None:
    member = await Member.create(openid="o_grant")
    template = await _template(total_quantity=3, per_member_limit=1)
    first = await service.grant(member.id, template.id, grant_key="bb:1", source="blind_box")
    again = await service.grant(member.id, template.id, grant_key="bb:1", source="blind_box")
    assert first.id == again.id
    second = await service.grant(member.id, template.id, grant_key="bb:2", source="blind_box")
    assert second.id != first.id  # the per-member limit of 1 does not apply to prizes
    results = await asyncio.gather(
        *(
            service.grant(member.id, template.id, grant_key=f"bb:x{i}", source="blind_box")
            for i in range(5)
        ),
        return_exceptions=True,
    )
    assert sum(isinstance(r, Coupon) for r in results) == 1  # quantity 3 in all
    assert all(isinstance(r, (Coupon, MallError)) for r in results)
    assert await Coupon.filter(template_id=template.id).count() == 3
    issued, _held = await service.redis_counts(template.id) or (None, None)
    assert issued == 3
    with pytest.raises(MallError):
        await service.grant(member.id, template.id, grant_key="bb:late", source="blind_box")
