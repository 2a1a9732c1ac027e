"""A checkout's points hold outlives the order's own close, so the points release job
never voids points a late payment still captures; a hold the close never reached is
released by the points job, and the close then finds it released."""

from __future__ import annotations

from datetime import timedelta

import httpx

from mall.config import get_settings
from mall.kit import clock
from mall.orders import service as orders_service
from mall.orders.models import Order
from mall.points import service as points_service
from mall.points.models import PointsHold
from tests.conftest import MemberLogin
from tests.orders.helpers import (
    NOT_MEMBER_DAY,
    assert_books_clean,
    balance,
    make_member,
    make_shop,
    paid_result,
)
from tests.wallet.fake_pay import FakePay


async def _order(client: httpx.AsyncClient, headers: dict[str, str], sku_id: int) -> Order:
    r = await client.post(
        "/api/v1/orders",
        json={"items": [{"sku_id": sku_id, "quantity": 1}], "points": 1000, "delivery": "pickup"},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    return await Order.get(id=r.json()["id"])


async def test_the_hold_lives_past_the_forced_close_and_a_late_payment_captures_it(
    client: httpx.AsyncClient, member_headers: MemberLogin, fake_pay: FakePay
) -> None:
    clock.set_now(NOT_MEMBER_DAY)
    settings = get_settings()
    shop = await make_shop()
    headers = await member_headers("slowpay")
    member = await make_member(5000, name="slowpay")
    order = await _order(client, headers, shop.towel.id)
    assert order.pay_deadline is not None
    hold = await PointsHold.get(id=order.points_hold_id)
    force = timedelta(seconds=settings.order_close_force_after_seconds)
    assert hold.expires_at == order.pay_deadline + force + timedelta(
        seconds=settings.points_hold_timeout_seconds
    )
    # WeChat cannot be asked: the order stays open until the forced close
    fake_pay.fail("query", 500, "SYSTEM_ERROR", times=5)
    clock.set_now(order.pay_deadline + force - timedelta(seconds=1))
    assert await orders_service.close_overdue() == 0
    assert await points_service.release_expired_holds() == 0
    fake_pay.pay("O" + order.number)
    await orders_service.on_order_paid(
        paid_result(order, mchid=fake_pay.mchid, appid=fake_pay.appid)
    )
    assert (await Order.get(id=order.id)).status == "paid"
    assert (await PointsHold.get(id=hold.id)).status == "captured"
    clock.advance(timedelta(days=1))
    assert await points_service.release_expired_holds() == 0
    assert await balance(member) == 4000
    await assert_books_clean()


async def test_a_hold_released_by_the_points_job_is_found_released_by_the_close(
    client: httpx.AsyncClient, member_headers: MemberLogin, fake_pay: FakePay
) -> None:
    clock.set_now(NOT_MEMBER_DAY)
    shop = await make_shop()
    headers = await member_headers("gone")
    member = await make_member(5000, name="gone")
    order = await _order(client, headers, shop.towel.id)
    hold = await PointsHold.get(id=order.points_hold_id)
    assert hold.expires_at is not None
    clock.set_now(hold.expires_at)  # the order close job was down all along
    assert await points_service.release_expired_holds() == 1
    assert await balance(member) == 5000
    assert await orders_service.close_overdue() == 1
    closed = await Order.get(id=order.id)
    assert closed.status == "closed" and closed.refunded_points == 1000
    assert await balance(member) == 5000
    await assert_books_clean()
