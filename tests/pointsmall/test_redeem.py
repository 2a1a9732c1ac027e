"""Redeeming: the burst, limits, failures that give stock back, idempotency."""

from __future__ import annotations

import asyncio
import secrets
from datetime import timedelta
from typing import Any

import httpx
import pytest

from mall.cli import CheckReport
from mall.kit import clock
from mall.members import service as members_service
from mall.points import service as points_service
from mall.points.tasks import CHECKS as POINTS_CHECKS
from mall.pointsmall import service as pm_service
from mall.pointsmall.models import PointsMallRedemption
from mall.pointsmall.tasks import CHECKS
from mall.redis import get_redis
from tests.pointsmall.conftest import (
    MakeItem,
    NewMember,
    add_address,
    db_stock,
    key,
    redis_stock,
)


async def _checks_pass() -> None:
    report: CheckReport = await CHECKS["pointsmall"]()
    assert report.ok, report.lines
    ledger: CheckReport = await POINTS_CHECKS["ledger"]()
    assert ledger.ok, ledger.lines


async def _redeem(
    client: httpx.AsyncClient, item_id: int, headers: dict[str, str], **body: Any
) -> httpx.Response:
    return await client.post(
        f"/api/v1/points-mall/items/{item_id}/redeem", json=body, headers={**headers, **key()}
    )


async def test_burst_of_200_members_on_stock_20(
    client: httpx.AsyncClient, make_item: MakeItem, new_member: NewMember
) -> None:
    item = await make_item(total_stock=20, points_price=100)
    members = await asyncio.gather(*(new_member(points=100) for _ in range(200)))
    responses = await asyncio.gather(*(_redeem(client, item["id"], h) for _m, h in members))
    codes = [r.status_code for r in responses]
    assert codes.count(201) == 20, [r.text for r in responses if r.status_code not in (201, 409)]
    losers = [r.json()["error"]["code"] for r in responses if r.status_code != 201]
    assert losers == ["OUT_OF_STOCK"] * 180
    assert await PointsMallRedemption.filter(item_id=item["id"]).count() == 20
    balances = [await points_service.get_balance(m) for m, _h in members]
    assert balances.count(0) == 20 and balances.count(100) == 180  # exactly 20 spends
    winners = {r.json()["id"] for r in responses if r.status_code == 201}
    assert len(winners) == 20
    assert await redis_stock(item["id"]) == 0
    assert await db_stock(item["id"]) == 0
    assert await get_redis().zcard(f"{{pm:{item['id']}}}:resv") == 0
    await _checks_pass()


async def test_one_member_20_parallel_on_limit_one(
    client: httpx.AsyncClient, make_item: MakeItem, new_member: NewMember
) -> None:
    item = await make_item(total_stock=10, points_price=100, limit_per_member=1)
    member_id, headers = await new_member(points=10_000)
    responses = await asyncio.gather(*(_redeem(client, item["id"], headers) for _ in range(20)))
    assert [r.status_code for r in responses].count(201) == 1
    assert {r.json()["error"]["code"] for r in responses if r.status_code != 201} == {
        "REDEEM_LIMIT_REACHED"
    }
    assert await points_service.get_balance(member_id) == 9_900
    assert await redis_stock(item["id"]) == 9 and await db_stock(item["id"]) == 9
    await _checks_pass()


async def test_too_few_points_spends_nothing_and_keeps_stock(
    client: httpx.AsyncClient, make_item: MakeItem, new_member: NewMember
) -> None:
    item = await make_item(total_stock=3, points_price=100)
    member_id, headers = await new_member(points=50)
    r = await _redeem(client, item["id"], headers)
    assert r.status_code == 409 and r.json()["error"]["code"] == "NOT_ENOUGH_POINTS"
    assert await points_service.get_balance(member_id) == 50
    assert await redis_stock(item["id"]) == 3 and await db_stock(item["id"]) == 3


async def test_spend_failing_after_the_lua_gives_stock_and_limit_back(
    client: httpx.AsyncClient,
    make_item: MakeItem,
    new_member: NewMember,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The balance read before the Lua is stale (another spend landed meanwhile): the Lua
    # takes the stock, the points spend then fails, and the stock and limit come back.
    item = await make_item(total_stock=3, points_price=100, limit_per_member=1)
    member_id, headers = await new_member(points=50)

    async def stale_balance(_member_id: int) -> int:
        return 10_000

    monkeypatch.setattr(points_service, "get_balance", stale_balance)
    r = await _redeem(client, item["id"], headers)
    assert r.status_code == 409 and r.json()["error"]["code"] == "NOT_ENOUGH_POINTS"
    monkeypatch.undo()
    assert await points_service.get_balance(member_id) == 50
    assert await redis_stock(item["id"]) == 3 and await db_stock(item["id"]) == 3
    assert await get_redis().hget(f"{{pm:{item['id']}}}:buyers", str(member_id)) is None
    assert await get_redis().zcard(f"{{pm:{item['id']}}}:resv") == 0
    assert await PointsMallRedemption.all().count() == 0
    # the limit was given back too: with points, the member can redeem once
    await points_service.earn(member_id, 50, idempotency_key="top-up", reason="test")
    assert (await _redeem(client, item["id"], headers)).status_code == 201
    await _checks_pass()


async def test_racing_spends_on_other_items_give_stock_back(
    client: httpx.AsyncClient, make_item: MakeItem, new_member: NewMember
) -> None:
    items = [await make_item(name=f"item {i}", total_stock=1, points_price=100) for i in range(5)]
    member_id, headers = await new_member(points=100)
    responses = await asyncio.gather(*(_redeem(client, i["id"], headers) for i in items))
    assert [r.status_code for r in responses].count(201) == 1
    assert {r.json()["error"]["code"] for r in responses if r.status_code != 201} == {
        "NOT_ENOUGH_POINTS"
    }
    assert await points_service.get_balance(member_id) == 0
    stocks = [await redis_stock(i["id"]) for i in items]
    assert sorted(stocks) == [0, 1, 1, 1, 1]
    await _checks_pass()


async def test_idempotency_key_replays_the_same_redemption(
    client: httpx.AsyncClient, make_item: MakeItem, new_member: NewMember
) -> None:
    item = await make_item(total_stock=5, points_price=100)
    member_id, headers = await new_member(points=1000)
    h = {**headers, "Idempotency-Key": "redeem-1"}
    url = f"/api/v1/points-mall/items/{item['id']}/redeem"
    first = await client.post(url, json={"quantity": 2}, headers=h)
    again = await client.post(url, json={"quantity": 2}, headers=h)
    assert first.status_code == 201 and again.status_code in (200, 201)
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["voucher_code"] == first.json()["voucher_code"]
    assert await points_service.get_balance(member_id) == 800
    other = await client.post(url, json={"quantity": 1}, headers=h)
    assert other.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    # the Redis idempotency record is gone (failover): the reservation id still dedupes
    async for k in get_redis().scan_iter("idem:*"):
        await get_redis().delete(k)
    late = await client.post(url, json={"quantity": 2}, headers=h)
    assert late.json()["id"] == first.json()["id"]
    assert await points_service.get_balance(member_id) == 800
    assert await redis_stock(item["id"]) == 3 and await db_stock(item["id"]) == 3
    await _checks_pass()


@pytest.mark.clock
async def test_each_refusal_has_its_code_and_spends_nothing(
    client: httpx.AsyncClient, make_item: MakeItem, new_member: NewMember, ops: dict[str, str]
) -> None:
    member_id, headers = await new_member(points=1000)
    gift = await make_item(kind="gift", total_stock=2)
    r = await _redeem(client, gift["id"], headers)
    assert r.status_code == 422 and r.json()["error"]["code"] == "ADDRESS_REQUIRED"
    r = await _redeem(client, gift["id"], headers, address_id=999_999)
    assert r.json()["error"]["code"] == "ADDRESS_NOT_FOUND"

    vip = await make_item(level_required=99)
    r = await _redeem(client, vip["id"], headers)
    assert r.status_code == 403 and r.json()["error"]["code"] == "LEVEL_TOO_LOW"

    later = await make_item(on_shelf_at=(clock.now() + timedelta(days=1)).isoformat())
    r = await _redeem(client, later["id"], headers)
    assert r.json()["error"]["code"] == "ITEM_OFF_SHELF"
    off = await make_item()
    await client.post(f"/api/admin/v1/points-mall/items/{off['id']}/off-shelf", headers=ops)
    r = await _redeem(client, off["id"], headers)
    assert r.json()["error"]["code"] == "ITEM_OFF_SHELF"
    draft = await make_item(on_shelf=False)
    r = await _redeem(client, draft["id"], headers)
    assert r.status_code == 404 and r.json()["error"]["code"] == "ITEM_NOT_FOUND"

    sold = await make_item(total_stock=0)
    r = await _redeem(client, sold["id"], headers)
    assert r.json()["error"]["code"] == "OUT_OF_STOCK"

    daily = await make_item(total_stock=5, limit_per_period=1, limit_period="day")
    assert (await _redeem(client, daily["id"], headers)).status_code == 201
    r = await _redeem(client, daily["id"], headers)
    assert r.json()["error"]["code"] == "REDEEM_PERIOD_LIMIT_REACHED"
    assert await points_service.get_balance(member_id) == 900
    clock.advance(timedelta(days=1))
    member = await members_service.get_member(member_id)
    headers = {"Authorization": f"Bearer {(await members_service.tokens_for(member)).token}"}
    assert (await _redeem(client, daily["id"], headers)).status_code == 201

    zh = await client.post(
        f"/api/v1/points-mall/items/{sold['id']}/redeem", json={}, headers=headers
    )
    assert zh.json()["error"]["message"] == "该商品已兑完"
    assert await points_service.get_balance(member_id) == 800
    await _checks_pass()


async def test_gift_keeps_a_copy_of_the_address(
    client: httpx.AsyncClient, make_item: MakeItem, new_member: NewMember
) -> None:
    gift = await make_item(kind="gift", total_stock=2)
    _member_id, headers = await new_member(points=1000)
    address_id = await add_address(client, headers)
    r = await _redeem(client, gift["id"], headers, address_id=address_id)
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "awaiting_shipment"
    assert r.json()["address"]["region"] == "上海市 徐汇区"
    await client.delete(f"/api/v1/addresses/{address_id}", headers=headers)
    mine = await client.get(f"/api/v1/points-mall/redemptions/{r.json()['id']}", headers=headers)
    assert mine.json()["address"]["detail"] == "1号"


async def test_stock_reloads_from_the_database_when_redis_lost_it(
    client: httpx.AsyncClient, make_item: MakeItem, new_member: NewMember
) -> None:
    item = await make_item(total_stock=3, limit_per_member=1)
    _a, alice = await new_member(points=1000)
    _b, bob = await new_member(points=1000)
    assert (await _redeem(client, item["id"], alice)).status_code == 201
    await get_redis().flushdb()
    # limits come back from the database too
    r = await _redeem(client, item["id"], alice)
    assert r.json()["error"]["code"] == "REDEEM_LIMIT_REACHED"
    assert (await _redeem(client, item["id"], bob)).status_code == 201
    assert await redis_stock(item["id"]) == 1 and await db_stock(item["id"]) == 1
    await _checks_pass()


async def test_logins_for_many_members_are_not_needed_to_redeem(
    make_item: MakeItem, new_member: NewMember
) -> None:
    # the service is usable without HTTP (e.g. by a batch job)
    item = await make_item(total_stock=1)
    member_id, _h = await new_member(points=100)
    member = await members_service.get_member(member_id)
    redemption = await pm_service.redeem(member, item["id"], 1, None, secrets.token_hex(4))
    assert redemption.voucher_code and len(redemption.voucher_code) == 14
