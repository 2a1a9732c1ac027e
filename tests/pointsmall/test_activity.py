"""Gated activity: threshold on the balance, a price, a head-count cap; all-or-nothing."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from mall.points import service as points_service
from mall.pointsmall import service as pm_service
from mall.pointsmall.models import PointsMallRedemption
from mall.pointsmall.tasks import CHECKS
from tests.pointsmall.conftest import MakeItem, NewMember, db_stock, drain, key, redis_stock


async def test_threshold_1000_cost_500_cap_3(
    client: httpx.AsyncClient, make_item: MakeItem, new_member: NewMember
) -> None:
    camp = await make_item(
        name="训练营",
        kind="activity",
        points_price=500,
        min_points_balance=1000,
        total_stock=3,
        limit_per_member=1,
    )
    url = f"/api/v1/points-mall/items/{camp['id']}/redeem"
    poor_id, poor = await new_member(points=999)
    r = await client.post(url, json={}, headers={**poor, **key()})
    assert r.status_code == 409 and r.json()["error"]["code"] == "POINTS_THRESHOLD_NOT_MET"
    assert r.json()["error"]["details"] == {"threshold": 1000, "balance": 999}
    assert await points_service.get_balance(poor_id) == 999

    r = await client.post(url, json={"quantity": 2}, headers={**poor, **key()})
    assert r.json()["error"]["code"] == "ONE_PLACE_PER_ENTRY"

    members = await asyncio.gather(*(new_member(points=1000) for _ in range(6)))
    responses = await asyncio.gather(
        *(client.post(url, json={}, headers={**h, **key()}) for _m, h in members)
    )
    joined = [m for (m, _h), r in zip(members, responses, strict=True) if r.status_code == 202]
    assert len(joined) == 3
    assert {r.json()["error"]["code"] for r in responses if r.status_code != 202} == {
        "ACTIVITY_FULL"
    }
    await drain()
    rows = await PointsMallRedemption.filter(item_id=camp["id"])
    assert sorted(r.member_id for r in rows) == sorted(joined)
    assert all(r.status == "enrolled" for r in rows)
    for member_id, _h in members:
        assert await points_service.get_balance(member_id) == (500 if member_id in joined else 1000)
    assert await redis_stock(camp["id"]) == 0 and await db_stock(camp["id"]) == 0
    # a member who joined cannot join twice, even with points to spare
    first = joined[0]
    await points_service.earn(first, 1000, idempotency_key="top-up", reason="test")
    headers = dict(members)[first]
    r = await client.post(url, json={}, headers={**headers, **key()})
    assert r.json()["error"]["code"] == "REDEEM_LIMIT_REACHED"
    assert (await CHECKS["pointsmall"]()).ok


async def test_threshold_is_checked_on_the_balance_at_the_spend(
    make_item: MakeItem, new_member: NewMember, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The early balance read is stale (it said 5000); the consumer's spend sees 700: the
    # entry is released with the reason, no points spent, the place back.
    camp = await make_item(
        kind="activity", points_price=500, min_points_balance=1000, total_stock=3
    )
    member_id, _h = await new_member(points=700)

    async def stale(_member_id: int) -> int:
        return 5000

    monkeypatch.setattr(points_service, "get_balance", stale)
    answer = await pm_service.redeem(member_id, camp["id"], 1, None, "k1")
    assert answer.status == "pending"
    monkeypatch.undo()
    await drain()
    row = await PointsMallRedemption.get(reservation_id=answer.reservation_id)
    assert row.status == "released" and row.release_reason == "points_threshold_not_met"
    assert await points_service.get_balance(member_id) == 700
    assert await redis_stock(camp["id"]) == 3 and await db_stock(camp["id"]) == 3
    assert (await CHECKS["pointsmall"]()).ok
