"""Shared test factories: the rows many test modules need, made one way.

Domain-specific setups that go through the HTTP API stay in their package's conftest
(seckill sessions, points-mall items, blind-box series)."""

from __future__ import annotations

from typing import Any

from mall.coupons import service as coupons_service
from mall.coupons.models import CouponTemplate
from mall.members.models import Member


async def make_member(name: str, **fields: Any) -> Member:
    """One member, `o_<name>` with `name` as nickname."""
    return await Member.create(openid=f"o_{name}", nickname=name, **fields)


async def _insert_members(count: int, prefix: str) -> None:
    await Member.bulk_create(
        [Member(openid=f"{prefix}{i}", nickname=f"{prefix}{i}") for i in range(count)],
        batch_size=1000,
    )


async def make_members(count: int, prefix: str = "m") -> list[Member]:
    """`count` members `<prefix>0`, `<prefix>1` ... in one insert, in id order."""
    await _insert_members(count, prefix)
    return await Member.filter(openid__startswith=prefix).order_by("id")


async def make_member_ids(count: int, prefix: str = "m") -> list[int]:
    """`make_members`, ids only (cheap for thousands of members in load-shaped tests)."""
    await _insert_members(count, prefix)
    return list(
        await Member.filter(openid__startswith=prefix).order_by("id").values_list("id", flat=True)
    )


async def make_template(**overrides: Any) -> CouponTemplate:
    """A coupon template (¥20 off ¥100, 100 of them, one per member) with `overrides`."""
    data: dict[str, Any] = {
        "name": "满100减20",
        "kind": "threshold",
        "face_value_fen": 2000,
        "threshold_fen": 10000,
        "total_quantity": 100,
        "per_member_limit": 1,
    }
    data.update(overrides)
    return await coupons_service.create_template(data)
