"""Placing orders: what is reserved, all or nothing, once per Idempotency-Key."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import pytest

from mall.errors import MallError
from mall.kit import clock
from mall.members.models import Member
from mall.orders import service as orders_service
from mall.orders.models import Order
from mall.orders.schemas import OrderIn
from mall.redis import get_redis
from tests.conftest import MemberLogin
from tests.orders.helpers import (
    NOT_MEMBER_DAY,
    assert_books_clean,
    balance,
    counts,
    coupon_status,
    give_coupon,
    make_address,
    make_member,
    make_shop,
    paid_result,
    stock,
)


async def _buyer(
    member_headers: MemberLogin, name: str, points: int
) -> tuple[dict[str, str], Member]:
    headers = await member_headers(name)
    return headers, await make_member(points, name=name)


async def test_order_reserves_everything_then_payment_settles_it(
    client: httpx.AsyncClient, member_headers: MemberLogin
) -> None:
    clock.set_now(NOT_MEMBER_DAY)
    shop = await make_shop()
    headers, member = await _buyer(member_headers, "buyer", 10_000)
    address_id = await make_address(member)
    coupon = await give_coupon(member)
    body = {
        "items": [{"sku_id": shop.soap.id, "quantity": 2},
                  {"sku_id": shop.towel.id, "quantity": 1}],
        "coupon_id": coupon.id, "points": 3000, "delivery": "express", "address_id": address_id,
    }  # fmt: skip
    r = await client.post("/api/v1/orders", json=body, headers={**headers, "Idempotency-Key": "k1"})
    assert r.status_code == 201, r.text
    order = r.json()
    # 2 x 5000 + 2990 = 12990; coupon 1000 -> 11990 (ships free); points 3000 -> 8990 due
    assert order["status"] == "pending_payment"
    assert (order["goods_fen"], order["points_fen"], order["shipping_fen"]) == (11990, 3000, 0)
    assert order["amount_due_fen"] == order["cash_fen"] == 8990
    assert order["breakdown"]["coupon_fen"] == 1000 and order["breakdown"]["cash_fen"] == 8990
    assert order["address"]["name"] == "张三"
    assert order["pay_deadline"].startswith("2025-03-11T04:15:00")
    # WeChat Pay is not configured in tests: the order waits, the shopper can retry /pay
    assert order["payment"] is None and order["payment_error"] == "PAY_NOT_CONFIGURED"
    lines = {ln["sku_id"]: ln for ln in order["lines"]}
    assert lines[shop.soap.id]["specs"] == {"规格": "2L"}
    assert sum(ln["due_fen"] for ln in order["lines"]) == 8990
    assert sum(ln["points_used"] for ln in order["lines"]) == 3000
    assert (await stock(shop.soap), await stock(shop.towel)) == (8, 4)
    assert await coupon_status(coupon) == "locked"
    assert await balance(member) == 7000
    await assert_books_clean()

    # the payment arrives (notification or query): paid, points captured, coupon used
    row = await Order.get(id=order["id"])
    await orders_service.on_order_paid(paid_result(row))
    await orders_service.on_order_paid(paid_result(row))  # WeChat retries: nothing changes
    row = await Order.get(id=order["id"])
    assert row.status == "paid" and row.transaction_id == f"4200{row.number}"
    assert await coupon_status(coupon) == "used"
    assert await balance(member) == 7000
    with pytest.raises(MallError) as wrong:
        await orders_service.on_order_paid(paid_result(row, amount_total_fen=1))
    assert wrong.value.code == "ORDER_PAYMENT_MISMATCH"
    with pytest.raises(MallError) as unknown:
        await orders_service.on_order_paid(paid_result(row, out_trade_no="O0000"))
    assert unknown.value.code == "ORDER_PAYMENT_UNKNOWN"

    # the owner reads it; nobody else can
    mine = await client.get(f"/api/v1/orders/{order['id']}", headers=headers)
    assert mine.status_code == 200 and mine.json()["status"] == "paid"
    assert mine.json()["payment"] is None
    other = await member_headers("stranger")
    assert (await client.get(f"/api/v1/orders/{order['id']}", headers=other)).status_code == 404
    listed = await client.get("/api/v1/orders", headers=other)
    assert listed.json()["items"] == []
    await assert_books_clean()


async def test_nothing_left_to_pay_is_paid_at_once(
    client: httpx.AsyncClient, member_headers: MemberLogin
) -> None:
    clock.set_now(NOT_MEMBER_DAY)
    shop = await make_shop()
    headers, member = await _buyer(member_headers, "lucky", 0)
    towel = await orders_service.catalog_service.get_sku(shop.towel.id)
    voucher = await give_coupon(
        member, name="毛巾兑换券", kind="exchange", face_value_fen=0, threshold_fen=0,
        scope="products", scope_ids=[towel.product_id],
    )  # fmt: skip
    r = await client.post(
        "/api/v1/orders",
        json={"items": [{"sku_id": shop.towel.id, "quantity": 1}], "coupon_id": voucher.id,
              "delivery": "pickup"},
        headers=headers,
    )  # fmt: skip
    assert r.status_code == 201, r.text
    order = r.json()
    assert order["amount_due_fen"] == 0 and order["coupon_fen"] == 2990
    assert order["status"] == "paid" and order["paid_at"] is not None
    assert order["pay_deadline"] is None and order["payment_error"] is None
    assert await coupon_status(voucher) == "used"
    assert await stock(shop.towel) == 4
    await assert_books_clean()


async def test_same_idempotency_key_is_the_same_order(
    client: httpx.AsyncClient, member_headers: MemberLogin
) -> None:
    shop = await make_shop()
    headers, _member = await _buyer(member_headers, "retry", 0)
    body = {"items": [{"sku_id": shop.towel.id, "quantity": 2}], "delivery": "pickup"}
    keyed = {**headers, "Idempotency-Key": "checkout-1"}
    first = await client.post("/api/v1/orders", json=body, headers=keyed)
    again = await client.post("/api/v1/orders", json=body, headers=keyed)
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    # even with the Redis answer gone, the database knows the key
    await get_redis().flushdb()
    third = await client.post("/api/v1/orders", json=body, headers=keyed)
    assert third.status_code == 201 and third.json()["id"] == first.json()["id"]
    assert await stock(shop.towel) == 3
    assert (await counts())[0] == 1
    # the same key for another cart is refused
    other = {"items": [{"sku_id": shop.towel.id, "quantity": 1}], "delivery": "pickup"}
    reused = await client.post("/api/v1/orders", json=other, headers=keyed)
    assert reused.status_code == 422
    assert reused.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    # a new key is a new order
    fresh = await client.post(
        "/api/v1/orders", json=body, headers={**headers, "Idempotency-Key": "2"}
    )
    assert fresh.status_code == 201 and fresh.json()["id"] != first.json()["id"]
    assert await stock(shop.towel) == 1


async def test_failure_midway_leaves_nothing_behind(
    client: httpx.AsyncClient, member_headers: MemberLogin
) -> None:
    clock.set_now(NOT_MEMBER_DAY)
    shop = await make_shop()
    headers, member = await _buyer(member_headers, "short", 500)
    address_id = await make_address(member)
    coupon = await give_coupon(member)
    body = {
        "items": [{"sku_id": shop.soap.id, "quantity": 2}], "coupon_id": coupon.id,
        "points": 2000, "delivery": "express", "address_id": address_id,
    }  # fmt: skip
    # stock is taken and the coupon locked before the points hold fails
    r = await client.post("/api/v1/orders", json=body, headers={**headers, "Accept-Language": "en"})
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "NOT_ENOUGH_POINTS"
    too_many = await client.post(
        "/api/v1/orders",
        json={**body, "points": 0, "items": [{"sku_id": shop.soap.id, "quantity": 11}]},
        headers=headers,
    )
    assert too_many.status_code == 409
    assert too_many.json()["error"]["code"] == "ORDER_OUT_OF_STOCK"
    assert await counts() == (0, 0, 0)
    assert await stock(shop.soap) == 10
    assert await coupon_status(coupon) == "usable"
    assert await balance(member) == 500
    await assert_books_clean()
    # the preview of the same cart says why, and reserves nothing
    preview = await client.post("/api/v1/orders/preview", json=body, headers=headers)
    assert preview.status_code == 200
    assert preview.json()["points_used"] == 500 and "POINTS_SHORT" in preview.json()["notes"]
    assert await stock(shop.soap) == 10


async def test_delivery_and_address_rules(
    client: httpx.AsyncClient, member_headers: MemberLogin
) -> None:
    shop = await make_shop()
    headers, member = await _buyer(member_headers, "addr", 0)
    soap = [{"sku_id": shop.soap.id, "quantity": 1}]
    missing = await client.post("/api/v1/orders", json={"items": soap}, headers=headers)
    assert missing.status_code == 422
    assert missing.json()["error"]["code"] == "ORDER_ADDRESS_REQUIRED"
    stranger = await make_member()
    foreign = await client.post(
        "/api/v1/orders",
        json={"items": soap, "address_id": await make_address(stranger)},
        headers=headers,
    )
    assert foreign.status_code == 404
    pickup = await client.post(
        "/api/v1/orders", json={"items": soap, "delivery": "pickup"}, headers=headers
    )
    assert pickup.status_code == 422
    assert pickup.json()["error"]["code"] == "ORDER_DELIVERY_UNAVAILABLE"
    same_city = await client.post(
        "/api/v1/orders",
        json={"items": soap, "delivery": "same_city", "address_id": await make_address(member)},
        headers=headers,
    )
    assert same_city.status_code == 201, same_city.text
    assert same_city.json()["shipping_fen"] == 800
    assert await stock(shop.soap) == 9


async def test_concurrent_orders_for_the_last_unit() -> None:
    shop = await make_shop()
    members = [await make_member(points=1000) for _ in range(30)]

    async def buy(member: Member) -> Order:
        data = OrderIn.model_validate(
            {"items": [{"sku_id": shop.last_one.id, "quantity": 1}], "points": 100,
             "delivery": "pickup"}
        )  # fmt: skip
        return await orders_service.place_order(member, data, None)

    results = await asyncio.gather(*(buy(m) for m in members), return_exceptions=True)
    won = [r for r in results if isinstance(r, Order)]
    lost = [r for r in results if isinstance(r, MallError)]
    assert len(won) == 1 and len(lost) == 29, [
        r for r in results if not isinstance(r, (Order, MallError))
    ]
    assert {e.code for e in lost} == {"ORDER_OUT_OF_STOCK"}
    assert await stock(shop.last_one) == 0
    assert (await counts())[0] == 1
    # only the winner's points are held
    balances = sorted([await balance(m) for m in members])
    assert balances == [900] + [1000] * 29
    await assert_books_clean()


async def test_pay_again_after_a_failed_wechat_call(
    client: httpx.AsyncClient, member_headers: MemberLogin
) -> None:
    shop = await make_shop()
    headers, _member = await _buyer(member_headers, "payer", 0)
    r = await client.post(
        "/api/v1/orders",
        json={"items": [{"sku_id": shop.towel.id, "quantity": 1}], "delivery": "pickup"},
        headers=headers,
    )
    order = r.json()
    again = await client.post(f"/api/v1/orders/{order['id']}/pay", headers=headers)
    assert again.status_code == 503 and again.json()["error"]["code"] == "ORDER_PAY_UNAVAILABLE"
    clock.advance(timedelta(minutes=16))
    headers = await member_headers("payer")  # access tokens last 15 minutes
    late = await client.post(f"/api/v1/orders/{order['id']}/pay", headers=headers)
    assert late.status_code == 409 and late.json()["error"]["code"] == "ORDER_PAYMENT_EXPIRED"
