"""Cancel, close at the deadline, refund (full and by line), ship and complete: each gives
back exactly what it should, and the points ledger check passes after every scenario."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from mall.audit.models import AuditLog
from mall.kit import clock
from mall.members.models import Member
from mall.orders import service as orders_service
from mall.orders.models import Order, OrderRefund
from tests.conftest import MemberLogin, StaffLogin
from tests.orders.helpers import (
    NOT_MEMBER_DAY,
    Shop,
    assert_books_clean,
    balance,
    coupon_status,
    give_coupon,
    make_address,
    make_member,
    make_shop,
    paid_result,
    stock,
)


async def _place(
    client: httpx.AsyncClient, headers: dict[str, str], shop: Shop, member: Member, **extra: object
) -> dict[str, object]:
    body: dict[str, object] = {
        "items": [{"sku_id": shop.soap.id, "quantity": 2},
                  {"sku_id": shop.towel.id, "quantity": 1}],
        "points": 3000, "delivery": "express", "address_id": await make_address(member),
    }  # fmt: skip
    body.update(extra)
    r = await client.post("/api/v1/orders", json=body, headers=headers)
    assert r.status_code == 201, r.text
    result: dict[str, object] = r.json()
    return result


async def _pay(order_id: object) -> Order:
    order = await Order.get(id=order_id)
    await orders_service.on_order_paid(paid_result(order))
    return await Order.get(id=order_id)


async def test_cancel_unpaid_gives_everything_back(
    client: httpx.AsyncClient, member_headers: MemberLogin
) -> None:
    clock.set_now(NOT_MEMBER_DAY)
    shop = await make_shop()
    headers = await member_headers("canceller")
    member = await make_member(10_000, name="canceller")
    coupon = await give_coupon(member)
    order = await _place(client, headers, shop, member, coupon_id=coupon.id)
    assert await balance(member) == 7000 and await coupon_status(coupon) == "locked"
    r = await client.post(
        f"/api/v1/orders/{order['id']}/cancel", json={"reason": "买错了"}, headers=headers
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled"
    assert [x["kind"] for x in r.json()["refunds"]] == ["cancel"]
    assert (await stock(shop.soap), await stock(shop.towel)) == (10, 5)
    assert await coupon_status(coupon) == "usable"
    assert await balance(member) == 10_000
    await assert_books_clean()
    again = await client.post(f"/api/v1/orders/{order['id']}/cancel", headers=headers)
    assert again.status_code == 409 and again.json()["error"]["code"] == "ORDER_NOT_CANCELLABLE"
    # a cancelled order cannot be paid any more
    assert (
        await client.post(f"/api/v1/orders/{order['id']}/pay", headers=headers)
    ).status_code == 409


@pytest.mark.clock
async def test_unpaid_at_the_deadline_closes_and_releases(
    client: httpx.AsyncClient, member_headers: MemberLogin
) -> None:
    clock.set_now(NOT_MEMBER_DAY)
    shop = await make_shop()
    headers = await member_headers("slow")
    member = await make_member(10_000, name="slow")
    keeps = await give_coupon(member)
    # this one's validity ends while the order waits: it must come back expired
    ending = await give_coupon(
        member, name="限时券", kind="cash", threshold_fen=0, validity="fixed",
        valid_from=clock.now() - timedelta(days=1), valid_until=clock.now() + timedelta(minutes=10),
    )  # fmt: skip
    first = await _place(client, headers, shop, member, coupon_id=keeps.id)
    second = await _place(
        client, headers, shop, member, coupon_id=ending.id, points=1000,
        items=[{"sku_id": shop.soap.id, "quantity": 1}],
    )  # fmt: skip
    assert await stock(shop.soap) == 7 and await balance(member) == 6000
    clock.advance(timedelta(minutes=14))
    assert await orders_service.close_overdue() == 0
    clock.advance(timedelta(minutes=2))
    assert await orders_service.close_overdue() == 2
    assert {o.status for o in await Order.all()} == {"closed"}
    assert (await stock(shop.soap), await stock(shop.towel)) == (10, 5)
    assert await coupon_status(keeps) == "usable"
    assert await coupon_status(ending) == "expired"
    assert await balance(member) == 10_000
    await assert_books_clean()
    assert await orders_service.close_overdue() == 0

    # the money arrives after all: it is refunded in full, nothing is taken again
    late = await Order.get(id=first["id"])
    await orders_service.on_order_paid(paid_result(late))
    await orders_service.on_order_paid(paid_result(late))
    refunds = await OrderRefund.filter(order_id=late.id, kind="late_payment")
    assert len(refunds) == 1 and refunds[0].cash_fen == late.cash_fen
    assert refunds[0].cash_status == "pending"  # WeChat Pay is not configured here
    assert (await Order.get(id=late.id)).status == "closed"
    assert await stock(shop.soap) == 10 and await balance(member) == 10_000
    assert second["status"] == "pending_payment"
    await assert_books_clean()


async def test_cancel_paid_refunds_in_full(
    client: httpx.AsyncClient, member_headers: MemberLogin
) -> None:
    clock.set_now(NOT_MEMBER_DAY)
    shop = await make_shop()
    headers = await member_headers("regret")
    member = await make_member(10_000, name="regret")
    coupon = await give_coupon(member)
    order = await _place(client, headers, shop, member, coupon_id=coupon.id)
    paid = await _pay(order["id"])
    assert paid.status == "paid" and await coupon_status(coupon) == "used"
    r = await client.post(
        f"/api/v1/orders/{order['id']}/cancel", headers={**headers, "Idempotency-Key": "c1"}
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["status"] == "cancelled" and out["refunded_fen"] == 8990
    (refund,) = out["refunds"]
    assert (refund["kind"], refund["cash_fen"], refund["points"]) == ("cancel", 8990, 3000)
    assert refund["cash_status"] == "pending" and refund["coupon_status"] == "usable"
    assert (await stock(shop.soap), await stock(shop.towel)) == (10, 5)
    assert await coupon_status(coupon) == "usable"
    assert await balance(member) == 10_000
    await assert_books_clean()


async def test_refund_by_line_after_completion_reverses_earned_points_pro_rata(
    client: httpx.AsyncClient, member_headers: MemberLogin, staff_headers: StaffLogin
) -> None:
    clock.set_now(NOT_MEMBER_DAY)
    shop = await make_shop()
    headers = await member_headers("loyal")
    member = await make_member(10_000, name="loyal")
    coupon = await give_coupon(member)
    staff = await staff_headers("ops")
    order = await _place(client, headers, shop, member, coupon_id=coupon.id)
    lines = {ln["sku_id"]: ln for ln in order["lines"]}  # type: ignore[attr-defined]
    soap, towel = lines[shop.soap.id], lines[shop.towel.id]
    # coupon 1000 over 10000 : 2990 -> 770 : 230; points 3000 over 9230 : 2760 -> 2309 : 691
    assert (soap["coupon_fen"], soap["points_used"], soap["due_fen"]) == (770, 2309, 6921)
    assert (towel["coupon_fen"], towel["points_used"], towel["due_fen"]) == (230, 691, 2069)
    await _pay(order["id"])

    # a shopper refunds only before shipping
    no_tracking = await client.post(
        f"/api/admin/v1/orders/{order['id']}/ship", json={}, headers=staff
    )
    assert no_tracking.json()["error"]["code"] == "ORDER_TRACKING_REQUIRED"
    shipped = await client.post(
        f"/api/admin/v1/orders/{order['id']}/ship",
        json={"shipping_company": "顺丰速运", "tracking_no": "SF100"},
        headers=staff,
    )
    assert shipped.status_code == 200 and shipped.json()["status"] == "shipped"
    too_late = await client.post(
        f"/api/v1/orders/{order['id']}/refund", json={"lines": None}, headers=headers
    )
    assert (
        too_late.status_code == 409 and too_late.json()["error"]["code"] == "ORDER_NOT_REFUNDABLE"
    )
    done = await client.post(f"/api/v1/orders/{order['id']}/complete", headers=headers)
    assert done.status_code == 200 and done.json()["status"] == "completed"
    assert done.json()["earned_points"] == 8  # 8990 fen paid, 10 yuan = 1 point
    await member.refresh_from_db()
    assert (member.points_balance, member.growth_value) == (7008, 8)
    await assert_books_clean()

    # ops refund one of the two soaps (the goods came back)
    r = await client.post(
        f"/api/admin/v1/orders/{order['id']}/refund",
        json={"lines": [{"line_id": soap["id"], "quantity": 1}], "reason": "破损"},
        headers={**staff, "Idempotency-Key": "r1"},
    )
    assert r.status_code == 200, r.text
    first = r.json()["refunds"][-1]
    # half the soap line: due 6921 // 2 = 3460, points 2309 // 2 = 1154; earned 8 x 3460 // 8990
    assert (first["money_fen"], first["cash_fen"], first["points"]) == (3460, 3460, 1154)
    assert first["earned_points_reversed"] == 3 and first["coupon_status"] == ""
    assert r.json()["status"] == "completed"
    assert await coupon_status(coupon) == "used"
    assert await stock(shop.soap) == 9
    await member.refresh_from_db()
    assert (member.points_balance, member.growth_value) == (7008 + 1154 - 3, 5)
    await assert_books_clean()
    replay = await client.post(
        f"/api/admin/v1/orders/{order['id']}/refund",
        json={"lines": [{"line_id": soap["id"], "quantity": 1}], "reason": "破损"},
        headers={**staff, "Idempotency-Key": "r1"},
    )
    assert len(replay.json()["refunds"]) == 1
    over = await client.post(
        f"/api/admin/v1/orders/{order['id']}/refund",
        json={"lines": [{"line_id": soap["id"], "quantity": 2}]},
        headers=staff,
    )
    assert over.status_code == 409 and over.json()["error"]["code"] == "ORDER_REFUND_TOO_MANY"

    # then everything left: the rest adds up exactly, the coupon comes back
    rest = await client.post(
        f"/api/admin/v1/orders/{order['id']}/refund", json={"reason": "退货"}, headers=staff
    )
    assert rest.status_code == 200, rest.text
    out = rest.json()
    second = out["refunds"][-1]
    assert (second["money_fen"], second["points"]) == (3461 + 2069, 1155 + 691)
    assert second["earned_points_reversed"] == 5 and second["coupon_status"] == "usable"
    assert out["status"] == "refunded" and out["refunded_fen"] == out["amount_due_fen"] == 8990
    assert out["refunded_points"] == 3000 and out["earned_points_reversed"] == 8
    assert (await stock(shop.soap), await stock(shop.towel)) == (10, 5)
    assert await coupon_status(coupon) == "usable"
    await member.refresh_from_db()
    assert (member.points_balance, member.growth_value) == (10_000, 0)
    actions = await AuditLog.filter(target=f"order:{order['id']}").values_list("action", flat=True)
    assert sorted(actions) == ["order.refund", "order.refund", "order.ship"]
    nothing = await client.post(
        f"/api/admin/v1/orders/{order['id']}/refund", json={}, headers=staff
    )
    assert nothing.status_code == 409
    await assert_books_clean()


async def test_shopper_refunds_a_line_before_shipping(
    client: httpx.AsyncClient, member_headers: MemberLogin
) -> None:
    clock.set_now(NOT_MEMBER_DAY)
    shop = await make_shop()
    headers = await member_headers("partial")
    member = await make_member(10_000, name="partial")
    coupon = await give_coupon(member)
    order = await _place(client, headers, shop, member, coupon_id=coupon.id)
    await _pay(order["id"])
    towel = next(ln for ln in order["lines"] if ln["sku_id"] == shop.towel.id)  # type: ignore[attr-defined]
    r = await client.post(
        f"/api/v1/orders/{order['id']}/refund",
        json={"lines": [{"line_id": towel["id"], "quantity": 1}]},
        headers={**headers, "Idempotency-Key": "p1"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "paid" and r.json()["refunded_fen"] == 2069
    assert await stock(shop.towel) == 5 and await stock(shop.soap) == 8
    assert await balance(member) == 7000 + 691
    assert await coupon_status(coupon) == "used"
    unknown = await client.post(
        f"/api/v1/orders/{order['id']}/refund",
        json={"lines": [{"line_id": 999_999, "quantity": 1}]},
        headers=headers,
    )
    assert unknown.status_code == 422
    # cancelling now refunds what is left
    r = await client.post(f"/api/v1/orders/{order['id']}/cancel", headers=headers)
    assert r.json()["status"] == "cancelled" and r.json()["refunded_fen"] == 8990
    assert await balance(member) == 10_000 and await coupon_status(coupon) == "usable"
    assert (await stock(shop.soap), await stock(shop.towel)) == (10, 5)
    await assert_books_clean()


async def test_lists_newest_first_and_admin_search(
    client: httpx.AsyncClient, member_headers: MemberLogin, staff_headers: StaffLogin
) -> None:
    shop = await make_shop()
    headers = await member_headers("lister")
    member = await make_member(name="lister")
    ids = []
    for _ in range(3):
        r = await client.post(
            "/api/v1/orders",
            json={"items": [{"sku_id": shop.towel.id, "quantity": 1}], "delivery": "pickup"},
            headers=headers,
        )
        ids.append(r.json()["id"])
    page = await client.get("/api/v1/orders", params={"size": 2}, headers=headers)
    assert [o["id"] for o in page.json()["items"]] == [ids[2], ids[1]]
    assert page.json()["items"][0]["first_item_name"] == "毛巾"
    rest = await client.get(
        "/api/v1/orders", params={"size": 2, "cursor": page.json()["next_cursor"]}, headers=headers
    )
    assert [o["id"] for o in rest.json()["items"]] == [ids[0]] and rest.json()[
        "next_cursor"
    ] is None
    await client.post(f"/api/v1/orders/{ids[1]}/cancel", headers=headers)
    staff = await staff_headers("ops")
    by_ops = await client.post(
        f"/api/admin/v1/orders/{ids[2]}/cancel", json={"reason": "缺货"}, headers=staff
    )
    assert by_ops.status_code == 200 and by_ops.json()["status"] == "cancelled"
    assert await AuditLog.filter(action="order.cancel", target=f"order:{ids[2]}").exists()
    assert await stock(shop.towel) == 4
    found = await client.get(
        "/api/admin/v1/orders",
        params={"status": "cancelled", "member_id": member.id},
        headers=staff,
    )
    assert [o["id"] for o in found.json()["items"]] == [ids[2], ids[1]]
    number = (await Order.get(id=ids[0])).number
    by_number = await client.get(
        "/api/admin/v1/orders", params={"number": "O" + number}, headers=staff
    )
    assert [o["id"] for o in by_number.json()["items"]] == [ids[0]]
    detail = await client.get(f"/api/admin/v1/orders/{ids[0]}", headers=staff)
    assert detail.json()["member_id"] == member.id
    assert (await client.get("/api/admin/v1/orders", headers=headers)).status_code == 401
    # pickup orders complete in store (ops), which earns points
    await _pay(ids[0])
    done = await client.post(f"/api/admin/v1/orders/{ids[0]}/complete", headers=staff)
    assert done.status_code == 200 and done.json()["status"] == "completed"
    assert done.json()["earned_points"] == 2  # 2990 fen
    await assert_books_clean()


@pytest.mark.clock
async def test_shipped_orders_complete_themselves() -> None:
    shop = await make_shop()
    member = await make_member()
    order = await orders_service.place_order(
        member,
        orders_service.OrderIn.model_validate(
            {"items": [{"sku_id": shop.towel.id, "quantity": 3}], "delivery": "pickup"}
        ),
        None,
    )
    await _pay(order.id)
    await orders_service.ship(order.id, shipping_company="", tracking_no="", staff=None)
    clock.advance(timedelta(days=9))
    assert await orders_service.complete_delivered() == 0
    clock.advance(timedelta(days=1, minutes=1))
    assert await orders_service.complete_delivered() == 1
    done = await Order.get(id=order.id)
    assert done.status == "completed" and done.earned_points == 8  # 8970 fen
    await assert_books_clean()


async def test_orders_check_finds_tampering() -> None:
    shop = await make_shop()
    member = await make_member(1000)
    order = await orders_service.place_order(
        member,
        orders_service.OrderIn.model_validate(
            {"items": [{"sku_id": shop.towel.id, "quantity": 1}], "points": 500,
             "delivery": "pickup"}
        ),
        None,
    )  # fmt: skip
    await assert_books_clean()
    await Order.filter(id=order.id).update(refunded_fen=1)
    from mall.orders.tasks import check_orders

    report = await check_orders()
    assert not report.ok
    assert any("refunded_fen 1 != refunds 0" in line for line in report.lines)
