"""Ops: items, stock adjustments, shipping, cancelling, export; what members see."""

from __future__ import annotations

import csv
import io

import httpx
import pytest

from mall.audit.models import AuditLog
from mall.points import service as points_service
from mall.pointsmall.tasks import CHECKS
from tests.conftest import MemberLogin
from tests.pointsmall.conftest import (
    MakeItem,
    NewMember,
    add_address,
    db_stock,
    key,
    redeem,
    redis_stock,
)

ADMIN = "/api/admin/v1/points-mall"


async def test_item_lifecycle_and_audited_stock_adjustments(
    client: httpx.AsyncClient, make_item: MakeItem, ops: dict[str, str], member_headers: MemberLogin
) -> None:
    item = await make_item(on_shelf=False, total_stock=10, pictures=["/static/uploads/a-750.webp"])
    assert item["status"] == "draft" and item["redis_stock"] == 10
    r = await client.patch(
        f"{ADMIN}/items/{item['id']}", json={"points_price": 250, "name": "Cup"}, headers=ops
    )
    assert r.status_code == 200 and r.json()["points_price"] == 250
    bad = await client.patch(
        f"{ADMIN}/items/{item['id']}", json={"limit_per_period": 2}, headers=ops
    )
    assert bad.status_code == 422
    bad = await client.patch(
        f"{ADMIN}/items/{item['id']}", json={"pictures": ["javascript:alert(1)"]}, headers=ops
    )
    assert bad.status_code == 422
    r = await client.post(f"{ADMIN}/items/{item['id']}/on-shelf", headers=ops)
    assert r.json()["status"] == "on"

    url = f"{ADMIN}/items/{item['id']}/stock-adjustments"
    h = {**ops, "Idempotency-Key": "restock-1"}
    r = await client.post(url, json={"delta": 5, "reason": "restock"}, headers=h)
    assert r.status_code == 201 and r.json()["total_after"] == 15
    again = await client.post(url, json={"delta": 5, "reason": "restock"}, headers=h)
    assert again.json()["id"] == r.json()["id"]
    r = await client.post(url, json={"delta": -16, "reason": "oops"}, headers=ops)
    assert r.status_code == 409 and r.json()["error"]["code"] == "STOCK_BELOW_ZERO"
    r = await client.post(url, json={"delta": -3, "reason": "damaged"}, headers=ops)
    assert r.status_code == 201 and r.json()["total_after"] == 12
    assert await redis_stock(item["id"]) == 12 and await db_stock(item["id"]) == 12
    history = (await client.get(url, headers=ops)).json()
    assert [a["delta"] for a in history] == [-3, 5, 10]
    actions = await AuditLog.filter(action="pointsmall.stock.adjust").count()
    assert actions == 2
    # members never reach the ops routes
    member = await member_headers("nosy")
    assert (await client.get(f"{ADMIN}/items", headers=member)).status_code == 401
    # archiving hides it
    assert (await client.delete(f"{ADMIN}/items/{item['id']}", headers=ops)).status_code == 204
    listed = (await client.get(f"{ADMIN}/items", headers=ops)).json()["items"]
    assert item["id"] not in [i["id"] for i in listed]
    assert (await CHECKS["pointsmall"]()).ok


async def test_stock_cannot_be_taken_from_pending_reservations(
    client: httpx.AsyncClient, make_item: MakeItem, ops: dict[str, str]
) -> None:
    from mall.pointsmall import service as pm_service

    item_row = await make_item(total_stock=2)
    item = await pm_service.get_item(item_row["id"])
    await pm_service.redeem(1, item.id)  # decided in Redis, not yet in the DB
    r = await client.post(
        f"{ADMIN}/items/{item.id}/stock-adjustments",
        json={"delta": -2, "reason": "recount"},
        headers=ops,
    )
    assert r.status_code == 409 and r.json()["error"]["details"]["available"] == 1
    assert await db_stock(item.id) == 2 and await redis_stock(item.id) == 1  # both unchanged


async def test_ship_cancel_and_export(
    client: httpx.AsyncClient, make_item: MakeItem, new_member: NewMember, ops: dict[str, str]
) -> None:
    gift = await make_item(kind="gift", total_stock=3, points_price=300, limit_per_member=1)
    member_id, headers = await new_member(points=1000)
    address_id = await add_address(client, headers)
    first = await redeem(client, gift["id"], headers, address_id=address_id)
    assert first.status_code == 200 and first.json()["status"] == "awaiting_shipment"
    rid = first.json()["id"]
    assert await points_service.get_balance(member_id) == 700

    # the member cancels before shipping: points, stock and limit come back
    r = await client.post(f"/api/v1/points-mall/redemptions/{rid}/cancel", json={}, headers=headers)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    again = await client.post(
        f"/api/v1/points-mall/redemptions/{rid}/cancel", json={}, headers=headers
    )
    assert again.json()["status"] == "cancelled"
    assert await points_service.get_balance(member_id) == 1000
    assert await redis_stock(gift["id"]) == 3 and await db_stock(gift["id"]) == 3

    second = await redeem(client, gift["id"], headers, address_id=address_id)
    assert second.status_code == 200
    sid = second.json()["id"]
    ship = {"carrier": "SF", "tracking_number": "SF1234567890"}
    r = await client.post(f"{ADMIN}/redemptions/{sid}/ship", json=ship, headers=ops)
    assert r.status_code == 200 and r.json()["status"] == "shipped"
    assert r.json()["tracking_number"] == "SF1234567890"
    r = await client.post(f"/api/v1/points-mall/redemptions/{sid}/cancel", headers=headers)
    assert r.status_code == 409 and r.json()["error"]["code"] == "REDEMPTION_NOT_CANCELLABLE"
    r = await client.post(f"{ADMIN}/redemptions/{rid}/ship", json=ship, headers=ops)
    assert r.json()["error"]["code"] == "REDEMPTION_NOT_SHIPPABLE"
    # another member cannot see or cancel it
    _other, other = await new_member(points=0)
    r = await client.post(f"/api/v1/points-mall/redemptions/{sid}/cancel", headers=other)
    assert r.status_code == 404

    # ops cancel a voucher (customer service), with a reason
    voucher = await make_item(kind="voucher", points_price=100)
    v = await redeem(client, voucher["id"], headers)
    assert v.json()["status"] == "issued" and v.json()["voucher_code"]
    r = await client.post(
        f"{ADMIN}/redemptions/{v.json()['id']}/cancel", json={"reason": "投诉补偿"}, headers=ops
    )
    assert r.json()["status"] == "cancelled" and r.json()["cancelled_by"].startswith("staff:")
    assert await points_service.get_balance(member_id) == 700

    listed = (await client.get(f"{ADMIN}/redemptions?item_id={gift['id']}", headers=ops)).json()
    assert [x["id"] for x in listed["items"]] == [sid, rid]
    r = await client.get(f"{ADMIN}/redemptions/export?item_id={gift['id']}", headers=ops)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert [row["id"] for row in rows] == [str(sid), str(rid)]
    assert rows[0]["tracking_number"] == "SF1234567890" and rows[0]["recipient"] == "张三"
    assert rows[1]["status"] == "cancelled"
    assert (await CHECKS["pointsmall"]()).ok


async def test_members_see_what_they_can_redeem_first(
    client: httpx.AsyncClient, make_item: MakeItem, new_member: NewMember
) -> None:
    cheap = await make_item(name="cheap", points_price=100, total_stock=4)
    dear = await make_item(name="dear", points_price=5000, sort_order=100)
    vip = await make_item(name="vip", points_price=10, level_required=99, sort_order=50)
    await make_item(name="hidden", on_shelf=False)
    _m, headers = await new_member(points=500)
    r = await client.get("/api/v1/points-mall/items", headers=headers)
    body = r.json()
    assert body["points_balance"] == 500
    names = [i["name"] for i in body["items"]]
    assert names[0] == "cheap" and set(names[1:]) == {"dear", "vip"}
    by_name = {i["name"]: i for i in body["items"]}
    assert by_name["cheap"]["stock_left"] == 4 and by_name["cheap"]["unavailable_reason"] is None
    assert by_name["dear"]["unavailable_reason"] == "NOT_ENOUGH_POINTS"
    assert by_name["vip"]["unavailable_reason"] == "LEVEL_TOO_LOW"
    await client.post(
        f"/api/v1/points-mall/items/{cheap['id']}/redeem", json={}, headers={**headers, **key()}
    )
    detail = (await client.get(f"/api/v1/points-mall/items/{cheap['id']}", headers=headers)).json()
    assert detail["stock_left"] == 3
    page = await client.get("/api/v1/points-mall/items?size=2", headers=headers)
    assert len(page.json()["items"]) == 2 and page.json()["next_cursor"] == "2"
    rest = await client.get("/api/v1/points-mall/items?size=2&cursor=2", headers=headers)
    assert [i["name"] for i in rest.json()["items"]] == [names[2]]
    assert dear["id"] and vip["id"]


async def test_demo_seed_is_idempotent() -> None:
    from mall.members import service as members_service
    from mall.pointsmall import demo
    from mall.pointsmall.models import PointsMallItem

    await members_service.create_staff("demo-admin", "long-enough-pw", "admin")
    await demo.seed()
    await demo.seed()
    assert await PointsMallItem.all().count() == len(demo.DEMO_ITEMS)
    assert (await CHECKS["pointsmall"]()).ok


@pytest.mark.nodb
@pytest.mark.parametrize(
    "url", ["http://example.com:8000", "http://10.0.0.5:8000", "https://127.0.0.1:8000"]
)
async def test_pointsmall_drill_refuses_anything_but_localhost(url: str) -> None:
    from mall.pointsmall import drill

    assert await drill.main(["--base-url", url]) == 2
