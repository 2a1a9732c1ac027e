"""Redeeming: the pending answer, the burst, limits, releases that give stock back once,
idempotency."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from datetime import timedelta
from typing import Any

import httpx
import pytest

from mall.kit import clock
from mall.kit.checks import CheckReport
from mall.members import service as members_service
from mall.points import service as points_service
from mall.points.tasks import CHECKS as POINTS_CHECKS
from mall.pointsmall import persist
from mall.pointsmall import service as pm_service
from mall.pointsmall.models import PointsMallItem, PointsMallRedemption
from mall.pointsmall.stock import item_keys
from mall.pointsmall.tasks import CHECKS
from mall.redis import get_redis
from tests.pointsmall.conftest import (
    MakeItem,
    NewMember,
    add_address,
    db_stock,
    drain,
    key,
    redeem,
    redeem_as,
    redis_stock,
    written,
)


async def _checks_pass() -> None:
    report: CheckReport = await CHECKS["pointsmall"]()
    assert report.ok, report.lines
    ledger: CheckReport = await POINTS_CHECKS["ledger"]()
    assert ledger.ok, ledger.lines


async def _post(
    client: httpx.AsyncClient, item_id: int, headers: dict[str, str], **body: Any
) -> httpx.Response:
    """The bare POST: the decision's answer, nothing persisted yet."""
    return await client.post(
        f"/api/v1/points-mall/items/{item_id}/redeem", json=body, headers={**headers, **key()}
    )


async def test_the_answer_is_a_pending_reservation_then_the_redemption(
    client: httpx.AsyncClient, make_item: MakeItem, new_member: NewMember
) -> None:
    item = await make_item(total_stock=3, points_price=120, name="Thermos")
    member_id, headers = await new_member(points=1000)
    r = await _post(client, item["id"], headers, quantity=2)
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "pending" and body["points"] == 240 and body["quantity"] == 2
    assert body["item_id"] == item["id"] and body["item_name"] == "Thermos"
    rid = body["reservation_id"]
    # decided in Redis: the stock is taken, nothing is in the database yet
    assert await redis_stock(item["id"]) == 1 and await db_stock(item["id"]) == 3
    assert await points_service.get_balance(member_id) == 1000
    url = f"/api/v1/points-mall/reservations/{rid}"
    pending = await client.get(url, headers=headers)
    assert pending.status_code == 200 and pending.json()["status"] == "pending"
    assert pending.json()["redemption_id"] is None
    _other, stranger = await new_member()
    assert (await client.get(url, headers=stranger)).status_code == 404
    # the consumer writes it
    assert await drain() == 1
    done = (await client.get(url, headers=headers)).json()
    assert done["status"] == "issued" and done["points"] == 240 and done["redemption_id"]
    assert await points_service.get_balance(member_id) == 760
    assert await db_stock(item["id"]) == 1
    mine = await client.get("/api/v1/points-mall/redemptions", headers=headers)
    assert [x["id"] for x in mine.json()["items"]] == [done["redemption_id"]]
    await _checks_pass()


async def test_burst_of_200_members_on_stock_20(
    client: httpx.AsyncClient, make_item: MakeItem, new_member: NewMember
) -> None:
    item = await make_item(total_stock=20, points_price=100)
    members = await asyncio.gather(*(new_member(points=100) for _ in range(200)))
    responses = await asyncio.gather(*(_post(client, item["id"], h) for _m, h in members))
    codes = [r.status_code for r in responses]
    assert codes.count(202) == 20, [r.text for r in responses if r.status_code not in (202, 409)]
    losers = [r.json()["error"]["code"] for r in responses if r.status_code != 202]
    assert losers == ["OUT_OF_STOCK"] * 180
    await drain()
    assert await PointsMallRedemption.filter(item_id=item["id"], status="issued").count() == 20
    balances = [await points_service.get_balance(m) for m, _h in members]
    assert balances.count(0) == 20 and balances.count(100) == 180  # exactly 20 spends
    winners = {r.json()["reservation_id"] for r in responses if r.status_code == 202}
    assert len(winners) == 20
    assert await redis_stock(item["id"]) == 0
    assert await db_stock(item["id"]) == 0
    assert await get_redis().hlen(item_keys(item["id"]).res) == 0
    assert await get_redis().xlen(item_keys(item["id"]).wins) == 0
    await _checks_pass()


async def test_burst_with_consumers_running_never_oversells_nor_spends_twice(
    client: httpx.AsyncClient, make_item: MakeItem, new_member: NewMember
) -> None:
    # members with points for 2 units each redeem 4 times, while two consumers persist
    item = await make_item(total_stock=30, points_price=50)
    members = await asyncio.gather(*(new_member(points=100) for _ in range(20)))
    stop = asyncio.Event()
    consumers = [asyncio.create_task(persist.run_consumer(stop)) for _ in range(2)]
    try:
        responses = await asyncio.gather(
            *(_post(client, item["id"], h) for _m, h in members for _ in range(4))
        )
    finally:
        stop.set()
        await asyncio.gather(*consumers)
    await drain()
    told = [r for r in responses if r.status_code == 202]
    # every unit decided; one released while the burst still ran was decided again
    assert len(told) >= 30
    assert {r.json()["error"]["code"] for r in responses if r.status_code != 202} == {
        "OUT_OF_STOCK"
    }
    rows = await PointsMallRedemption.filter(item_id=item["id"])
    assert {r.reservation_id for r in rows} == {r.json()["reservation_id"] for r in told}
    kept = [r for r in rows if r.status == "issued"]
    released = [r for r in rows if r.status == "released"]
    assert {r.release_reason for r in released} <= {"not_enough_points"}
    # no member spent more than they had, and the ledger has exactly the kept ones
    for member_id, _h in members:
        mine = [r for r in kept if r.member_id == member_id]
        assert len(mine) <= 2
        assert await points_service.get_balance(member_id) == 100 - 50 * len(mine)
    # released units went back (those decided again are out again): the stock and the
    # database agree
    assert await redis_stock(item["id"]) == len(released) - (len(told) - 30) == 30 - len(kept)
    assert await db_stock(item["id"]) == 30 - len(kept)
    await _checks_pass()


async def test_one_member_20_parallel_on_limit_one(
    client: httpx.AsyncClient, make_item: MakeItem, new_member: NewMember
) -> None:
    item = await make_item(total_stock=10, points_price=100, limit_per_member=1)
    member_id, headers = await new_member(points=10_000)
    responses = await asyncio.gather(*(_post(client, item["id"], headers) for _ in range(20)))
    assert [r.status_code for r in responses].count(202) == 1
    assert {r.json()["error"]["code"] for r in responses if r.status_code != 202} == {
        "REDEEM_LIMIT_REACHED"
    }
    await drain()
    assert await points_service.get_balance(member_id) == 9_900
    assert await redis_stock(item["id"]) == 9 and await db_stock(item["id"]) == 9
    await _checks_pass()


async def test_short_of_points_is_released_with_the_reason_and_the_unit_goes_back_once(
    client: httpx.AsyncClient, make_item: MakeItem, new_member: NewMember
) -> None:
    item = await make_item(total_stock=3, points_price=100, limit_per_member=1)
    member_id, headers = await new_member(points=50)
    answer = await _post(client, item["id"], headers)
    assert answer.status_code == 202  # the decision does not read the balance
    assert await redis_stock(item["id"]) == 2
    await drain()
    rid = answer.json()["reservation_id"]
    r = await client.get(f"/api/v1/points-mall/reservations/{rid}", headers=headers)
    assert r.json()["status"] == "released"
    assert r.json()["release_reason"] == "not_enough_points" and r.json()["points"] == 0
    assert await points_service.get_balance(member_id) == 50
    assert await redis_stock(item["id"]) == 3 and await db_stock(item["id"]) == 3
    keys = item_keys(item["id"])
    assert await get_redis().hget(keys.buyers, str(member_id)) is None  # the limit is back
    assert await get_redis().sismember(keys.returned, rid)
    # the entry replayed (a consumer died before acknowledging): given back once only
    row = await PointsMallRedemption.get(reservation_id=rid)
    await get_redis().xadd(
        keys.wins, {"rid": rid, "member": member_id, "qty": 1, "points": 100, "label": ""}
    )
    await get_redis().hset(keys.res, rid, f"{member_id}|1|100|0|")
    await drain()
    assert await redis_stock(item["id"]) == 3
    assert (await PointsMallRedemption.get(id=row.id)).status == "released"
    await _checks_pass()
    # with points the member redeems once
    await points_service.earn(member_id, 50, idempotency_key="top-up", reason="test")
    assert written(await redeem(client, item["id"], headers))
    assert await points_service.get_balance(member_id) == 0
    await _checks_pass()


async def test_racing_spends_on_other_items_give_stock_back(
    client: httpx.AsyncClient, make_item: MakeItem, new_member: NewMember
) -> None:
    items = [await make_item(name=f"item {i}", total_stock=1, points_price=100) for i in range(5)]
    member_id, headers = await new_member(points=100)
    responses = await asyncio.gather(*(_post(client, i["id"], headers) for i in items))
    assert [r.status_code for r in responses] == [202] * 5
    await drain()
    rows = await PointsMallRedemption.filter(member_id=member_id)
    assert sorted(r.status for r in rows) == ["issued"] + ["released"] * 4
    assert await points_service.get_balance(member_id) == 0
    stocks = [await redis_stock(i["id"]) for i in items]
    assert sorted(stocks) == [0, 1, 1, 1, 1]
    await _checks_pass()


async def test_idempotency_key_replays_the_same_reservation(
    client: httpx.AsyncClient, make_item: MakeItem, new_member: NewMember
) -> None:
    item = await make_item(total_stock=5, points_price=100)
    member_id, headers = await new_member(points=1000)
    h = {**headers, "Idempotency-Key": "redeem-1"}
    url = f"/api/v1/points-mall/items/{item['id']}/redeem"
    first = await client.post(url, json={"quantity": 2}, headers=h)
    again = await client.post(url, json={"quantity": 2}, headers=h)
    assert first.status_code == 202 and again.status_code == 202
    assert again.json() == first.json()
    await drain()
    # after it is written, too
    late = await client.post(url, json={"quantity": 2}, headers=h)
    assert late.json()["reservation_id"] == first.json()["reservation_id"]
    other = await client.post(url, json={"quantity": 1}, headers=h)
    assert other.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    await drain()
    assert await PointsMallRedemption.filter(member_id=member_id).count() == 1
    assert await points_service.get_balance(member_id) == 800
    assert await redis_stock(item["id"]) == 3 and await db_stock(item["id"]) == 3
    # concurrent retries: one decision
    h2 = {**headers, "Idempotency-Key": "redeem-2"}
    burst = await asyncio.gather(*(client.post(url, json={}, headers=h2) for _ in range(10)))
    assert len({r.json()["reservation_id"] for r in burst}) == 1
    await drain()
    assert await points_service.get_balance(member_id) == 700
    await _checks_pass()


@pytest.mark.clock
async def test_each_refusal_has_its_code_and_spends_nothing(
    client: httpx.AsyncClient, make_item: MakeItem, new_member: NewMember, ops: dict[str, str]
) -> None:
    member_id, headers = await new_member(points=1000)
    gift = await make_item(kind="gift", total_stock=2)
    r = await _post(client, gift["id"], headers)
    assert r.status_code == 422 and r.json()["error"]["code"] == "ADDRESS_REQUIRED"
    r = await _post(client, gift["id"], headers, address_id=999_999)
    assert r.json()["error"]["code"] == "ADDRESS_NOT_FOUND"

    vip = await make_item(level_required=99)
    r = await _post(client, vip["id"], headers)
    assert r.status_code == 403 and r.json()["error"]["code"] == "LEVEL_TOO_LOW"

    later = await make_item(on_shelf_at=(clock.now() + timedelta(days=1)).isoformat())
    r = await _post(client, later["id"], headers)
    assert r.json()["error"]["code"] == "ITEM_OFF_SHELF"
    off = await make_item()
    assert (await redeem(client, off["id"], headers)).status_code == 200  # cached as on
    await client.post(f"/api/admin/v1/points-mall/items/{off['id']}/off-shelf", headers=ops)
    r = await _post(client, off["id"], headers)
    assert r.json()["error"]["code"] == "ITEM_OFF_SHELF"
    draft = await make_item(on_shelf=False)
    r = await _post(client, draft["id"], headers)
    assert r.status_code == 404 and r.json()["error"]["code"] == "ITEM_NOT_FOUND"
    r = await _post(client, 999_999_999, headers)
    assert r.status_code == 404 and r.json()["error"]["code"] == "ITEM_NOT_FOUND"

    sold = await make_item(total_stock=0)
    r = await _post(client, sold["id"], headers)
    assert r.json()["error"]["code"] == "OUT_OF_STOCK"

    daily = await make_item(total_stock=5, limit_per_period=1, limit_period="day")
    assert written(await redeem(client, daily["id"], headers))
    r = await _post(client, daily["id"], headers)
    assert r.json()["error"]["code"] == "REDEEM_PERIOD_LIMIT_REACHED"
    assert await points_service.get_balance(member_id) == 800
    clock.advance(timedelta(days=1))
    member = await members_service.get_member(member_id)
    headers = {"Authorization": f"Bearer {(await members_service.tokens_for(member)).token}"}
    assert written(await redeem(client, daily["id"], headers))

    zh = await client.post(
        f"/api/v1/points-mall/items/{sold['id']}/redeem", json={}, headers=headers
    )
    assert zh.json()["error"]["message"] == "该商品已兑完"
    assert await points_service.get_balance(member_id) == 700
    await _checks_pass()


async def test_level_reached_after_the_decision_is_checked_by_the_consumer(
    client: httpx.AsyncClient, make_item: MakeItem, new_member: NewMember
) -> None:
    vip = await make_item(level_required=2, total_stock=2)
    member_id, headers = await new_member(points=1000)
    member = await members_service.get_member(member_id)
    member.level = 2
    await member.save()
    answer = await _post(client, vip["id"], headers)
    assert answer.status_code == 202
    member.level = 1  # e.g. a downgrade landed before the consumer ran
    await member.save()
    await drain()
    row = await PointsMallRedemption.get(reservation_id=answer.json()["reservation_id"])
    assert row.status == "released" and row.release_reason == "level_too_low"
    assert await points_service.get_balance(member_id) == 1000
    assert await redis_stock(vip["id"]) == 2
    await _checks_pass()


async def test_gift_keeps_a_copy_of_the_address(
    client: httpx.AsyncClient, make_item: MakeItem, new_member: NewMember
) -> None:
    gift = await make_item(kind="gift", total_stock=2)
    _member_id, headers = await new_member(points=1000)
    address_id = await add_address(client, headers)
    answer = await _post(client, gift["id"], headers, address_id=address_id)
    assert answer.status_code == 202, answer.text
    # deleted before the consumer runs: the copy travels in the entry
    await client.delete(f"/api/v1/addresses/{address_id}", headers=headers)
    await drain()
    rid = answer.json()["reservation_id"]
    r = await client.get(f"/api/v1/points-mall/reservations/{rid}", headers=headers)
    assert r.json()["status"] == "awaiting_shipment"
    url = f"/api/v1/points-mall/redemptions/{r.json()['redemption_id']}"
    mine = await client.get(url, headers=headers)
    assert mine.json()["address"]["detail"] == "1号"
    assert mine.json()["address"]["region"] == "上海市 徐汇区"


async def test_stock_reloads_from_the_database_when_redis_lost_it(
    client: httpx.AsyncClient, make_item: MakeItem, new_member: NewMember
) -> None:
    item = await make_item(total_stock=3, limit_per_member=1)
    _a, alice = await new_member(points=1000)
    _b, bob = await new_member(points=1000)
    assert written(await redeem(client, item["id"], alice))
    await get_redis().flushdb()
    # limits come back from the database too
    r = await _post(client, item["id"], alice)
    assert r.json()["error"]["code"] == "REDEEM_LIMIT_REACHED"
    assert written(await redeem(client, item["id"], bob))
    assert await redis_stock(item["id"]) == 1 and await db_stock(item["id"]) == 1
    await _checks_pass()


async def test_the_service_redeems_without_http(make_item: MakeItem, new_member: NewMember) -> None:
    # the service is usable without HTTP (e.g. by a batch job or the drill)
    item = await make_item(total_stock=1)
    member_id, _h = await new_member(points=100)
    redemption = await redeem_as(member_id, item["id"], key="batch-1")
    assert redemption.voucher_code and len(redemption.voucher_code) == 14


async def test_redeem_fast_path_answers_like_the_route(
    app: Any, client: httpx.AsyncClient, make_item: MakeItem, new_member: NewMember
) -> None:
    """The redeem is answered by a raw ASGI handler before FastAPI (kit.fastpath) with the
    same answers; what it declines (a body that does not validate, not JSON) reaches the
    route with the body as sent."""
    item = await make_item(total_stock=5, points_price=10)
    _m, headers = await new_member(points=100)
    path = f"/api/v1/points-mall/items/{item['id']}/redeem"
    fast = await client.post(path, json={"quantity": 1}, headers={**headers, **key()})
    assert fast.status_code == 202 and fast.headers["content-type"] == "application/json"
    # the FastAPI route itself (the router without the middleware stack)

    async def route_only(scope: Any, receive: Any, send: Any) -> None:
        async with AsyncExitStack() as stack:
            scope["fastapi_middleware_astack"] = stack
            await app.router(scope, receive, send)

    transport = httpx.ASGITransport(app=route_only)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as bare:
        routed = await bare.post(path, json={"quantity": 1}, headers={**headers, **key()})
    assert routed.status_code == 202
    assert set(routed.json()) == set(fast.json())
    assert {k: v for k, v in routed.json().items() if k != "reservation_id"} == {
        k: v for k, v in fast.json().items() if k != "reservation_id"
    }
    # declined: FastAPI validates the replayed body
    r = await client.post(path, json={"quantity": 0}, headers={**headers, **key()})
    assert r.status_code == 422 and r.json()["error"]["code"] == "VALIDATION_ERROR"
    assert r.json()["error"]["fields"][0]["field"] == "body.quantity"
    r = await client.post(path, content=b"quantity=1", headers={**headers, **key()})
    assert r.status_code == 422 and r.json()["error"]["code"] == "VALIDATION_ERROR"
    r = await client.post(path, json={"quantity": 1})
    assert r.status_code == 401
    r = await client.post(
        path, json={"quantity": 1}, headers={**headers, "Idempotency-Key": "k" * 129}
    )
    assert r.status_code == 422
    assert r.json()["error"]["fields"][0]["field"] == "header.Idempotency-Key"
    metrics = (await client.get("/metrics")).text
    assert 'route="/api/v1/points-mall/items/{item_id}/redeem"' in metrics
    await drain()
    assert await PointsMallRedemption.filter(item_id=item["id"], status="issued").count() == 2


async def test_a_batch_the_database_stock_cannot_cover_keeps_the_first_units(
    make_item: MakeItem, new_member: NewMember
) -> None:
    """One batch of 4, the database has 2 units (Redis handed out more): the guard for
    the batch refuses, one by one the first 2 are kept; the other 2 spend nothing."""
    item = await make_item(total_stock=6, points_price=100)
    await PointsMallItem.filter(id=item["id"]).update(stock=2)
    members = [(await new_member(points=100))[0] for _ in range(4)]
    answers = [await pm_service.redeem(m, item["id"], 1, None, f"k{m}") for m in members]
    assert await drain() == 4
    rows = [await PointsMallRedemption.get(reservation_id=a.reservation_id) for a in answers]
    assert [r.status for r in rows] == ["issued", "issued", "released", "released"]
    assert {r.release_reason for r in rows[2:]} == {"out_of_stock"}
    assert [await points_service.get_balance(m) for m in members] == [0, 0, 100, 100]
    assert await db_stock(item["id"]) == 0
    for m in members[2:]:
        assert not await points_service.PointsEntry.filter(member_id=m, delta__lt=0).exists()


async def test_a_batch_that_fails_as_a_whole_is_written_in_halves(
    make_item: MakeItem, new_member: NewMember, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One redemption breaks every transaction it is in: the batch of 16 fails, its
    halves are tried and theirs, and the other 15 are written in a handful of
    transactions; the bad one stays pending, and is written once it can be."""
    item = await make_item(total_stock=100, points_price=10)
    members = [(await new_member(points=100))[0] for _ in range(16)]
    answers = [await pm_service.redeem(m, item["id"], 1, None, f"k{m}") for m in members]
    bad = answers[5].reservation_id
    tries: list[int] = []
    real_batch = persist._batch

    async def batch(item_row: Any, todo: list[Any]) -> Any:
        tries.append(len(todo))
        if any(e.rid == bad for e in todo):
            raise RuntimeError("could not serialize access")
        return await real_batch(item_row, todo)

    monkeypatch.setattr(persist, "_batch", batch)
    assert await persist.process_pending_once(count=16) == 15
    assert len(tries) <= 1 + 2 * 4  # the batch, then about 2 * log2(16); not 1 + 16
    issued = await PointsMallRedemption.filter(item_id=item["id"], status="issued")
    assert {r.reservation_id for r in issued} == {a.reservation_id for a in answers} - {bad}
    assert await points_service.get_balance(members[5]) == 100  # nothing spent yet
    monkeypatch.setattr(persist, "_batch", real_batch)
    assert await persist.process_pending_once(count=16, claim_idle_ms=0) == 1
    assert await points_service.get_balance(members[5]) == 90
    await _checks_pass()


@pytest.mark.parametrize(
    "name", ['星巴克 "中杯" 券', "back\\slash\ttab\nline", "emoji 🎁 \u2028 \x01 </script>"]
)
def test_the_reservation_answer_is_the_same_json_as_the_standard_library_wrote(name: str) -> None:
    # orjson writes the hot answer; what a client reads must not change with it
    import json

    from mall.pointsmall.redeem import Reservation

    r = Reservation("12-abcdef", 12, name, "voucher", 2, 200, cash_fen=150)
    expected = json.dumps(r.as_dict(), ensure_ascii=False, separators=(",", ":")).encode()
    assert r.json() == expected
    assert json.loads(r.json())["item_name"] == name
