"""The dashboard's months and quarters are Asia/Shanghai calendar periods, on SQLite as on
PostgreSQL, at whatever hour the clock reads: a row at 00:00:00 on the 1st is in the new
month, one a second earlier in the old one. Through the admin API, no browser."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta

import httpx
import pytest

from mall.kit import clock
from mall.members import service as members_service
from mall.points import service as points_service
from mall.wallet import service as wallet_service
from tests.conftest import StaffLogin

pytestmark = pytest.mark.clock

# the instants .ci/run freezes the marked tests at (Asia/Shanghai)
AWKWARD = [
    "2026-12-01T02:47:00+08:00",
    "2027-01-01T00:30:00+08:00",
    "2028-02-29T23:59:00+08:00",
    "2028-03-01T00:01:00+08:00",
]


def _label(day: date) -> str:
    return f"{day.year}-{day.month:02d}"


def _quarter_start(day: date) -> date:
    return date(day.year, 3 * ((day.month - 1) // 3) + 1, 1)


def _prev_month(day: date) -> date:
    return (day.replace(day=1) - timedelta(days=1)).replace(day=1)


async def _import(number: str, paid_at: datetime, phone: str) -> None:
    row = {
        "platform": "tmall",
        "order_no": number,
        "phone": phone,
        "paid_fen": 900,  # earns no points: the points figures stay exact
        "paid_at": paid_at.isoformat(),
        "status": "completed",
    }
    parsed = points_service.parse_import(json.dumps([row]).encode(), "application/json")
    result = await points_service.import_external_orders(parsed)
    assert result.created == 1, result


async def _dashboard_at(
    moment: datetime, client: httpx.AsyncClient, staff_headers: StaffLogin
) -> None:
    clock.set_now(moment)
    today = clock.today()
    month = today.replace(day=1)
    edge = clock.start_of_local_day(month)  # 00:00:00 on the 1st, Shanghai, as UTC
    before = edge - timedelta(seconds=1)
    q_edge = clock.start_of_local_day(_quarter_start(today))
    headers = await staff_headers("admin")
    staff = await members_service.create_staff("wallet_ops", "correct-horse-battery", "admin")
    with clock.frozen_at(before):
        old, _new = await members_service.login_with_wechat("dev:p_old")
        await points_service.earn(old.id, 10, idempotency_key="e-old", reason="t")
        await _import("X", q_edge - timedelta(seconds=1), "13800000001")
        await points_service.bind_order(old.id, "tmall", "X", "13800000001")
        await wallet_service.adjust(
            old.id, principal_fen=5000, bonus_fen=0, reason="t", staff=staff, idempotency_key="w1"
        )
    with clock.frozen_at(edge):
        first, _new = await members_service.login_with_wechat("dev:p_first")
        await points_service.earn(first.id, 100, idempotency_key="e-first", reason="t")
        await _import("Y", q_edge, "13800000002")
        await _import("Z", edge, "13800000003")
        await _import("W", edge, "13800000004")
        for number, phone in (("Y", "13800000002"), ("Z", "13800000003")):
            await points_service.bind_order(first.id, "tmall", number, phone)
    late, _new = await members_service.login_with_wechat("dev:p_late")  # at `moment`
    await points_service.spend(first.id, 5, idempotency_key="s-first", reason="t")
    await wallet_service.adjust(
        late.id, principal_fen=1000, bonus_fen=0, reason="t", staff=staff, idempotency_key="w2"
    )

    r = await client.get(
        "/api/admin/v1/dashboard", params={"months": 2, "quarters": 2}, headers=headers
    )
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["months"] == [_label(_prev_month(month)), _label(month)]
    assert [s["members"] for s in d["signups"]] == [1, 2]
    assert [(p["issued"], p["spent"]) for p in d["points"]] == [(10, 0), (100, 5)]
    assert [(b["imported"], b["bound"]) for b in d["binding"]] == [(1, 1), (3, 2)]
    prev_q, this_q = d["repurchase"]
    assert (this_q["buyers"], this_q["repeat_buyers"]) == (1, 1)  # Y at 00:00:00 and Z
    assert (prev_q["buyers"], prev_q["repeat_buyers"]) == (1, 0)  # X a second earlier
    assert d["totals"]["members"] == 3
    # stored value owed at the end of last month, and now
    assert [m["outstanding_fen"] for m in d["stored_value"]["months"]] == [5000, 6000]


@pytest.mark.parametrize("moment", AWKWARD)
async def test_dashboard_periods_at_awkward_instants(
    moment: str, client: httpx.AsyncClient, staff_headers: StaffLogin
) -> None:
    await _dashboard_at(datetime.fromisoformat(moment), client, staff_headers)


async def test_dashboard_periods_now(client: httpx.AsyncClient, staff_headers: StaffLogin) -> None:
    """At the clock the run starts with: MALL_TEST_NOW in .ci/run, else the real time."""
    await _dashboard_at(clock.now(), client, staff_headers)
