"""Item prizes ship through a mall order of 0 fen: address, ship with carrier and tracking
number, cancel before shipping and ask again; coupon prizes have nothing to ship."""

from __future__ import annotations

import httpx
import pytest

from mall.blindbox import service, shipping
from mall.blindbox.models import BlindBoxDraw
from mall.blindbox.schemas import PrizeShipIn
from mall.blindbox.tasks import check_blindbox
from mall.errors import MallError
from mall.kit import clock
from mall.members.models import Member
from mall.orders import service as orders_service
from mall.orders.models import Order
from mall.points import service as points_service
from tests.blindbox.conftest import MakeMember, MakeSeries, prize
from tests.conftest import MemberLogin
from tests.orders.helpers import NOT_MEMBER_DAY, assert_books_clean, make_address


async def test_an_item_prize_ships_once_with_a_tracking_number(
    make_series: MakeSeries, make_member: MakeMember
) -> None:
    clock.set_now(NOT_MEMBER_DAY)
    series = await make_series([prize("plush", 1, stock=5)])
    member = await make_member()
    won = await service.draw(member.id, series.id)
    await service.drain()  # the worker records the draw
    address = await make_address(member)
    body = PrizeShipIn(delivery="express", address_id=address)

    order = await shipping.ship_prize(member, won.draw_id, body)
    assert (order.status, order.amount_due_fen, order.source) == ("paid", 0, "blindbox")
    assert order.address and order.address["phone"] == "13800138000"
    assert (await shipping.ship_prize(member, won.draw_id, body)).id == order.id  # once
    row = await BlindBoxDraw.get(draw_id=won.draw_id)
    assert (row.fulfilment_status, row.mall_order_id) == ("ordered", order.id)

    shipped = await orders_service.ship(
        order.id, shipping_company="中通快递", tracking_no="ZT778899", staff=None
    )
    assert (shipped.status, shipped.shipping_company, shipped.tracking_no) == (
        "shipped", "中通快递", "ZT778899",
    )  # fmt: skip
    report = await check_blindbox()
    assert report.ok, report.lines
    await assert_books_clean()


async def test_cancel_before_shipping_lets_the_member_ask_again(
    make_series: MakeSeries, make_member: MakeMember
) -> None:
    clock.set_now(NOT_MEMBER_DAY)
    series = await make_series([prize("plush", 1, stock=5)])
    member = await make_member()
    stranger = await Member.create(openid="dev_bb_stranger")
    won = await service.draw(member.id, series.id)
    await service.drain()  # the worker records the draw
    with pytest.raises(MallError) as raised:
        await shipping.ship_prize(stranger, won.draw_id, PrizeShipIn(delivery="pickup"))
    assert raised.value.code == "BLINDBOX_DRAW_NOT_FOUND"

    first = await shipping.ship_prize(member, won.draw_id, PrizeShipIn(delivery="pickup"))
    await orders_service.cancel(first.id, member_id=member.id, reason="wrong address")
    assert (await Order.get(id=first.id)).status == "cancelled"
    row = await BlindBoxDraw.get(draw_id=won.draw_id)
    assert (row.fulfilment_status, row.mall_order_id) == ("pending", None)

    address = await make_address(member)
    second = await shipping.ship_prize(
        member, won.draw_id, PrizeShipIn(delivery="express", address_id=address)
    )
    assert second.id != first.id and second.source_ref == f"blindbox:{won.draw_id}"
    assert (await BlindBoxDraw.get(draw_id=won.draw_id)).mall_order_id == second.id
    await assert_books_clean()


async def test_ship_route_and_coupon_prizes(
    client: httpx.AsyncClient, member_headers: MemberLogin, make_series: MakeSeries
) -> None:
    clock.set_now(NOT_MEMBER_DAY)
    series = await make_series([prize("plush", 1, stock=5)])
    headers = await member_headers("boxer")
    member = await Member.get(openid="dev_boxer")
    await Member.filter(id=member.id).update(birthday=clock.now().date().replace(year=1990))
    await points_service.earn(member.id, 500, idempotency_key="t:boxer", reason="test")
    won = await service.draw(member.id, series.id)
    await service.drain()  # the worker records the draw
    url = f"/api/v1/blind-boxes/draws/{won.draw_id}/ship"
    r = await client.post(url, json={"delivery": "express"}, headers=headers)
    assert r.status_code == 422 and r.json()["error"]["code"] == "ORDER_ADDRESS_REQUIRED"
    r = await client.post(url, json={"delivery": "pickup"}, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "paid" and r.json()["lines"][0]["name"] == "plush"
    draws = (await client.get("/api/v1/blind-boxes/draws", headers=headers)).json()["items"]
    assert draws[0]["fulfilment_status"] == "ordered"
    assert draws[0]["mall_order_id"] == r.json()["id"]

    # a coupon prize was delivered with the draw: nothing to ship
    await BlindBoxDraw.filter(draw_id=won.draw_id).update(fulfilment_status="done")
    other = await service.draw(member.id, series.id)
    await service.drain()  # the worker records the draw
    await BlindBoxDraw.filter(draw_id=other.draw_id).update(fulfilment_status="done")
    r = await client.post(
        f"/api/v1/blind-boxes/draws/{other.draw_id}/ship",
        json={"delivery": "pickup"},
        headers={**headers, "Accept-Language": "en"},
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "BLINDBOX_PRIZE_NOT_SHIPPABLE"
    assert "done" in r.json()["error"]["message"]
