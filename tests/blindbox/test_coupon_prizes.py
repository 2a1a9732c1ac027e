"""Coupon prizes: the coupon is issued with the draw, once, or the whole draw is undone."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from mall.blindbox import service
from mall.blindbox.models import BlindBoxDraw
from mall.blindbox.schemas import PrizeIn, PrizePatch
from mall.blindbox.stock import keys as Keys
from mall.blindbox.tasks import check_blindbox
from mall.coupons import service as coupons_service
from mall.coupons.tasks import check_coupons
from mall.errors import MallError
from mall.kit import clock
from mall.points import service as points_service
from mall.redis import get_redis
from tests.blindbox.conftest import OPS, MakeMember, MakeSeries, prize
from tests.conftest import MemberLogin, StaffLogin

NOON = datetime(2025, 6, 15, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai
LABEL = "20250615"


def coupon_prize(template_id: int, weight: int = 1, stock: int | None = None) -> PrizeIn:
    return PrizeIn(
        name="10 off",
        kind="coupon",
        coupon_template_id=template_id,
        tier="common",
        weight=weight,
        stock=stock,
        value_fen=1000,
    )


async def _template(quantity: int | None) -> int:
    template = await coupons_service.create_template(
        {"name": "满99减10", "kind": "threshold", "face_value_fen": 1000, "threshold_fen": 9900,
         "total_quantity": quantity, "claimable": False}
    )  # fmt: skip
    return template.id


async def test_a_coupon_draw_puts_one_usable_coupon_in_the_account(
    client: httpx.AsyncClient,
    staff_headers: StaffLogin,
    member_headers: MemberLogin,
    make_series: MakeSeries,
) -> None:
    template_id = await _template(10)
    series = await make_series([coupon_prize(template_id)])
    headers = await member_headers("kai")
    r = await client.patch("/api/v1/me", json={"birthday": "1995-02-03"}, headers=headers)
    member_id = r.json()["id"]
    await points_service.earn(member_id, 1000, idempotency_key="t", reason="test")

    url = f"/api/v1/blind-boxes/{series.id}/draw"
    first = await client.post(url, headers={**headers, "Idempotency-Key": "tap-1"})
    assert first.status_code == 200, first.text
    told = first.json()
    assert told["prize"]["kind"] == "coupon" and told["status"] == "pending"
    assert await service.drain() == 1
    r = await client.get(f"/api/v1/blind-boxes/draws/{told['draw_id']}", headers=headers)
    body = r.json()
    assert body["status"] == "confirmed" and body["fulfilment_status"] == "done"
    coupon = body["coupon"]
    assert coupon["template_id"] == template_id and coupon["name"] == "满99减10"
    assert body["message"] == "优惠券已发放到您的账户，可在“我的优惠券”中查看。"

    mine = (await client.get("/api/v1/coupons?status=usable", headers=headers)).json()["items"]
    assert [(c["id"], c["source"], c["status"]) for c in mine] == [
        (coupon["id"], "blind_box", "usable")
    ]
    assert mine[0]["expires_at"] == coupon["expires_at"]

    # a replay of the same tap answers the same draw, and issues nothing more
    replay = await client.post(url, headers={**headers, "Idempotency-Key": "tap-1"})
    assert replay.status_code == 200 and replay.json() == told
    assert await service.drain() == 0
    assert len((await client.get("/api/v1/coupons", headers=headers)).json()["items"]) == 1
    assert await BlindBoxDraw.all().count() == 1
    assert await points_service.get_balance(member_id) == 900
    # the service issues once per draw id even if asked again
    again = await coupons_service.grant(
        member_id, template_id, grant_key=f"blindbox:{body['draw_id']}", source="blind_box"
    )
    assert again.id == coupon["id"]

    # shopper history and the ops log carry the coupon id; the choice still re-derives
    history = (await client.get("/api/v1/blind-boxes/draws", headers=headers)).json()["items"]
    assert [(d["fulfilment_status"], d["coupon_id"]) for d in history] == [("done", coupon["id"])]
    ops = await staff_headers("ops")
    log = (await client.get(f"/api/admin/v1/blind-boxes/{series.id}/draws", headers=ops)).json()
    assert log["items"][0]["coupon_id"] == coupon["id"]
    row = await BlindBoxDraw.get(draw_id=body["draw_id"])
    assert service.rederive(row) == row.prize_id
    assert (await check_blindbox()).ok and (await check_coupons()).ok


async def _counters(series_id: int, member_id: int) -> tuple[object, ...]:
    keys = Keys(series_id)
    redis = get_redis()
    return (
        await redis.hgetall(keys.stock),
        await redis.hget(keys.day(LABEL), str(member_id)),
        await redis.hget(keys.pity, str(member_id)),
        await redis.get(keys.seq),
        await points_service.get_balance(member_id),
    )


async def test_a_sold_out_template_undoes_the_whole_draw(
    make_series: MakeSeries, make_member: MakeMember
) -> None:
    clock.set_now(NOON)
    template_id = await _template(2)
    series = await make_series(
        [coupon_prize(template_id, stock=5), prize("golden", 1, "rare", stock=0)],
        daily_draw_cap=5,
        guarantee_tier="rare",
        guarantee_every=10,
    )
    alice, bob = await make_member(), await make_member()
    await service.draw(alice.id, series.id)
    await service.draw(bob.id, series.id)
    assert await service.drain() == 2
    won = await BlindBoxDraw.all()
    assert all(d.coupon_id is not None and d.fulfilment_status == "done" for d in won)
    before = await _counters(series.id, alice.id)
    assert before[1] == "1" and before[2] == "1" and before[4] == 900

    told = await service.draw(alice.id, series.id)
    assert told.status == "pending" and told.prize.kind == "coupon"
    assert await service.drain() == 1
    read = await service.get_draw(alice.id, told.draw_id)
    assert (read.status, read.release_reason) == ("released", "prize_unavailable")
    # points not spent; stock, today's count and the guarantee counter are back
    # (the draw counter only ever grows: it numbers decisions, not records)
    after = await _counters(series.id, alice.id)
    assert after[:3] == before[:3] and after[4] == before[4]
    assert await BlindBoxDraw.filter(member_id=alice.id, status="confirmed").count() == 1
    coupons, _next = await coupons_service.list_coupons(alice.id, None, None, 10)
    assert len(coupons) == 1
    for row in await BlindBoxDraw.all():
        assert service.rederive(row) == row.prize_id
    assert (await check_blindbox()).ok
    assert (await check_coupons()).ok  # the template's Redis count matches its rows


async def test_an_inactive_template_undoes_the_draw(
    make_series: MakeSeries, make_member: MakeMember
) -> None:
    template_id = await _template(None)
    series = await make_series([coupon_prize(template_id)])
    await coupons_service.update_template(template_id, {"active": False})
    member = await make_member(points=100)
    told = await service.draw(member.id, series.id)
    await service.drain()
    assert (await service.get_draw(member.id, told.draw_id)).release_reason == "prize_unavailable"
    assert await points_service.get_balance(member.id) == 100
    assert not await BlindBoxDraw.filter(status="confirmed").exists()


async def test_a_coupon_prize_must_name_a_template_that_exists(make_series: MakeSeries) -> None:
    with pytest.raises(MallError) as caught:
        await make_series([coupon_prize(424242)])
    assert caught.value.code == "PRIZE_COUPON_TEMPLATE_UNKNOWN"
    template_id = await _template(None)
    series = await make_series([coupon_prize(template_id), prize("cup", 1)])
    coupon = (await service.admin_view(series.id)).prizes[0]
    with pytest.raises(MallError) as caught:
        await service.update_prize(OPS, series.id, coupon.id, PrizePatch(coupon_template_id=424242))
    assert caught.value.code == "PRIZE_COUPON_TEMPLATE_UNKNOWN"
