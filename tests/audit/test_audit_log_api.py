"""The audit-log API's filters: action, staff, target, a Shanghai time range, and pages
through the `X-Next-Cursor` header."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import httpx
import pytest

from mall.audit import service as audit_service
from mall.kit import clock
from tests.conftest import StaffLogin

URL = "/api/admin/v1/audit-log"


@pytest.mark.clock
async def test_filters_and_pages(client: httpx.AsyncClient, staff_headers: StaffLogin) -> None:
    amy = SimpleNamespace(id=101, username="amy")
    bob = SimpleNamespace(id=102, username="bob")
    # 2026-03-01 23:30 and 2026-03-02 00:30 Shanghai: two local days, one UTC day
    clock.set_now(datetime(2026, 3, 1, 15, 30, tzinfo=UTC))
    await audit_service.record(amy, "points.adjust", "member:1", points=5)
    await audit_service.record(bob, "order.ship", "order:7", carrier="SF")
    clock.advance(timedelta(hours=1))
    await audit_service.record(amy, "order.ship", "order:8", carrier="YTO")
    await audit_service.record(None, "order.refund.retry", "order:8")
    admin = await staff_headers("admin")

    async def actions(**query: str) -> list[str]:
        r = await client.get(URL, params=query, headers=admin)
        assert r.status_code == 200, r.text
        return [f"{a['action']}@{a['target']}" for a in r.json()]

    assert await actions(action="order.ship") == ["order.ship@order:8", "order.ship@order:7"]
    assert await actions(staff="amy") == ["order.ship@order:8", "points.adjust@member:1"]
    assert await actions(staff="system") == ["order.refund.retry@order:8"]
    assert await actions(target="order:8", staff="amy") == ["order.ship@order:8"]
    # naive times are what staff type: Shanghai wall time
    assert await actions(since="2026-03-02T00:00", staff="amy") == ["order.ship@order:8"]
    assert await actions(until="2026-03-02T00:00") == [
        "order.ship@order:7", "points.adjust@member:1",
    ]  # fmt: skip
    assert await actions(since="2026-03-01T15:00Z", until="2026-03-01T16:00Z") == [
        "order.ship@order:7", "points.adjust@member:1",
    ]  # fmt: skip

    first = await client.get(URL, params={"limit": 3}, headers=admin)
    assert len(first.json()) == 3
    cursor = first.headers["X-Next-Cursor"]
    rest = await client.get(URL, params={"limit": 3, "cursor": cursor}, headers=admin)
    assert [a["action"] for a in rest.json()] == ["points.adjust"]
    assert "X-Next-Cursor" not in rest.headers


@pytest.mark.parametrize(
    "query",
    [
        {"cursor": str(10**20)},
        {"cursor": "-1"},
        {"staff": "x" * 65},
        {"target": "a\x00b"},
        {"since": "yesterday"},
        {"limit": "501"},
    ],
)
async def test_bad_filters_are_422(
    client: httpx.AsyncClient, staff_headers: StaffLogin, query: dict[str, str]
) -> None:
    r = await client.get(URL, params=query, headers=await staff_headers("admin"))
    assert r.status_code == 422 and r.json()["error"]["code"] == "VALIDATION_ERROR", r.text


async def test_ops_may_not_read_it(client: httpx.AsyncClient, staff_headers: StaffLogin) -> None:
    r = await client.get(URL, headers=await staff_headers("ops"))
    assert r.status_code == 403
