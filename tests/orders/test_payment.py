"""Orders paid with coupon + points + stored value + WeChat Pay (the fake server in
tests/wallet checks our signatures and signs its answers and notifications)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx

from mall.kit import clock
from mall.orders import service as orders_service
from mall.orders.models import Order, OrderRefund
from mall.wallet import service as wallet_service
from tests.conftest import MemberLogin
from tests.orders.helpers import (
    NOT_MEMBER_DAY,
    assert_books_clean,
    balance,
    coupon_status,
    give_coupon,
    make_address,
    make_member,
    make_shop,
    stock,
)
from tests.wallet.fake_pay import FakePay
from tests.wallet.helpers import assert_ledger_clean, fund


async def _wallet(member_id: int) -> tuple[int, int]:
    b = await wallet_service.get_balance(member_id)
    return b.principal_fen, b.bonus_fen


async def test_coupon_points_wallet_and_wechat_pay_then_refund_everything_back(
    client: httpx.AsyncClient, member_headers: MemberLogin, fake_pay: FakePay
) -> None:
    clock.set_now(NOT_MEMBER_DAY)
    shop = await make_shop()
    headers = await member_headers("stacker")
    member = await make_member(10_000, name="stacker")
    await fund(member.id, 3000, 1000)
    coupon = await give_coupon(member)
    body = {
        "items": [{"sku_id": shop.soap.id, "quantity": 2},
                  {"sku_id": shop.towel.id, "quantity": 1}],
        "coupon_id": coupon.id, "points": 3000, "use_wallet": True, "delivery": "express",
        "address_id": await make_address(member),
    }  # fmt: skip
    preview = (await client.post("/api/v1/orders/preview", json=body, headers=headers)).json()
    assert (preview["wallet_balance_fen"], preview["wallet_fen"], preview["cash_fen"]) == (
        4000, 4000, 4990,
    )  # fmt: skip
    r = await client.post("/api/v1/orders", json=body, headers={**headers, "Idempotency-Key": "s1"})
    assert r.status_code == 201, r.text
    order = r.json()
    # 12990 - coupon 1000 - points 3000 = 8990: wallet 4000 (principal first), cash 4990
    assert (order["wallet_fen"], order["cash_fen"], order["status"]) == (
        4000,
        4990,
        "pending_payment",
    )
    no = "O" + order["number"]
    assert order["payment"]["package"] == f"prepay_id={fake_pay.orders[no].prepay_id}"
    assert fake_pay.orders[no].amount == 4990 and fake_pay.orders[no].openid == "dev_stacker"
    assert fake_pay.orders[no].time_expire == "2025-03-11T12:15:00+08:00"
    assert await _wallet(member.id) == (0, 0) and await balance(member) == 7000

    # WeChat notifies (three times): paid once
    resource = fake_pay.pay(no)
    for _ in range(3):
        delivered = await fake_pay.deliver(client, resource)
        assert delivered.status_code in (200, 204), delivered.text
    row = await Order.get(id=order["id"])
    assert row.status == "paid" and row.transaction_id == resource["transaction_id"]
    assert row.wallet_principal_fen == 3000 and row.wallet_bonus_fen == 1000
    assert await coupon_status(coupon) == "used"
    await assert_books_clean()
    await assert_ledger_clean()

    # the shopper cancels before shipping: every part goes back where it came from
    r = await client.post(f"/api/v1/orders/{order['id']}/cancel", headers=headers)
    assert r.status_code == 200, r.text
    (refund,) = r.json()["refunds"]
    assert (refund["cash_fen"], refund["wallet_fen"], refund["points"]) == (4990, 4000, 3000)
    assert refund["cash_status"] == "processing"
    sent = fake_pay.refunds[refund["out_refund_no"]]
    assert (sent.refund, sent.total, sent.out_trade_no) == (4990, 4990, no)
    assert await _wallet(member.id) == (3000, 1000)
    assert await balance(member) == 10_000
    assert await coupon_status(coupon) == "usable"
    assert (await stock(shop.soap), await stock(shop.towel)) == (10, 5)
    # WeChat finishes the refund and says so
    headers_, body_ = fake_pay.refund_notification(refund["out_refund_no"])
    done = await client.post("/api/v1/wechat/pay-notify", headers=headers_, content=body_)
    assert done.status_code in (200, 204), done.text
    assert (await OrderRefund.get(id=refund["id"])).cash_status == "succeeded"
    await assert_books_clean()
    await assert_ledger_clean()


async def test_partial_refund_splits_wallet_and_cash_in_proportion(
    client: httpx.AsyncClient, member_headers: MemberLogin, fake_pay: FakePay
) -> None:
    clock.set_now(NOT_MEMBER_DAY)
    shop = await make_shop()
    headers = await member_headers("split")
    member = await make_member(name="split")
    await fund(member.id, 5000, 1000)
    r = await client.post(
        "/api/v1/orders",
        json={"items": [{"sku_id": shop.soap.id, "quantity": 2}], "use_wallet": True,
              "delivery": "express", "address_id": await make_address(member)},
        headers=headers,
    )  # fmt: skip
    order = r.json()
    assert (order["wallet_fen"], order["cash_fen"]) == (6000, 4000)
    await fake_pay.deliver(client, fake_pay.pay("O" + order["number"]))
    line = order["lines"][0]
    fake_pay.refund_status = "SUCCESS"
    r = await client.post(
        f"/api/v1/orders/{order['id']}/refund",
        json={"lines": [{"line_id": line["id"], "quantity": 1}]},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    first = r.json()["refunds"][-1]
    # 5000 back: cash 4000 x 5000 / 10000 = 2000, wallet 3000 (its own 5:1 split)
    assert (first["money_fen"], first["cash_fen"], first["wallet_fen"]) == (5000, 2000, 3000)
    assert first["cash_status"] == "succeeded"
    assert await _wallet(member.id) == (2500, 500)
    r = await client.post(f"/api/v1/orders/{order['id']}/refund", json={}, headers=headers)
    second = r.json()["refunds"][-1]
    assert (second["cash_fen"], second["wallet_fen"]) == (2000, 3000)
    assert r.json()["status"] == "refunded"
    assert await _wallet(member.id) == (5000, 1000)
    assert sum(x.refund for x in fake_pay.refunds.values()) == 4000
    await assert_books_clean()
    await assert_ledger_clean()


async def test_wallet_covers_everything_paid_at_once(
    client: httpx.AsyncClient, member_headers: MemberLogin, fake_pay: FakePay
) -> None:
    shop = await make_shop()
    headers = await member_headers("rich")
    member = await make_member(name="rich")
    await fund(member.id, 100_000)
    r = await client.post(
        "/api/v1/orders",
        json={"items": [{"sku_id": shop.towel.id, "quantity": 1}], "use_wallet": True,
              "delivery": "pickup"},
        headers=headers,
    )  # fmt: skip
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "paid" and r.json()["cash_fen"] == 0
    assert fake_pay.calls["jsapi"] == 0
    assert await _wallet(member.id) == (100_000 - 2990, 0)
    # cancelling it refunds the wallet; no WeChat refund is needed
    r = await client.post(f"/api/v1/orders/{r.json()['id']}/cancel", headers=headers)
    assert r.json()["status"] == "cancelled" and fake_pay.calls["refund"] == 0
    assert await _wallet(member.id) == (100_000, 0)
    await assert_ledger_clean()
    await assert_books_clean()


async def test_wechat_down_then_pay_again(
    client: httpx.AsyncClient, member_headers: MemberLogin, fake_pay: FakePay
) -> None:
    shop = await make_shop()
    headers = await member_headers("patient")
    fake_pay.fail("jsapi", 500, "SYSTEM_ERROR")
    r = await client.post(
        "/api/v1/orders",
        json={"items": [{"sku_id": shop.towel.id, "quantity": 1}], "delivery": "pickup"},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    order = r.json()
    assert order["status"] == "pending_payment" and order["payment"] is None
    assert order["payment_error"] == "PAY_BUSY"
    again = await client.post(f"/api/v1/orders/{order['id']}/pay", headers=headers)
    assert again.status_code == 200, again.text
    no = "O" + order["number"]
    assert again.json()["payment"]["package"] == f"prepay_id={fake_pay.orders[no].prepay_id}"
    assert again.json()["payment_error"] is None
    # asking again returns the same parameters without calling WeChat
    calls = fake_pay.calls["jsapi"]
    third = await client.post(f"/api/v1/orders/{order['id']}/pay", headers=headers)
    assert third.json()["payment"] == again.json()["payment"]
    assert fake_pay.calls["jsapi"] == calls


async def test_deadline_asks_wechat_first_and_closes_the_unpaid(
    client: httpx.AsyncClient, member_headers: MemberLogin, fake_pay: FakePay
) -> None:
    shop = await make_shop()
    headers = await member_headers("deadline")
    member = await make_member(5000, name="deadline")
    placed: list[dict[str, Any]] = []
    for _ in range(2):
        r = await client.post(
            "/api/v1/orders",
            json={"items": [{"sku_id": shop.towel.id, "quantity": 1}], "points": 1000,
                  "delivery": "pickup"},
            headers=headers,
        )  # fmt: skip
        placed.append(r.json())
    paid_quietly, unpaid = placed
    fake_pay.pay("O" + paid_quietly["number"])  # paid, but the notification is lost
    clock.advance(timedelta(minutes=16))
    assert await orders_service.close_overdue() == 1
    assert (await Order.get(id=paid_quietly["id"])).status == "paid"
    assert (await Order.get(id=unpaid["id"])).status == "closed"
    assert fake_pay.orders["O" + unpaid["number"]].trade_state == "CLOSED"
    assert await stock(shop.towel) == 4
    assert await balance(member) == 4000
    await assert_books_clean()


async def test_unreachable_wechat_delays_the_close_until_forced(
    client: httpx.AsyncClient, member_headers: MemberLogin, fake_pay: FakePay
) -> None:
    shop = await make_shop()
    headers = await member_headers("foggy")
    r = await client.post(
        "/api/v1/orders",
        json={"items": [{"sku_id": shop.towel.id, "quantity": 1}], "delivery": "pickup"},
        headers=headers,
    )
    order_id = r.json()["id"]
    fake_pay.fail("query", 500, "SYSTEM_ERROR", times=2)
    clock.advance(timedelta(minutes=16))
    assert await orders_service.close_overdue() == 0
    assert (await Order.get(id=order_id)).status == "pending_payment"
    clock.advance(timedelta(minutes=31))
    assert await orders_service.close_overdue() == 1
    assert (await Order.get(id=order_id)).status == "closed"
    assert await stock(shop.towel) == 5


async def test_refund_retried_until_wechat_answers(
    client: httpx.AsyncClient, member_headers: MemberLogin, fake_pay: FakePay
) -> None:
    shop = await make_shop()
    headers = await member_headers("retry")
    r = await client.post(
        "/api/v1/orders",
        json={"items": [{"sku_id": shop.towel.id, "quantity": 1}], "delivery": "pickup"},
        headers=headers,
    )
    order = r.json()
    await fake_pay.deliver(client, fake_pay.pay("O" + order["number"]))
    fake_pay.fail("refund", 500, "SYSTEM_ERROR")
    r = await client.post(f"/api/v1/orders/{order['id']}/cancel", headers=headers)
    assert r.status_code == 200, r.text
    (refund,) = r.json()["refunds"]
    assert refund["cash_status"] == "pending"
    assert await orders_service.retry_cash_refunds() == 0  # too fresh
    clock.advance(timedelta(minutes=2))
    fake_pay.refund_status = "SUCCESS"
    assert await orders_service.retry_cash_refunds() == 1
    assert (await OrderRefund.get(id=refund["id"])).cash_status == "succeeded"
    assert fake_pay.refunds[refund["out_refund_no"]].refund == 2990
    await assert_books_clean()
