"""A refund of an already-bound marketplace order claws its points back: what the
member already spent is taken from the balance as far as it goes and the rest is owed
(never a negative balance); new points settle what is owed first."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from mall.errors import MallError
from mall.kit import clock
from mall.members.models import Member
from mall.points import service
from mall.points.models import REVERSE, ExternalOrder, PointsDebt, PointsEntry
from mall.points.tasks import CHECKS
from tests.conftest import MemberLogin, StaffLogin
from tests.points.helpers import assert_ledger_ok

DAY = datetime(2025, 12, 31, 15, 30, tzinfo=UTC)  # 23:30 on New Year's Eve in Shanghai
ORDER = {"platform": "tmall", "order_no": "T100", "phone": "13800138000", "paid_fen": 100_000}


async def _import(
    client: httpx.AsyncClient, ops: dict[str, str], *rows: dict[str, Any]
) -> dict[str, Any]:
    r = await client.post("/api/admin/v1/external-orders/import", json=list(rows), headers=ops)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def _summary(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    body: dict[str, Any] = (await client.get("/api/v1/points", headers=headers)).json()
    return body


async def test_refunds_claw_back_spent_points_as_owed_and_earnings_settle_first(
    client: httpx.AsyncClient, staff_headers: StaffLogin, member_headers: MemberLogin
) -> None:
    clock.set_now(DAY)
    ops = await staff_headers("ops")
    headers = await member_headers("buyer")
    member = await Member.get(openid="dev_buyer")
    await service.earn(member.id, 30, idempotency_key="other", reason="t")
    await _import(client, ops, ORDER)
    bound = await client.post(
        "/api/v1/points/bind-order",
        json={"platform": "tmall", "order_no": "T100", "phone": "13800138000"},
        headers=headers,
    )
    assert bound.json()["points_awarded"] == 100  # 1000 yuan at 10 yuan a point
    await service.spend(member.id, 110, idempotency_key="spent", reason="t")
    assert (await _summary(client, headers))["balance"] == 20

    # a partial refund (40%): 40 points back; 20 are there, 20 are owed
    body = await _import(client, ops, {**ORDER, "refunded_fen": 40_000})
    assert (body["refunded"], body["errors"]) == (1, [])
    shown = await _summary(client, headers)
    assert (shown["balance"], shown["points_owed"]) == (0, 20)
    assert shown["growth_value"] == 30 + 60  # growth of all 40 points goes at once
    order = await ExternalOrder.get(order_no="T100")
    assert (order.refunded_fen, order.points_reversed, order.status) == (40_000, 40, "completed")
    # the same file again changes nothing
    again = await _import(client, ops, {**ORDER, "refunded_fen": 40_000})
    assert (again["refunded"], again["unchanged"]) == (0, 1)
    assert (await _summary(client, headers))["points_owed"] == 20

    # new points pay what is owed first
    await service.earn(member.id, 15, idempotency_key="e15", reason="t")
    shown = await _summary(client, headers)
    assert (shown["balance"], shown["points_owed"]) == (0, 5)
    await service.earn(member.id, 10, idempotency_key="e10", reason="t")
    shown = await _summary(client, headers)
    assert (shown["balance"], shown["points_owed"]) == (5, 0)
    debt = await PointsDebt.get(member_id=member.id)
    assert (debt.points, debt.remaining, debt.settled_at) == (20, 0, DAY)
    settlements = await PointsEntry.filter(kind=REVERSE, reference=f"debt:{debt.id}").order_by("id")
    assert [e.delta for e in settlements] == [-15, -5]

    # the rest is refunded (the marketplace marks it refunded): the other 60 points
    body = await _import(client, ops, {**ORDER, "status": "refunded"})
    assert body["refunded"] == 1
    shown = await _summary(client, headers)
    assert (shown["balance"], shown["points_owed"]) == (0, 55)
    order = await ExternalOrder.get(order_no="T100")
    assert (order.refunded_fen, order.points_reversed, order.status) == (100_000, 100, "refunded")
    # nothing is left to claw back on that earn
    with pytest.raises(MallError) as err:
        await service.reverse(f"bind:{order.id}", idempotency_key="more", reason="t", points=1)
    assert err.value.code == "POINTS_REVERSE_TOO_LARGE"
    balances = await PointsEntry.filter(member_id=member.id).values_list("balance_after", flat=True)
    assert min(balances) >= 0
    report = await CHECKS["ledger"]()
    assert report.ok, report.lines
    await assert_ledger_ok()


async def test_refunded_before_binding_earns_on_the_rest_and_csv_refund_rows(
    client: httpx.AsyncClient, staff_headers: StaffLogin, member_headers: MemberLogin
) -> None:
    clock.set_now(DAY)
    ops = await staff_headers("ops")
    headers = await member_headers("late")
    csv = (
        "平台,订单号,手机号,实付金额(分),订单状态,退款金额(分)\n"
        "天猫,T200,13800138000,100000,交易成功,30000\n"
        "天猫,T201,13800138000,5000,退款成功,\n"
        "天猫,T202,13800138000,5000,交易成功,6000\n"
    )
    r = await client.post(
        "/api/admin/v1/external-orders/import",
        content=csv.encode(),
        headers={**ops, "Content-Type": "text/csv"},
    )
    body = r.json()
    assert body["created"] == 2
    assert [(e["row"], e["code"]) for e in body["errors"]] == [(4, "IMPORT_ROW_INVALID")]
    t201 = await ExternalOrder.get(order_no="T201")
    assert (t201.status, t201.refunded_fen) == ("refunded", 5000)
    bound = await client.post(
        "/api/v1/points/bind-order",
        json={"platform": "tmall", "order_no": "T200", "phone": "13800138000"},
        headers=headers,
    )
    assert bound.json()["points_awarded"] == 70  # on the 700 yuan not refunded
    r = await client.post(
        "/api/admin/v1/external-orders/import",
        content=csv.replace("交易成功,30000", "退款成功,").encode(),
        headers={**ops, "Content-Type": "text/csv"},
    )
    assert r.json()["refunded"] == 1
    shown = await _summary(client, headers)
    assert (shown["balance"], shown["points_owed"], shown["growth_value"]) == (0, 0, 0)
    assert (await ExternalOrder.get(order_no="T200")).points_reversed == 70
    await assert_ledger_ok()
