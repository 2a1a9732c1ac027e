"""Paying a flash-sale win: the win becomes a mall order paid by the wallet and/or WeChat
Pay (the fake server in tests/wallet checks our signatures and signs notifications), with
one close job owning the deadline and the sale's stock reconciled after every scenario."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest

from mall.audit.models import AuditLog
from mall.catalog.models import Product, Sku
from mall.config import Settings
from mall.errors import MallError
from mall.kit import clock
from mall.members.models import Member
from mall.orders import service as orders_service
from mall.orders.models import Order, OrderRefund
from mall.points import service as points_service
from mall.redis import get_redis
from mall.seckill import payment, service
from mall.seckill.models import OrderStatus, SeckillItem, SeckillOrder
from mall.seckill.schemas import WinPayIn
from mall.wallet import service as wallet_service
from tests.conftest import MemberLogin
from tests.factories import make_member_ids
from tests.orders.helpers import NOT_MEMBER_DAY, assert_books_clean, make_address
from tests.seckill.conftest import MakeItem
from tests.wallet.fake_pay import FakePay
from tests.wallet.helpers import assert_ledger_clean, fund

PICKUP = WinPayIn(delivery="pickup")


async def _assert_reconciled(item_id: int) -> None:
    checks = await service.reconcile([item_id])
    assert checks and all(c.ok for c in checks), [c.line() for c in checks]


async def _redis_stock(item_id: int) -> int:
    return int(await get_redis().get(service.key(item_id, "stock")))


async def _win(item_id: int, member_id: int) -> str:
    won = await service.attempt(item_id, member_id)
    assert won.result == "won" and won.reservation_id
    await service.drain()
    return won.reservation_id


async def _with_product(item: SeckillItem) -> Sku:
    """The item sells a catalog product whose own stock must never move."""
    product = await Product.create(name="限量礼盒", list_price=9900, on_shelf=True)
    sku = await Sku.create(product_id=product.id, price=9900, stock=5)
    await SeckillItem.filter(id=item.id).update(product_id=product.id)
    return sku


async def test_300_unit_cash_sale_every_winner_pays_through_wechat_pay(
    make_item: MakeItem, client: httpx.AsyncClient, fake_pay: FakePay
) -> None:
    clock.set_now(NOT_MEMBER_DAY)
    item = await make_item(stock=300, cash_price_fen=990)
    sku = await _with_product(item)
    members = await make_member_ids(300, prefix="sk")
    results = await asyncio.gather(*(service.attempt(item.id, m) for m in members))
    assert all(r.result == "won" for r in results)
    assert await service.drain() == 300
    wins = await SeckillOrder.filter(item_id=item.id).order_by("id")
    deadline = wins[0].pay_deadline
    assert deadline is not None

    async def pay(win: SeckillOrder) -> None:
        member = await Member.get(id=win.member_id)
        order = await payment.pay_win(member, win.reservation_id, PICKUP)
        no = orders_service.out_trade_no(order)
        sent = fake_pay.orders[no]
        assert (sent.amount, sent.openid) == (990, member.openid)
        assert sent.time_expire == deadline.astimezone(clock.SHANGHAI).isoformat("T", "seconds")
        assert order.prepay and order.prepay["package"] == f"prepay_id={sent.prepay_id}"
        # a second tap is the same order, not a second one
        assert (await payment.pay_win(member, win.reservation_id, PICKUP)).id == order.id
        delivered = await fake_pay.deliver(client, fake_pay.pay(no))
        assert delivered.status_code in (200, 204), delivered.text

    for start in range(0, len(wins), 20):  # shoppers paying side by side
        await asyncio.gather(*(pay(win) for win in wins[start : start + 20]))

    assert await SeckillOrder.filter(item_id=item.id, status=OrderStatus.PAID).count() == 300
    orders = await Order.filter(source="seckill")
    assert len(orders) == 300 and {o.status for o in orders} == {"paid"}
    assert {o.amount_due_fen for o in orders} == {990}
    assert orders[0].breakdown["notes"] == ["SECKILL_PRICE"]
    assert fake_pay.calls["jsapi"] == 300
    # the deadline passes: nothing is paid twice, expired or closed
    clock.advance(timedelta(hours=1))
    assert await service.expire_unpaid() == 0
    assert await orders_service.close_overdue() == 0
    item_row = await SeckillItem.get(id=item.id)
    assert item_row.sold == 300 and await _redis_stock(item.id) == 0
    await sku.refresh_from_db()
    assert sku.stock == 5  # the unit is the sale's: catalog stock never moved
    await _assert_reconciled(item.id)
    await assert_books_clean()


async def test_a_paid_win_ships_and_refunds_like_an_order(
    make_item: MakeItem, fake_pay: FakePay, client: httpx.AsyncClient
) -> None:
    clock.set_now(NOT_MEMBER_DAY)
    item = await make_item(stock=2, points_price=100, cash_price_fen=1500)
    sku = await _with_product(item)
    (member_id,) = await make_member_ids(1, prefix="ship")
    await points_service.earn(member_id, 300, idempotency_key="t:ship", reason="test")
    await fund(member_id, 500)
    member = await Member.get(id=member_id)
    rid = await _win(item.id, member_id)
    assert await points_service.get_balance(member_id) == 200  # spent when it was won

    address = await make_address(member)
    body = WinPayIn(use_wallet=True, delivery="express", address_id=address)
    order = await payment.pay_win(member, rid, body)
    # points + cash: the points were spent at the win; the cash part is wallet + WeChat Pay
    assert (order.amount_due_fen, order.wallet_fen, order.cash_fen) == (1500, 500, 1000)
    assert order.address and order.address["name"] == "张三"
    no = orders_service.out_trade_no(order)
    assert (await fake_pay.deliver(client, fake_pay.pay(no))).status_code in (200, 204)
    assert (await service.reservation(member_id, rid)).status == "paid"

    shipped = await orders_service.ship(
        order.id, shipping_company="顺丰速运", tracking_no="SF1234567890", staff=None
    )
    assert (shipped.status, shipped.tracking_no) == ("shipped", "SF1234567890")
    done = await orders_service.refund(order.id, None, reason="damaged", staff=_Ops())
    assert (done.cash_fen, done.wallet_fen, done.restocked) == (1000, 500, False)
    assert fake_pay.refunds[done.out_refund_no].refund == 1000
    assert (await Order.get(id=order.id)).status == "refunded"
    assert (await service.reservation(member_id, rid)).status == "refunded"
    assert await points_service.get_balance(member_id) == 300  # the points came back
    assert (await wallet_service.get_balance(member_id)).total_fen == 500
    # the unit left with the goods: still sold, not back on sale, catalog untouched
    assert (await SeckillItem.get(id=item.id)).sold == 1 and await _redis_stock(item.id) == 1
    await sku.refresh_from_db()
    assert sku.stock == 5
    await _assert_reconciled(item.id)
    await assert_books_clean()
    await assert_ledger_clean()


@dataclass
class _Ops:
    id: int = 1
    username: str = "ops"


async def test_the_wallet_pays_a_win_in_full(make_item: MakeItem, fake_pay: FakePay) -> None:
    clock.set_now(NOT_MEMBER_DAY)
    item = await make_item(stock=1, cash_price_fen=990)
    (member_id,) = await make_member_ids(1, prefix="wal")
    await fund(member_id, 600, 600)
    member = await Member.get(id=member_id)
    rid = await _win(item.id, member_id)

    order = await payment.pay_win(member, rid, WinPayIn(use_wallet=True, delivery="pickup"))
    assert (order.status, order.wallet_fen, order.cash_fen) == ("paid", 990, 0)
    assert (order.wallet_principal_fen, order.wallet_bonus_fen) == (600, 390)
    assert fake_pay.calls["jsapi"] == 0  # nothing left for WeChat Pay
    assert (await service.reservation(member_id, rid)).status == "paid"
    assert (await service.reservation(member_id, rid)).order_id == order.id
    assert (await wallet_service.get_balance(member_id)).total_fen == 210
    clock.advance(timedelta(hours=1))
    assert await service.expire_unpaid() == 0
    assert (await service.reservation(member_id, rid)).status == "paid"
    # the member cancels before it ships: the wallet is refunded, the win too
    await orders_service.cancel(order.id, member_id=member_id, reason="changed my mind")
    assert (await wallet_service.get_balance(member_id)).total_fen == 1200
    assert (await service.reservation(member_id, rid)).status == "refunded"
    await _assert_reconciled(item.id)
    await assert_books_clean()
    await assert_ledger_clean()


async def test_unpaid_order_closes_once_and_the_unit_goes_back_once(
    make_item: MakeItem, fake_pay: FakePay, settings: Settings
) -> None:
    clock.set_now(NOT_MEMBER_DAY)
    item = await make_item(stock=1, points_price=50, cash_price_fen=990, limit=1)
    (alice, bob) = await make_member_ids(2, prefix="close")
    await points_service.earn(alice, 50, idempotency_key="t:close", reason="test")
    rid = await _win(item.id, alice)
    assert await _redis_stock(item.id) == 0
    order = await payment.pay_win(await Member.get(id=alice), rid, PICKUP)
    assert order.status == "pending_payment"

    clock.advance(timedelta(seconds=settings.seckill_payment_seconds + 1))
    # the order owns the deadline now: the seckill job leaves the claimed win alone
    assert await service.expire_unpaid() == 0
    assert (await service.reservation(alice, rid)).status == "pending_payment"
    assert await orders_service.close_overdue() == 1  # WeChat Pay says NOTPAY: closed
    assert await orders_service.close_overdue() == 0
    assert await service.expire_unpaid() == 0
    assert (await Order.get(id=order.id)).status == "closed"
    assert fake_pay.orders[orders_service.out_trade_no(order)].trade_state == "CLOSED"
    status = await service.reservation(alice, rid)
    assert (status.status, status.release_reason) == ("expired", "unpaid")
    assert await points_service.get_balance(alice) == 50  # points + cash: points back
    assert await _redis_stock(item.id) == 1 and (await SeckillItem.get(id=item.id)).sold == 0
    await _assert_reconciled(item.id)
    with pytest.raises(MallError) as raised:
        await payment.pay_win(await Member.get(id=alice), rid, PICKUP)
    assert raised.value.code == "SECKILL_ORDER_NOT_PAYABLE"
    # the unit is on sale again
    assert (await service.attempt(item.id, bob)).result == "won"
    await service.drain()
    await _assert_reconciled(item.id)
    await assert_books_clean()


async def test_a_win_nobody_took_to_payment_expires_by_the_seckill_job(
    make_item: MakeItem, fake_pay: FakePay, settings: Settings
) -> None:
    clock.set_now(NOT_MEMBER_DAY)
    item = await make_item(stock=1, cash_price_fen=990)
    (alice,) = await make_member_ids(1, prefix="idle")
    rid = await _win(item.id, alice)
    clock.advance(timedelta(seconds=settings.seckill_payment_seconds))
    with pytest.raises(MallError) as raised:
        await payment.pay_win(await Member.get(id=alice), rid, PICKUP)
    assert raised.value.code == "ORDER_PAYMENT_EXPIRED"
    assert await Order.all().count() == 0
    assert await service.expire_unpaid() == 1
    assert (await service.reservation(alice, rid)).status == "expired"
    assert await _redis_stock(item.id) == 1
    await _assert_reconciled(item.id)


async def test_a_payment_after_the_close_is_refunded_in_full_and_audited(
    make_item: MakeItem, fake_pay: FakePay, client: httpx.AsyncClient, settings: Settings
) -> None:
    clock.set_now(NOT_MEMBER_DAY)
    item = await make_item(stock=1, cash_price_fen=1990)
    (alice,) = await make_member_ids(1, prefix="late")
    rid = await _win(item.id, alice)
    order = await payment.pay_win(await Member.get(id=alice), rid, PICKUP)
    no = orders_service.out_trade_no(order)
    # the member pays at the last moment, but WeChat Pay cannot be asked at the close, and
    # the notification is late: past the forced close the order closes anyway
    resource = fake_pay.pay(no)
    fake_pay.fail("query", 500, "SYSTEM_ERROR", times=2)
    clock.advance(timedelta(seconds=settings.seckill_payment_seconds + 1))
    assert await orders_service.close_overdue() == 0  # cannot ask: it waits
    clock.advance(timedelta(seconds=settings.order_close_force_after_seconds))
    assert await orders_service.close_overdue() == 1
    assert (await service.reservation(alice, rid)).status == "expired"
    assert await _redis_stock(item.id) == 1

    for _ in range(2):  # delivered twice: refunded once
        delivered = await fake_pay.deliver(client, resource)
        assert delivered.status_code in (200, 204), delivered.text
    (refund,) = await OrderRefund.filter(order_id=order.id, kind="late_payment")
    assert refund.cash_fen == 1990 and refund.cash_status == "processing"
    sent = fake_pay.refunds[refund.out_refund_no]
    assert (sent.refund, sent.total, sent.out_trade_no) == (1990, 1990, no)
    row = await Order.get(id=order.id)
    assert row.status == "closed" and row.transaction_id == resource["transaction_id"]
    (audit,) = await AuditLog.filter(action="order.late_payment_refund")
    assert audit.target == f"order:{order.id}" and audit.detail["cash_fen"] == 1990
    # the win stays expired and its unit went back exactly once
    assert (await service.reservation(alice, rid)).status == "expired"
    assert await _redis_stock(item.id) == 1 and (await SeckillItem.get(id=item.id)).sold == 0
    assert await service.expire_unpaid() == 0
    await _assert_reconciled(item.id)
    await assert_books_clean()


async def test_pay_route(
    make_item: MakeItem,
    client: httpx.AsyncClient,
    member_headers: MemberLogin,
    fake_pay: FakePay,
) -> None:
    clock.set_now(NOT_MEMBER_DAY)
    item = await make_item(stock=2, cash_price_fen=990, limit=1)
    headers = await member_headers("winner")
    other = await member_headers("other")
    me = await Member.get(openid="dev_winner")
    rid = await _win(item.id, me.id)
    url = f"/api/v1/seckill/reservations/{rid}/pay"

    r = await client.post(url, json={"delivery": "express"}, headers=headers)
    assert r.status_code == 422 and r.json()["error"]["code"] == "ORDER_ADDRESS_REQUIRED"
    r = await client.post(url, json={"delivery": "pickup"}, headers=other)
    assert r.status_code == 404 and r.json()["error"]["code"] == "RESERVATION_NOT_FOUND"
    r = await client.post(url, json={"delivery": "pickup"}, headers=headers)
    assert r.status_code == 200, r.text
    order = r.json()
    assert order["source"] == "seckill" and order["source_ref"] == f"seckill:{rid}"
    assert order["payment"]["signType"] == "RSA" and order["cash_fen"] == 990
    again = await client.post(url, json={"delivery": "pickup"}, headers=headers)
    assert again.json()["id"] == order["id"]
    status = (await client.get(f"/api/v1/seckill/reservations/{rid}", headers=headers)).json()
    assert status["order_id"] == order["id"]
    # the order is the member's like any other
    r = await client.get(f"/api/v1/orders/{order['id']}", headers=headers)
    assert r.status_code == 200 and r.json()["lines"][0]["name"] == "gift box"

    # a points-only win has nothing to pay
    free = await make_item(stock=1, points_price=0, cash_price_fen=0)
    free_rid = await _win(free.id, me.id)
    r = await client.post(
        f"/api/v1/seckill/reservations/{free_rid}/pay",
        json={"delivery": "pickup"},
        headers={**headers, "Accept-Language": "en"},
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "SECKILL_ORDER_NOT_PAYABLE"
    assert "confirmed" in r.json()["error"]["message"]


async def test_the_two_close_jobs_never_expire_the_same_win(
    make_item: MakeItem, fake_pay: FakePay, settings: Settings
) -> None:
    clock.set_now(NOT_MEMBER_DAY)
    item = await make_item(stock=2, cash_price_fen=990)
    alice, bob = await make_member_ids(2, prefix="race")
    taken = await _win(item.id, alice)
    idle = await _win(item.id, bob)
    order = await payment.pay_win(await Member.get(id=alice), taken, PICKUP)
    clock.advance(timedelta(seconds=settings.seckill_payment_seconds + 1))

    expired = await asyncio.gather(service.expire_unpaid(), service.expire_unpaid())
    closed = await asyncio.gather(orders_service.close_overdue(), orders_service.close_overdue())
    assert sorted(expired) == [0, 1] and sorted(closed) == [0, 1]
    assert (await Order.get(id=order.id)).status == "closed"
    assert (await service.reservation(alice, taken)).status == "expired"
    assert (await service.reservation(bob, idle)).status == "expired"
    assert await _redis_stock(item.id) == 2 and (await SeckillItem.get(id=item.id)).sold == 0
    assert await service.expire_unpaid() == 0 and await orders_service.close_overdue() == 0
    await _assert_reconciled(item.id)
    await assert_books_clean()
