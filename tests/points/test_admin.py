from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import httpx
import pytest

from mall.audit.models import AuditLog
from mall.kit import clock
from mall.members.models import Member
from mall.points import service
from mall.points.models import ExternalOrder, PointsEntry
from tests.conftest import MemberLogin, StaffLogin
from tests.points.helpers import assert_ledger_ok, new_member

CSV = (
    "platform,order_no,phone,paid_fen,paid_at,status\n"
    "tmall,A1,13800138000,10000,2025-05-01 10:00:00,completed\n"
    "tmall,A2,13800138001,abc,,completed\n"  # row 3: bad amount
    "jd,B1,13800138002,2000,2025-05-02T10:00:00+08:00,paid\n"
    "tmall,A1,13800138000,10000,,completed\n"  # row 5: duplicate of row 2
    "\n"
    "jd,B2,,500,,paid\n"  # row 7: no phone
    "jd,B3,13800138003,700,,lost\n"  # row 8: unknown status
)


async def _import_csv(
    client: httpx.AsyncClient, headers: dict[str, str], text: str
) -> httpx.Response:
    return await client.post(
        "/api/admin/v1/external-orders/import",
        content=text.encode(),
        headers={**headers, "Content-Type": "text/csv", "Accept-Language": "en"},
    )


async def test_import_csv_reports_row_errors_and_is_idempotent(
    client: httpx.AsyncClient, staff_headers: StaffLogin
) -> None:
    ops = await staff_headers("ops")
    r = await _import_csv(client, ops, CSV)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["rows"], body["created"], body["updated"], body["unchanged"]) == (6, 2, 0, 0)
    assert [(e["row"], e["code"]) for e in body["errors"]] == [
        (3, "IMPORT_ROW_INVALID"),
        (5, "IMPORT_ROW_DUPLICATE"),
        (7, "IMPORT_ROW_INVALID"),
        (8, "IMPORT_ROW_INVALID"),
    ]
    assert "paid_fen" in body["errors"][0]["message"]
    assert "row 2" in body["errors"][1]["message"]
    a1 = await ExternalOrder.get(platform="tmall", order_no="A1")
    assert a1.paid_at == datetime(2025, 5, 1, 2, 0, tzinfo=UTC)  # Shanghai time without offset

    again = (await _import_csv(client, ops, CSV)).json()
    assert (again["created"], again["updated"], again["unchanged"]) == (0, 0, 2)
    assert await ExternalOrder.all().count() == 2


async def test_reimport_updates_unbound_orders_and_only_refunds_bound_ones(
    client: httpx.AsyncClient, staff_headers: StaffLogin, member_headers: MemberLogin
) -> None:
    ops = await staff_headers("ops")
    rows = [
        {"platform": "tmall", "order_no": "X1", "phone": "13800138000", "paid_fen": 3000},
        {"platform": "tmall", "order_no": "X2", "phone": "13800138000", "paid_fen": 4000},
    ]
    r = await client.post("/api/admin/v1/external-orders/import", json=rows, headers=ops)
    assert r.json()["created"] == 2
    alice = await member_headers("alice")
    bound = await client.post(
        "/api/v1/points/bind-order",
        json={"platform": "tmall", "order_no": "X1", "phone": "13800138000"},
        headers=alice,
    )
    assert bound.status_code == 200
    # a bound order takes no other change (it would rewrite what earned the points)
    changed = [{**rows[0], "phone": "13900139000"}, rows[1]]
    r = await client.post(
        "/api/admin/v1/external-orders/import", json={"orders": changed}, headers=ops
    )
    body = r.json()
    assert (body["updated"], body["unchanged"], body["refunded"]) == (0, 1, 0)
    assert [(e["row"], e["code"]) for e in body["errors"]] == [(1, "IMPORT_ROW_BOUND")]
    # but a refund: the unbound order is updated, the bound one refunded (points back)
    changed = [{**row, "status": "refunded"} for row in rows]
    r = await client.post(
        "/api/admin/v1/external-orders/import", json={"orders": changed}, headers=ops
    )
    body = r.json()
    assert (body["updated"], body["unchanged"], body["refunded"]) == (1, 0, 1)
    assert body["errors"] == []
    x1 = await ExternalOrder.get(order_no="X1")
    x2 = await ExternalOrder.get(order_no="X2")
    assert (x1.status, x2.status) == ("refunded", "refunded")
    assert (x1.refunded_fen, x1.points_reversed) == (3000, 3)
    assert await service.get_balance(x1.member_id or 0) == 0


async def test_import_multipart_with_chinese_headers_in_gbk(
    client: httpx.AsyncClient, staff_headers: StaffLogin
) -> None:
    ops = await staff_headers("ops")
    text = "平台,订单号,手机号,实付金额(分),支付时间,订单状态\n天猫,C1,13800138000,1500,,交易成功\n"
    r = await client.post(
        "/api/admin/v1/external-orders/import",
        files={"file": ("orders.csv", text.encode("gb18030"), "text/csv")},
        headers=ops,
    )
    assert r.status_code == 200, r.text
    assert r.json()["created"] == 1 and r.json()["errors"] == []
    order = await ExternalOrder.get(order_no="C1")
    assert (order.platform, order.status, order.paid_fen) == ("tmall", "completed", 1500)


async def test_import_unreadable(client: httpx.AsyncClient, staff_headers: StaffLogin) -> None:
    ops = await staff_headers("ops")
    r = await client.post(
        "/api/admin/v1/external-orders/import",
        content=b'{"orders": 5}',
        headers={**ops, "Content-Type": "application/json"},
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "IMPORT_UNREADABLE"
    member = await client.post("/api/admin/v1/external-orders/import", json=[])
    assert member.status_code == 401


async def test_rules_defaults_update_audit_and_conflict(
    client: httpx.AsyncClient, staff_headers: StaffLogin, member_headers: MemberLogin
) -> None:
    ops = await staff_headers("ops")
    admin = await staff_headers("admin")
    got = (await client.get("/api/admin/v1/rules", headers=ops)).json()
    assert got["version"] == 0
    assert got["rules"]["earn"]["fen_per_point"] == 1000
    assert got["rules"]["sign_in"]["daily_points"] == [5, 5, 5, 5, 5, 5, 25]
    rules = got["rules"]
    rules["sign_in"]["daily_points"] = [7]
    r = await client.put("/api/admin/v1/rules", json={"rules": rules}, headers=ops)
    assert r.status_code == 403
    r = await client.put(
        "/api/admin/v1/rules", json={"rules": rules, "base_version": 0}, headers=admin
    )
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 1
    stale = await client.put(
        "/api/admin/v1/rules", json={"rules": rules, "base_version": 0}, headers=admin
    )
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "RULES_VERSION_CONFLICT"
    bad = dict(rules, levels=[{"level": 0, "name": "a", "threshold": 10}])
    r = await client.put("/api/admin/v1/rules", json={"rules": bad}, headers=admin)
    assert r.status_code == 422
    r = await client.put("/api/admin/v1/rules", json={"rules": {**rules, "typo": 1}}, headers=admin)
    assert r.status_code == 422
    audit = await AuditLog.filter(action="points.rules.update")
    assert len(audit) == 1 and audit[0].detail["after"]["sign_in"]["daily_points"] == [7]
    # the new table is in force
    signed = await client.post("/api/v1/points/sign-in", headers=await member_headers("x"))
    assert signed.json()["points_awarded"] == 7


async def test_admin_grant_and_deduct_are_idempotent_and_audited(
    client: httpx.AsyncClient, staff_headers: StaffLogin, member_headers: MemberLogin
) -> None:
    ops = await staff_headers("ops")
    me = await member_headers("lucky")
    member = await Member.get(openid="dev_lucky")
    url = f"/api/admin/v1/members/{member.id}/points"
    headers = {**ops, "Idempotency-Key": "grant-1"}
    first = await client.post(url, json={"points": 300, "reason": "buyer show"}, headers=headers)
    again = await client.post(url, json={"points": 300, "reason": "buyer show"}, headers=headers)
    assert first.status_code == again.status_code == 201, first.text
    assert first.json() == again.json() and first.json()["balance"] == 300
    assert await PointsEntry.filter(member_id=member.id).count() == 1
    reused = await client.post(url, json={"points": 5, "reason": "other"}, headers=headers)
    assert reused.status_code == 422 and reused.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"

    short = await client.post(url, json={"points": -301, "reason": "oops"}, headers=ops)
    assert short.status_code == 409 and short.json()["error"]["code"] == "NOT_ENOUGH_POINTS"
    r = await client.post(url, json={"points": -100, "reason": "fraud"}, headers=ops)
    assert r.status_code == 201 and r.json()["entry"]["kind"] == "adjust"
    assert r.json()["balance"] == 200
    zero = await client.post(url, json={"points": 0, "reason": "x"}, headers=ops)
    assert zero.status_code == 422
    past = await client.post(
        url, json={"points": 5, "reason": "x", "expires_at": "2001-01-01T00:00:00"}, headers=ops
    )
    assert past.status_code == 422 and past.json()["error"]["fields"][0]["field"].endswith("at")
    missing = await client.post(
        "/api/admin/v1/members/999999/points", json={"points": 1, "reason": "x"}, headers=ops
    )
    assert missing.status_code == 404
    audit = await AuditLog.filter(action="points.adjust").order_by("id")
    assert [a.detail["points"] for a in audit] == [300, -100]
    ledger = (await client.get("/api/v1/points/ledger?size=1", headers=me)).json()
    assert ledger["items"][0]["delta"] == -100 and ledger["next_cursor"]
    older = await client.get(
        f"/api/v1/points/ledger?size=1&cursor={ledger['next_cursor']}", headers=me
    )
    assert older.json()["items"][0]["delta"] == 300 and older.json()["next_cursor"] is None
    await assert_ledger_ok()


@pytest.mark.clock
async def test_points_summary_level_and_profile(
    client: httpx.AsyncClient, member_headers: MemberLogin
) -> None:
    headers = await member_headers("sum")
    member = await Member.get(openid="dev_sum")
    clock.set_now(datetime(2025, 6, 1, 4, 0, tzinfo=UTC))
    await service.earn(
        member.id,
        40,
        idempotency_key="soon",
        reason="t",
        expires_at=clock.now() + timedelta(days=3),
    )
    await service.earn(member.id, 560, idempotency_key="later", reason="t")
    body = (await client.get("/api/v1/points", headers=headers)).json()
    assert body["balance"] == 600 and body["expiring_soon"] == 40
    assert body["level"] == 1 and body["level_name"] == "银卡会员"
    assert body["discount_percent"] == 98
    assert body["next_level"] == {
        "level": 2, "name": "金卡会员", "threshold": 2000, "growth_needed": 1400,
    }  # fmt: skip
    me = (await client.get("/api/v1/me", headers=headers)).json()
    assert me["level_name"] == "银卡会员" and me["points_balance"] == 600


@pytest.mark.clock
async def test_birthday_gift_once_a_year_sized_by_level() -> None:
    clock.set_now(datetime(2025, 7, 3, 4, 0, tzinfo=UTC))
    july = await new_member(birthday=date(1990, 7, 20))
    gold = await new_member(birthday=date(1988, 7, 1), growth_value=2500, level=2)
    august = await new_member(birthday=date(1990, 8, 1))
    await new_member()
    assert await service.grant_birthday_gifts() == 2
    assert await service.grant_birthday_gifts() == 0
    assert await service.get_balance(july.id) == 50
    assert await service.get_balance(gold.id) == 200
    assert await service.get_balance(august.id) == 0
    clock.set_now(datetime(2025, 8, 2, 4, 0, tzinfo=UTC))
    assert await service.grant_birthday_gifts() == 1
    clock.set_now(datetime(2026, 7, 1, 4, 0, tzinfo=UTC))
    assert await service.grant_birthday_gifts() == 2
    assert await service.get_balance(july.id) == 100
    # gifts do not raise growth (they are not earned by buying)
    assert (await Member.get(id=july.id)).growth_value == 0
    await assert_ledger_ok()


@pytest.mark.clock
async def test_overview_figures(client: httpx.AsyncClient, staff_headers: StaffLogin) -> None:
    ops = await staff_headers("ops")
    clock.set_now(datetime(2025, 9, 10, 4, 0, tzinfo=UTC))
    a = await new_member()
    await service.earn(a.id, 1000, idempotency_key="e1", reason="t")
    await service.spend(a.id, 300, idempotency_key="s1", reason="t")
    await service.reverse("s1", idempotency_key="r1", reason="refund", points=100)
    held = await service.hold(a.id, 50, idempotency_key="h1", reason="t")
    await service.void(held.id, idempotency_key="v1")
    await service.hold(a.id, 100, idempotency_key="h2", reason="t")
    await service.reverse("e1", idempotency_key="claw", reason="refund", points=200)
    rows = [
        {"platform": "tmall", "order_no": f"O{i}", "phone": "13800138000", "paid_fen": 100}
        for i in range(4)
    ]
    await client.post("/api/admin/v1/external-orders/import", json=rows, headers=ops)
    b = await new_member()
    await service.bind_order(b.id, "tmall", "O1", "13800138000")
    r = await client.get(
        "/api/admin/v1/metrics/overview?start=2025-09-01&end=2025-09-30", headers=ops
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["points_issued"] == 800  # 1000 earned - 200 clawed back
    assert body["points_spent"] == 300  # 300 - 100 given back + 100 held
    assert body["consumption_rate"] == 0.375
    assert (body["orders_imported"], body["orders_bound"], body["binding_rate"]) == (4, 1, 0.25)
    empty = await client.get(
        "/api/admin/v1/metrics/overview?start=2025-10-01&end=2025-10-31", headers=ops
    )
    assert empty.json()["points_issued"] == 0 and empty.json()["consumption_rate"] is None
