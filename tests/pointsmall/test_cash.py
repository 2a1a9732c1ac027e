"""Points + cash: the points are held when the consumer writes the redemption
(`pending_payment`), the cash part is paid as a mall order (WeChat Pay through the fake
server in tests/wallet, or the wallet), and an unpaid one gives the points and the units
back exactly once, whichever job owns its deadline."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest

from mall.config import Settings
from mall.errors import MallError
from mall.kit import clock
from mall.kit.checks import CheckReport
from mall.members.models import Member
from mall.orders import service as orders_service
from mall.orders.models import Order, OrderRefund
from mall.points import service as points_service
from mall.points.models import PointsHold
from mall.points.tasks import CHECKS as POINTS_CHECKS
from mall.pointsmall import cash, payment
from mall.pointsmall import service as pm_service
from mall.pointsmall.models import PointsMallRedemption
from mall.pointsmall.schemas import RedemptionPayIn
from mall.pointsmall.tasks import CHECKS
from mall.wallet import service as wallet_service
from tests.factories import make_template
from tests.orders.helpers import NOT_MEMBER_DAY, assert_books_clean
from tests.pointsmall.conftest import (
    MakeItem,
    NewMember,
    add_address,
    db_stock,
    drain,
    key,
    redeem,
    redis_stock,
)
from tests.wallet.fake_pay import FakePay, fake_pay, fake_pay_server
from tests.wallet.helpers import assert_ledger_clean, fund

__all__ = ["fake_pay", "fake_pay_server"]

WECHAT = RedemptionPayIn(use_wallet=False)


@pytest.fixture(autouse=True)
def _frozen() -> None:
    clock.set_now(NOT_MEMBER_DAY)


async def _checks_pass() -> None:
    report: CheckReport = await CHECKS["pointsmall"]()
    assert report.ok, report.lines
    ledger: CheckReport = await POINTS_CHECKS["ledger"]()
    assert ledger.ok, ledger.lines


async def _pending(
    client: httpx.AsyncClient, item_id: int, headers: dict[str, str], **body: Any
) -> str:
    """Redeem, let the consumer write it; the reservation id of the pending_payment row."""
    r = await client.post(
        f"/api/v1/points-mall/items/{item_id}/redeem", json=body, headers={**headers, **key()}
    )
    assert r.status_code == 202, r.text
    rid: str = r.json()["reservation_id"]
    await drain()
    return rid


async def _row(rid: str) -> PointsMallRedemption:
    return await PointsMallRedemption.get(reservation_id=rid)


async def test_pay_by_wechat_pay_issues_the_redemption_and_spends_the_points_once(
    client: httpx.AsyncClient, make_item: MakeItem, new_member: NewMember, fake_pay: FakePay
) -> None:
    item = await make_item(points_price=500, cash_price_fen=990, total_stock=3, name="Card")
    assert item["cash_price_fen"] == 990
    member_id, headers = await new_member(points=1200)
    shown = await client.get(f"/api/v1/points-mall/items/{item['id']}", headers=headers)
    assert shown.json()["cash_price_fen"] == 990 and shown.json()["points_price"] == 500

    answer = await client.post(
        f"/api/v1/points-mall/items/{item['id']}/redeem", json={}, headers={**headers, **key()}
    )
    assert answer.status_code == 202 and answer.json()["cash_fen"] == 990
    rid = answer.json()["reservation_id"]
    await drain()
    status = (await client.get(f"/api/v1/points-mall/reservations/{rid}", headers=headers)).json()
    assert status["status"] == "pending_payment" and status["cash_fen"] == 990
    row = await _row(rid)
    assert row.pay_deadline == clock.now() + timedelta(minutes=15)
    assert row.voucher_code is None and row.hold_id is not None
    # the points are held (out of the balance), not spent; the unit is taken
    assert await points_service.get_balance(member_id) == 700
    assert (await PointsHold.get(id=row.hold_id)).status == "held"
    assert await redis_stock(item["id"]) == 2 and await db_stock(item["id"]) == 2
    await _checks_pass()

    r = await client.post(f"/api/v1/points-mall/reservations/{rid}/pay", json={}, headers=headers)
    assert r.status_code == 200, r.text
    order = r.json()
    assert order["source"] == "pointsmall" and order["source_ref"] == f"pointsmall:{rid}"
    assert order["cash_fen"] == 990 and order["payment"]["signType"] == "RSA"
    again = await client.post(
        f"/api/v1/points-mall/reservations/{rid}/pay", json={}, headers=headers
    )
    assert again.json()["id"] == order["id"]  # a second tap is the same order
    row_order = await Order.get(id=order["id"])
    no = orders_service.out_trade_no(row_order)
    sent = fake_pay.orders[no]
    assert sent.amount == 990
    deadline = row.pay_deadline
    assert deadline is not None
    assert sent.time_expire == deadline.astimezone(clock.SHANGHAI).isoformat("T", "seconds")
    assert (await _row(rid)).order_id == order["id"]

    for _ in range(2):  # delivered twice: completed once
        delivered = await fake_pay.deliver(client, fake_pay.pay(no))
        assert delivered.status_code in (200, 204), delivered.text
    row = await _row(rid)
    assert row.status == "issued" and row.voucher_code and row.points_spent == 500
    assert (await PointsHold.get(id=row.hold_id)).status == "captured"
    assert await points_service.get_balance(member_id) == 700  # spent once
    assert (await Order.get(id=order["id"])).status == "paid"
    # the deadline passes: nothing is released or closed
    clock.advance(timedelta(hours=3))
    assert await pm_service.expire_unpaid() == 0
    assert await orders_service.close_overdue() == 0
    assert await points_service.release_expired_holds() == 0
    assert (await _row(rid)).status == "issued"
    assert await points_service.get_balance(member_id) == 700
    assert await redis_stock(item["id"]) == 2 and await db_stock(item["id"]) == 2
    await _checks_pass()
    await assert_books_clean()


async def test_the_wallet_pays_a_gift_in_full_and_a_refund_gives_the_points_back(
    client: httpx.AsyncClient, make_item: MakeItem, new_member: NewMember, fake_pay: FakePay
) -> None:
    item = await make_item(kind="gift", points_price=300, cash_price_fen=1500, total_stock=2)
    member_id, headers = await new_member(points=300)
    await fund(member_id, 1000, 600)
    address = await add_address(client, headers)
    rid = await _pending(client, item["id"], headers, address_id=address)
    assert await points_service.get_balance(member_id) == 0

    r = await client.post(
        f"/api/v1/points-mall/reservations/{rid}/pay", json={"use_wallet": True}, headers=headers
    )
    assert r.status_code == 200, r.text
    order = r.json()
    assert (order["status"], order["wallet_fen"], order["cash_fen"]) == ("paid", 1500, 0)
    assert fake_pay.calls["jsapi"] == 0  # nothing left for WeChat Pay
    row = await _row(rid)
    assert row.status == "awaiting_shipment" and row.address and row.address["name"] == "张三"
    assert (await PointsHold.get(id=row.hold_id)).status == "captured"
    assert (await wallet_service.get_balance(member_id)).total_fen == 100

    # the redemption is cancelled through its order (which refunds the cash too)
    r = await client.post(
        f"/api/v1/points-mall/redemptions/{row.id}/cancel",
        json={},
        headers={**headers, "Accept-Language": "en"},
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "REDEMPTION_CANCEL_BY_ORDER"
    assert f"order {order['id']}" in r.json()["error"]["message"]
    assert (await _row(rid)).status == "awaiting_shipment"
    # the member cancels the paid order: wallet and points come back; the unit stays out
    await orders_service.cancel(order["id"], member_id=member_id, reason="changed my mind")
    row = await _row(rid)
    assert row.status == "refunded"
    assert await points_service.get_balance(member_id) == 300
    assert (await wallet_service.get_balance(member_id)).total_fen == 1600
    assert await redis_stock(item["id"]) == 1 and await db_stock(item["id"]) == 1
    await _checks_pass()
    await assert_books_clean()
    await assert_ledger_clean()


async def test_never_taken_to_payment_released_by_the_pointsmall_job(
    client: httpx.AsyncClient,
    make_item: MakeItem,
    new_member: NewMember,
    fake_pay: FakePay,
    settings: Settings,
) -> None:
    item = await make_item(points_price=500, cash_price_fen=990, total_stock=1, limit_per_member=1)
    member_id, headers = await new_member(points=800)
    rid = await _pending(client, item["id"], headers)
    assert await redis_stock(item["id"]) == 0 and await points_service.get_balance(member_id) == 300

    clock.advance(timedelta(seconds=settings.pointsmall_payment_seconds))
    member = await Member.get(id=member_id)
    with pytest.raises(MallError) as raised:
        await payment.pay(member, rid, WECHAT)
    assert raised.value.code == "ORDER_PAYMENT_EXPIRED"
    assert await Order.all().count() == 0
    assert await pm_service.expire_unpaid() == 1
    assert await pm_service.expire_unpaid() == 0
    row = await _row(rid)
    assert (row.status, row.release_reason, row.stock_returned) == ("released", "unpaid", True)
    assert (await PointsHold.get(id=row.hold_id)).status == "voided"
    assert await points_service.get_balance(member_id) == 800  # points back
    assert await redis_stock(item["id"]) == 1 and await db_stock(item["id"]) == 1  # once
    await _checks_pass()
    with pytest.raises(MallError) as raised:
        await payment.pay(member, rid, WECHAT)
    assert raised.value.code == "REDEMPTION_NOT_PAYABLE"
    # the limit counter came back with the unit: the member may redeem it again
    again = await pm_service.redeem(member_id, item["id"], 1, None, None)
    await drain()
    assert (await _row(again.reservation_id)).status == "pending_payment"
    await _checks_pass()


async def test_an_unpaid_order_closes_once_and_the_unit_goes_back_once(
    client: httpx.AsyncClient,
    make_item: MakeItem,
    new_member: NewMember,
    fake_pay: FakePay,
    settings: Settings,
) -> None:
    item = await make_item(points_price=500, cash_price_fen=990, total_stock=1)
    member_id, headers = await new_member(points=500)
    rid = await _pending(client, item["id"], headers)
    order = await payment.pay(await Member.get(id=member_id), rid, WECHAT)
    assert order.status == "pending_payment"

    clock.advance(timedelta(seconds=settings.pointsmall_payment_seconds + 1))
    # the order owns the deadline now: the pointsmall job leaves it alone
    assert await pm_service.expire_unpaid() == 0
    assert (await _row(rid)).status == "pending_payment"
    assert await orders_service.close_overdue() == 1  # WeChat Pay says NOTPAY: closed
    assert await orders_service.close_overdue() == 0
    assert await pm_service.expire_unpaid() == 0
    assert (await Order.get(id=order.id)).status == "closed"
    row = await _row(rid)
    assert (row.status, row.release_reason, row.stock_returned) == ("released", "unpaid", True)
    assert await points_service.get_balance(member_id) == 500
    assert await redis_stock(item["id"]) == 1 and await db_stock(item["id"]) == 1
    await _checks_pass()
    await assert_books_clean()


async def test_a_payment_after_the_release_is_refunded_in_full(
    client: httpx.AsyncClient,
    make_item: MakeItem,
    new_member: NewMember,
    fake_pay: FakePay,
    settings: Settings,
) -> None:
    item = await make_item(points_price=200, cash_price_fen=1990, total_stock=1)
    member_id, headers = await new_member(points=200)
    rid = await _pending(client, item["id"], headers)
    order = await payment.pay(await Member.get(id=member_id), rid, WECHAT)
    no = orders_service.out_trade_no(order)
    resource = fake_pay.pay(no)  # paid at the last moment; WeChat Pay cannot be asked
    fake_pay.fail("query", 500, "SYSTEM_ERROR", times=2)
    clock.advance(timedelta(seconds=settings.pointsmall_payment_seconds + 1))
    assert await orders_service.close_overdue() == 0  # cannot ask: it waits
    clock.advance(timedelta(seconds=settings.order_close_force_after_seconds))
    assert await orders_service.close_overdue() == 1
    assert (await _row(rid)).status == "released"

    for _ in range(2):  # the late notification, delivered twice: refunded once
        delivered = await fake_pay.deliver(client, resource)
        assert delivered.status_code in (200, 204), delivered.text
    (refund,) = await OrderRefund.filter(order_id=order.id, kind="late_payment")
    assert refund.cash_fen == 1990
    assert fake_pay.refunds[refund.out_refund_no].refund == 1990
    row = await _row(rid)
    assert (row.status, row.release_reason) == ("released", "unpaid")
    assert await points_service.get_balance(member_id) == 200  # nothing spent
    assert await redis_stock(item["id"]) == 1 and await db_stock(item["id"]) == 1
    assert await pm_service.expire_unpaid() == 0
    await _checks_pass()
    await assert_books_clean()


async def test_a_member_short_of_points_is_released_and_nothing_is_held(
    client: httpx.AsyncClient, make_item: MakeItem, new_member: NewMember
) -> None:
    item = await make_item(points_price=500, cash_price_fen=990, total_stock=2)
    member_id, headers = await new_member(points=499)
    rid = await _pending(client, item["id"], headers)
    row = await _row(rid)
    assert (row.status, row.release_reason) == ("released", "not_enough_points")
    assert await points_service.get_balance(member_id) == 499
    assert await PointsHold.filter(member_id=member_id).count() == 0
    assert await redis_stock(item["id"]) == 2 and await db_stock(item["id"]) == 2
    await _checks_pass()


async def test_pay_route_errors(
    client: httpx.AsyncClient, make_item: MakeItem, new_member: NewMember, fake_pay: FakePay
) -> None:
    cash_item = await make_item(points_price=100, cash_price_fen=990, total_stock=5)
    plain = await make_item(points_price=100, total_stock=5)
    member_id, headers = await new_member(points=1000)
    _other, stranger = await new_member(points=0)
    en = {**headers, "Accept-Language": "en"}

    # decided, not written yet
    r = await client.post(
        f"/api/v1/points-mall/items/{cash_item['id']}/redeem", json={}, headers={**headers, **key()}
    )
    rid = r.json()["reservation_id"]
    url = f"/api/v1/points-mall/reservations/{rid}/pay"
    r = await client.post(url, json={}, headers=en)
    assert r.status_code == 409 and r.json()["error"]["code"] == "REDEMPTION_NOT_READY"
    assert "still being recorded" in r.json()["error"]["message"]
    r = await client.post(url, json={}, headers=headers)
    assert r.json()["error"]["message"] == "兑换结果正在确认中，请稍后再试"
    r = await client.post(url, json={}, headers=stranger)
    assert r.status_code == 404 and r.json()["error"]["code"] == "REDEMPTION_NOT_FOUND"
    await drain()
    r = await client.post(url, json={}, headers=stranger)  # another member's
    assert r.status_code == 404 and r.json()["error"]["code"] == "REDEMPTION_NOT_FOUND"
    r = await client.post(url, json={"delivery": "express"}, headers=headers)
    assert r.status_code == 422
    r = await client.post(
        "/api/v1/points-mall/reservations/1-nothere/pay", json={}, headers=headers
    )
    assert r.status_code == 404 and r.json()["error"]["code"] == "REDEMPTION_NOT_FOUND"

    # a points-only item is unchanged: issued at once, nothing to pay
    done = await redeem(client, plain["id"], headers)
    assert done.json()["status"] == "issued" and done.json()["cash_fen"] == 0
    assert done.json()["voucher_code"]
    plain_rid = (await PointsMallRedemption.get(id=done.json()["id"])).reservation_id
    r = await client.post(f"/api/v1/points-mall/reservations/{plain_rid}/pay", json={}, headers=en)
    assert r.status_code == 409 and r.json()["error"]["code"] == "REDEMPTION_NOT_PAYABLE"
    assert r.json()["error"]["message"] == "This redemption is issued and cannot be paid"
    r = await client.post(
        f"/api/v1/points-mall/reservations/{plain_rid}/pay", json={}, headers=headers
    )
    assert r.json()["error"]["message"] == "该兑换当前状态为 issued，无法支付"
    assert await points_service.get_balance(member_id) == 800  # 100 spent, 100 held
    assert await Order.all().count() == 0
    await _checks_pass()


async def test_ops_set_the_cash_price_but_not_on_a_coupon_voucher(
    client: httpx.AsyncClient, make_item: MakeItem, ops: dict[str, str]
) -> None:
    item = await make_item(points_price=100)
    assert item["cash_price_fen"] == 0
    url = f"/api/admin/v1/points-mall/items/{item['id']}"
    r = await client.patch(url, json={"cash_price_fen": 500}, headers=ops)
    assert r.status_code == 200 and r.json()["cash_price_fen"] == 500
    r = await client.patch(url, json={"cash_price_fen": -1}, headers=ops)
    assert r.status_code == 422
    template = await make_template()
    r = await client.patch(url, json={"coupon_template_id": template.id}, headers=ops)
    assert r.status_code == 422 and r.json()["error"]["code"] == "ITEM_CASH_WITH_COUPON"
    r = await client.post(
        "/api/admin/v1/points-mall/items",
        json={
            "name": "Coupon",
            "kind": "voucher",
            "points_price": 100,
            "cash_price_fen": 100,
            "coupon_template_id": template.id,
            "total_stock": 1,
        },
        headers={**ops, "Accept-Language": "en"},
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "ITEM_CASH_WITH_COUPON"
    assert "cannot have a cash price" in r.json()["error"]["message"]


async def test_the_two_deadline_owners_never_release_the_same_redemption(
    client: httpx.AsyncClient,
    make_item: MakeItem,
    new_member: NewMember,
    fake_pay: FakePay,
    settings: Settings,
) -> None:
    item = await make_item(points_price=100, cash_price_fen=990, total_stock=2)
    alice, alice_headers = await new_member(points=100)
    bob, bob_headers = await new_member(points=100)
    taken = await _pending(client, item["id"], alice_headers)
    idle = await _pending(client, item["id"], bob_headers)
    order = await payment.pay(await Member.get(id=alice), taken, WECHAT)
    clock.advance(timedelta(seconds=settings.pointsmall_payment_seconds + 1))

    expired = await asyncio.gather(pm_service.expire_unpaid(), pm_service.expire_unpaid())
    closed = await asyncio.gather(orders_service.close_overdue(), orders_service.close_overdue())
    assert sorted(expired) == [0, 1] and sorted(closed) == [0, 1]
    assert (await Order.get(id=order.id)).status == "closed"
    for rid in (taken, idle):
        assert ((await _row(rid)).status, (await _row(rid)).release_reason) == (
            "released",
            "unpaid",
        )
    assert await points_service.get_balance(alice) == 100
    assert await points_service.get_balance(bob) == 100
    assert await redis_stock(item["id"]) == 2 and await db_stock(item["id"]) == 2
    await _checks_pass()
    await assert_books_clean()


async def test_a_give_back_a_crash_left_undone_is_finished_by_the_job_once(
    client: httpx.AsyncClient,
    make_item: MakeItem,
    new_member: NewMember,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    item = await make_item(points_price=100, cash_price_fen=990, total_stock=1)
    member_id, headers = await new_member(points=100)
    rid = await _pending(client, item["id"], headers)
    clock.advance(timedelta(seconds=settings.pointsmall_payment_seconds))

    async def crash(reservation_id: str) -> None:
        raise ConnectionError("redis went away")

    monkeypatch.setattr(cash, "give_back_if_due", crash)
    with pytest.raises(ConnectionError):
        await pm_service.expire_unpaid()
    monkeypatch.undo()
    row = await _row(rid)  # released in the database, the Redis unit not back yet
    assert (row.status, row.stock_returned) == ("released", False)
    assert await redis_stock(item["id"]) == 0 and await db_stock(item["id"]) == 1
    assert await points_service.get_balance(member_id) == 100
    assert await pm_service.expire_unpaid() == 0  # nothing newly released...
    assert (await _row(rid)).stock_returned  # ...but the unit went back
    assert await pm_service.expire_unpaid() == 0
    assert await redis_stock(item["id"]) == 1  # once
    await _checks_pass()


async def test_two_consumers_holding_the_same_members_in_opposite_orders_never_deadlock(
    make_item: MakeItem, new_member: NewMember, caplog: pytest.LogCaptureFixture
) -> None:
    """Two batches written at once (the worker's two consumer tasks), each holding the
    points of the same two members, in opposite stream orders, and each taking the
    item's stock guard: a batch locks its members in id order before anything else, so
    the second waits for the first instead of deadlocking (on PostgreSQL the deadlock
    would fail a batch and send it down in halves)."""
    from mall.pointsmall import persist

    item = await make_item(points_price=100, cash_price_fen=990, total_stock=40)
    (a, _ha), (b, _hb) = [await new_member(points=10_000) for _ in range(2)]
    for _round in range(3):
        order = [a, b, b, a]  # batch one holds a then b, batch two b then a
        for n, m in enumerate(order):
            await pm_service.redeem(m, item["id"], 1, None, f"k{_round}-{n}")
        first = await persist.read_entries(item["id"], "one", count=2, claim_idle_ms=60_000)
        second = await persist.read_entries(item["id"], "two", count=2, claim_idle_ms=60_000)
        batches = [
            [e for i, f in raw if (e := persist._entry(i, f)) is not None]
            for raw in (first, second)
        ]
        assert [[e.member_id for e in batch] for batch in batches] == [[a, b], [b, a]]
        with caplog.at_level("WARNING", logger="mall.pointsmall"):
            written = await asyncio.gather(
                *(persist.persist_batch(item["id"], batch) for batch in batches)
            )
        assert not [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]
        assert [len(w) for w in written] == [2, 2]
        assert {w.status for part in written for w in part.values() if w} == {"pending_payment"}
        await persist.drain(claim_idle_ms=0)  # settle them in Redis
    assert await PointsHold.filter(member_id=a).count() == 6
    assert await PointsHold.filter(member_id=b).count() == 6
