from __future__ import annotations

import asyncio

import httpx

from mall.members.models import Member
from mall.points.models import ExternalOrder, PointsEntry
from tests.conftest import MemberLogin, StaffLogin
from tests.points.helpers import assert_ledger_ok

ORDERS = [
    {"platform": "tmall", "order_no": "T1001", "phone": "13800138000", "paid_fen": 25_999,
     "paid_at": "2025-05-01T10:00:00", "status": "completed"},
    {"platform": "jd", "order_no": "J2002", "phone": "139****1234", "paid_fen": 10_000,
     "status": "paid"},
    {"platform": "tmall", "order_no": "T1003", "phone": "13800138000", "paid_fen": 50_000,
     "status": "refunded"},
    {"platform": "douyin", "order_no": "D3004", "phone": "13700137000", "paid_fen": 9_999,
     "status": "cancelled"},
]  # fmt: skip


async def _import(client: httpx.AsyncClient, admin: dict[str, str], rows: object) -> dict:  # type: ignore[type-arg]
    r = await client.post("/api/admin/v1/external-orders/import", json=rows, headers=admin)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def _bind(
    client: httpx.AsyncClient, headers: dict[str, str], platform: str, order_no: str, phone: str
) -> httpx.Response:
    return await client.post(
        "/api/v1/points/bind-order",
        json={"platform": platform, "order_no": order_no, "phone": phone},
        headers=headers,
    )


async def test_bind_success_and_each_error(
    client: httpx.AsyncClient, member_headers: MemberLogin, staff_headers: StaffLogin
) -> None:
    admin = await staff_headers("ops")
    await _import(client, admin, ORDERS)
    alice = await member_headers("alice")
    bob = await member_headers("bob")

    r = await _bind(client, alice, "TMALL", " T1001 ", "+86 138-0013-8000")
    assert r.status_code == 200, r.text
    assert r.json()["points_awarded"] == 25  # 259.99 yuan at 10 yuan a point, rounded down
    assert r.json()["balance"] == 25

    r = await _bind(client, alice, "tmall", "T1001", "13800138000")
    assert r.status_code == 409 and r.json()["error"]["code"] == "ORDER_ALREADY_BOUND_BY_YOU"
    r = await _bind(client, bob, "tmall", "T1001", "13800138000")
    assert r.status_code == 409 and r.json()["error"]["code"] == "ORDER_ALREADY_BOUND"
    r = await _bind(client, bob, "tmall", "T1003", "13800138000")
    assert r.status_code == 409 and r.json()["error"]["code"] == "ORDER_NOT_BINDABLE"
    r = await _bind(client, bob, "douyin", "D3004", "13700137000")
    assert r.json()["error"]["code"] == "ORDER_NOT_BINDABLE"
    r = await _bind(client, bob, "tmall", "NOPE", "13800138000")
    assert r.status_code == 404 and r.json()["error"]["code"] == "EXTERNAL_ORDER_NOT_FOUND"
    r = await _bind(client, bob, "jd", "J2002", "13900001235")
    assert r.status_code == 422 and r.json()["error"]["code"] == "ORDER_PHONE_MISMATCH"
    # the marketplace masked the phone: the visible digits must match
    r = await _bind(client, bob, "jd", "J2002", "13900001234")
    assert r.status_code == 200 and r.json()["points_awarded"] == 10

    order = await ExternalOrder.get(platform="tmall", order_no="T1001")
    alice_id = (await Member.get(openid="dev_alice")).id
    assert order.member_id == alice_id and order.points_awarded == 25
    me = (await client.get("/api/v1/points", headers=alice)).json()
    assert me["growth_value"] == 25
    await assert_ledger_ok()


async def test_wrong_guesses_are_rate_limited(
    client: httpx.AsyncClient, member_headers: MemberLogin, staff_headers: StaffLogin
) -> None:
    await _import(client, await staff_headers("ops"), ORDERS)
    mallory = await member_headers("mallory")
    for i in range(5):
        r = await _bind(client, mallory, "tmall", f"GUESS{i}", "13800138000")
        assert r.json()["error"]["code"] == "EXTERNAL_ORDER_NOT_FOUND"
    # even a right guess is refused now, so orders cannot be enumerated
    r = await _bind(client, mallory, "tmall", "T1001", "13800138000")
    assert r.status_code == 429 and r.json()["error"]["code"] == "RATE_LIMITED"
    assert int(r.headers["Retry-After"]) > 0
    assert await ExternalOrder.filter(member_id__isnull=False).count() == 0
    # another member is not affected, and failures that are not guesses do not count
    carol = await member_headers("carol")
    for _ in range(6):
        r = await _bind(client, carol, "tmall", "T1003", "13800138000")
        assert r.json()["error"]["code"] == "ORDER_NOT_BINDABLE"
    assert (await _bind(client, carol, "tmall", "T1001", "13800138000")).status_code == 200


async def test_two_members_claim_at_once_exactly_one_wins(
    client: httpx.AsyncClient, member_headers: MemberLogin, staff_headers: StaffLogin
) -> None:
    await _import(client, await staff_headers("ops"), ORDERS)
    members = [await member_headers(f"racer{i}") for i in range(8)]
    answers = await asyncio.gather(
        *(_bind(client, h, "tmall", "T1001", "13800138000") for h in members)
    )
    assert sorted(r.status_code for r in answers) == [200] + [409] * 7
    assert {r.json()["error"]["code"] for r in answers if r.status_code == 409} == {
        "ORDER_ALREADY_BOUND"
    }
    assert await PointsEntry.filter(reason="bind_order").count() == 1
    await assert_ledger_ok()


async def test_bind_retry_with_idempotency_key(
    client: httpx.AsyncClient, member_headers: MemberLogin, staff_headers: StaffLogin
) -> None:
    await _import(client, await staff_headers("ops"), ORDERS)
    headers = {**(await member_headers("dan")), "Idempotency-Key": "bind-1"}
    first = await _bind(client, headers, "tmall", "T1001", "13800138000")
    again = await _bind(client, headers, "tmall", "T1001", "13800138000")
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    assert await PointsEntry.all().count() == 1
