"""Voucher items that issue a coupon template: the grant rides in the redemption's
savepoint in the consumer, so a coupon failure spends nothing, releases the redemption
with the reason and gives the stock back."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from mall.audit.models import AuditLog
from mall.coupons import service as coupons_service
from mall.coupons.models import Coupon
from mall.coupons.tasks import CHECKS as COUPON_CHECKS
from mall.kit.checks import CheckReport
from mall.points import service as points_service
from mall.points.tasks import CHECKS as POINTS_CHECKS
from mall.pointsmall import service as pm_service
from mall.pointsmall.models import PointsMallItem, PointsMallRedemption
from mall.pointsmall.tasks import CHECKS
from tests.factories import make_template
from tests.pointsmall.conftest import (
    MakeItem,
    NewMember,
    db_stock,
    drain,
    key,
    redeem,
    redis_stock,
    written,
)


async def _checks_pass(*, pointsmall: bool = True) -> None:
    reports: list[CheckReport] = [
        await POINTS_CHECKS["ledger"](),
        await COUPON_CHECKS["coupons"](),
    ]
    if pointsmall:
        reports.append(await CHECKS["pointsmall"]())
    for report in reports:
        assert report.ok, report.lines


async def _redeem(
    client: httpx.AsyncClient,
    item_id: int,
    headers: dict[str, str],
    idem: dict[str, str] | None = None,
    **body: Any,
) -> httpx.Response:
    """Redeem and run the consumer: the written redemption, or the released reservation."""
    return await redeem(client, item_id, headers, idem, **body)


def _released(r: httpx.Response, reason: str) -> bool:
    return (
        r.status_code == 200
        and r.json()["status"] == "released"
        and (r.json()["release_reason"] == reason)
    )


async def _issued_in_redis(template_id: int) -> int:
    counts = await coupons_service.redis_counts(template_id)
    assert counts is not None
    return counts[0]


async def test_ops_set_only_existing_templates_on_vouchers(
    client: httpx.AsyncClient, ops: dict[str, str], make_item: MakeItem
) -> None:
    template = await make_template()
    base = {"name": "券", "points_price": 100, "total_stock": 5}
    r = await client.post(
        "/api/admin/v1/points-mall/items",
        json={**base, "kind": "voucher", "coupon_template_id": template.id + 999},
        headers=ops,
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "ITEM_COUPON_TEMPLATE_UNKNOWN"
    r = await client.post(
        "/api/admin/v1/points-mall/items",
        json={**base, "kind": "gift", "coupon_template_id": template.id},
        headers=ops,
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "VALIDATION_ERROR"
    assert await PointsMallItem.all().count() == 0

    item = await make_item(kind="voucher", coupon_template_id=template.id)
    assert item["coupon_template_id"] == template.id
    url = f"/api/admin/v1/points-mall/items/{item['id']}"
    r = await client.patch(url, json={"coupon_template_id": template.id + 999}, headers=ops)
    assert r.status_code == 422 and r.json()["error"]["code"] == "ITEM_COUPON_TEMPLATE_UNKNOWN"
    assert (await pm_service.get_item(item["id"])).coupon_template_id == template.id
    # taking the template off brings back the voucher code
    r = await client.patch(url, json={"coupon_template_id": None}, headers=ops)
    assert r.status_code == 200 and r.json()["coupon_template_id"] is None


async def test_redeeming_gives_usable_coupons_once(
    client: httpx.AsyncClient, make_item: MakeItem, new_member: NewMember
) -> None:
    # the template's per-member limit of 1 does not apply: the member paid for them
    template = await make_template(total_quantity=10, per_member_limit=1)
    item = await make_item(kind="voucher", coupon_template_id=template.id, points_price=100)
    member_id, headers = await new_member(points=500)
    idem = key()
    r = await _redeem(client, item["id"], headers, idem, quantity=2)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "issued" and body["voucher_code"] is None
    assert len(body["coupon_ids"]) == 2
    assert await points_service.get_balance(member_id) == 300

    mine = (await client.get("/api/v1/coupons?status=usable", headers=headers)).json()["items"]
    assert sorted(c["id"] for c in mine) == sorted(body["coupon_ids"])
    assert {(c["template_id"], c["source"], c["status"]) for c in mine} == {
        (template.id, "points_mall", "usable")
    }
    shown = await client.get(f"/api/v1/points-mall/redemptions/{body['id']}", headers=headers)
    assert shown.json()["coupon_ids"] == body["coupon_ids"]

    # a replay (same key) through HTTP, and past the idempotency record through the service
    again = await _redeem(client, item["id"], headers, idem, quantity=2)
    assert again.status_code == 200 and again.json()["coupon_ids"] == body["coupon_ids"]
    replay = await pm_service.redeem(member_id, item["id"], 2, None, idem["Idempotency-Key"])
    row = await PointsMallRedemption.get(reservation_id=replay.reservation_id)
    assert row.id == body["id"]
    assert await Coupon.filter(member_id=member_id).count() == 2
    assert await points_service.get_balance(member_id) == 300
    assert await _issued_in_redis(template.id) == 2
    assert await redis_stock(item["id"]) == 8 and await db_stock(item["id"]) == 8
    await _checks_pass()


async def test_sold_out_template_spends_nothing_and_gives_everything_back(
    client: httpx.AsyncClient, make_item: MakeItem, new_member: NewMember
) -> None:
    template = await make_template(total_quantity=1)
    item = await make_item(kind="voucher", coupon_template_id=template.id, points_price=100)
    member_id, headers = await new_member(points=1000)

    # two units, one coupon left: the first grant is rolled back with the rest and the
    # redemption is released with the reason
    r = await _redeem(client, item["id"], headers, quantity=2)
    assert _released(r, "coupon_sold_out"), r.text
    assert await points_service.get_balance(member_id) == 1000
    assert await PointsMallRedemption.exclude(status="released").count() == 0
    assert await Coupon.all().count() == 0
    assert await redis_stock(item["id"]) == 10 and await db_stock(item["id"]) == 10
    assert await _issued_in_redis(template.id) == 0  # the rolled-back win came back
    await _checks_pass()

    # so the last coupon can still be redeemed, and after it the template is sold out
    r = await _redeem(client, item["id"], headers)
    assert written(r), r.text
    r = await _redeem(client, item["id"], headers)
    assert _released(r, "coupon_sold_out"), r.text
    assert await points_service.get_balance(member_id) == 900
    assert await redis_stock(item["id"]) == 9 and await db_stock(item["id"]) == 9
    assert await Coupon.all().count() == 1
    await _checks_pass()


async def test_inactive_template_spends_nothing(
    client: httpx.AsyncClient, make_item: MakeItem, new_member: NewMember
) -> None:
    template = await make_template()
    item = await make_item(kind="voucher", coupon_template_id=template.id, points_price=100)
    await coupons_service.update_template(template.id, {"active": False})
    member_id, headers = await new_member(points=100)
    r = await _redeem(client, item["id"], headers)
    assert _released(r, "coupon_not_claimable"), r.text
    assert await points_service.get_balance(member_id) == 100
    assert await redis_stock(item["id"]) == 10 and await db_stock(item["id"]) == 10
    await _checks_pass()


async def test_failure_after_the_grants_gives_the_coupon_quantity_back(
    client: httpx.AsyncClient, make_item: MakeItem, new_member: NewMember
) -> None:
    """The item row refusing the units (database stock short of Redis) rolls back
    coupons already granted in the savepoint; their template quantity returns. The units
    Redis handed out never existed: they are not given back (the reconciler repairs)."""
    template = await make_template(total_quantity=5)
    item = await make_item(kind="voucher", coupon_template_id=template.id, points_price=100)
    await PointsMallItem.filter(id=item["id"]).update(stock=1)
    member_id, headers = await new_member(points=1000)
    r = await _redeem(client, item["id"], headers, quantity=3)
    assert _released(r, "out_of_stock"), r.text
    assert await points_service.get_balance(member_id) == 1000
    assert await Coupon.all().count() == 0
    assert await _issued_in_redis(template.id) == 0
    assert await redis_stock(item["id"]) == 7
    await _checks_pass(pointsmall=False)  # the forced stock is a mismatch on purpose


async def test_concurrent_redemptions_never_exceed_the_template_quantity(
    client: httpx.AsyncClient, make_item: MakeItem, new_member: NewMember
) -> None:
    template = await make_template(total_quantity=5)
    # more stock than racers, so only the template's quantity decides
    item = await make_item(
        kind="voucher", coupon_template_id=template.id, points_price=100, total_stock=50
    )
    members = await asyncio.gather(*(new_member(points=100) for _ in range(40)))
    responses = await asyncio.gather(
        *(
            client.post(f"/api/v1/points-mall/items/{item['id']}/redeem", json={}, headers=h)
            for _m, h in members
        )
    )
    assert [r.status_code for r in responses] == [202] * 40  # stock decides at once
    await drain()
    rows = await PointsMallRedemption.filter(item_id=item["id"])
    assert sorted(r.status for r in rows) == ["issued"] * 5 + ["released"] * 35
    assert {r.release_reason for r in rows if r.status == "released"} == {"coupon_sold_out"}
    assert await Coupon.filter(template_id=template.id).count() == 5
    assert await _issued_in_redis(template.id) == 5
    balances = [await points_service.get_balance(m) for m, _h in members]
    assert balances.count(0) == 5 and balances.count(100) == 35
    winners = {r.member_id for r in rows if r.status == "issued"}
    holders = set(await Coupon.filter(template_id=template.id).values_list("member_id", flat=True))
    assert holders == winners
    assert await redis_stock(item["id"]) == 45 and await db_stock(item["id"]) == 45
    await _checks_pass()


async def test_cancelling_a_coupon_voucher_redemption_voids_its_coupons(
    client: httpx.AsyncClient, ops: dict[str, str], make_item: MakeItem, new_member: NewMember
) -> None:
    """Members cannot cancel an issued voucher; ops can, and the coupons it issued are
    voided in the same transaction as the points coming back."""
    template = await make_template(total_quantity=10)
    item = await make_item(kind="voucher", coupon_template_id=template.id, points_price=100)
    member_id, headers = await new_member(points=200)
    redemption = (await _redeem(client, item["id"], headers, quantity=2)).json()
    url = f"/points-mall/redemptions/{redemption['id']}/cancel"
    r = await client.post(f"/api/v1{url}", json={}, headers=headers)
    assert r.status_code == 409 and r.json()["error"]["code"] == "REDEMPTION_NOT_CANCELLABLE"

    r = await client.post(f"/api/admin/v1{url}", json={"reason": "客诉"}, headers=ops)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled"
    assert await points_service.get_balance(member_id) == 200
    coupons = await Coupon.filter(id__in=redemption["coupon_ids"])
    assert {c.status for c in coupons} == {"voided"}
    assert all(c.voided_at is not None for c in coupons)
    mine = (await client.get("/api/v1/coupons?status=usable", headers=headers)).json()["items"]
    assert mine == []
    voided = (await client.get("/api/v1/coupons?status=voided", headers=headers)).json()["items"]
    assert sorted(c["id"] for c in voided) == sorted(redemption["coupon_ids"])
    audit = await AuditLog.get(action="pointsmall.redemption.cancel")
    assert audit.detail["voided_coupon_ids"] == redemption["coupon_ids"]
    # again: unchanged
    again = await client.post(f"/api/admin/v1{url}", json={"reason": "客诉"}, headers=ops)
    assert again.status_code == 200 and again.json()["status"] == "cancelled"
    assert await points_service.get_balance(member_id) == 200
    assert await redis_stock(item["id"]) == 10 and await db_stock(item["id"]) == 10
    await _checks_pass()


async def test_a_redemption_whose_coupon_was_used_is_not_cancelled(
    client: httpx.AsyncClient, ops: dict[str, str], make_item: MakeItem, new_member: NewMember
) -> None:
    template = await make_template(total_quantity=10)
    item = await make_item(kind="voucher", coupon_template_id=template.id, points_price=100)
    member_id, headers = await new_member(points=200)
    redemption = (await _redeem(client, item["id"], headers, quantity=2)).json()
    used_id, other_id = redemption["coupon_ids"]
    await coupons_service.lock(used_id, member_id, "order:1")
    url = f"/api/admin/v1/points-mall/redemptions/{redemption['id']}/cancel"
    r = await client.post(url, json={"reason": "客诉"}, headers={**ops, "Accept-Language": "en"})
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "REDEMPTION_COUPON_USED"
    assert r.json()["error"]["details"] == {"status": "locked"}
    assert "unpaid order" in r.json()["error"]["message"]
    await coupons_service.use(used_id, "order:1")
    r = await client.post(url, json={"reason": "客诉"}, headers=ops)
    assert r.json()["error"]["code"] == "REDEMPTION_COUPON_USED"
    assert r.json()["error"]["details"] == {"status": "used"}
    # nothing moved: points spent, stock taken, both coupons as they were
    assert await points_service.get_balance(member_id) == 0
    assert (await PointsMallRedemption.get(id=redemption["id"])).status == "issued"
    assert (await Coupon.get(id=used_id)).status == "used"
    assert (await Coupon.get(id=other_id)).status == "usable"
    assert await db_stock(item["id"]) == 8
    await _checks_pass()


async def test_a_refusal_after_the_spend_in_a_batch_spends_nothing_and_frees_the_points(
    make_item: MakeItem, new_member: NewMember
) -> None:
    """One batch: the member's first redemption (2 coupons, 1 left) is refused after the
    batch spent its points; the pass is run again without it, so the second redemption
    of the same member finds the points the first did not keep, and the ledger has no
    entry of the refused one."""
    template = await make_template(total_quantity=1)
    item = await make_item(kind="voucher", coupon_template_id=template.id, points_price=60)
    member_id, _headers = await new_member(points=150)
    first = await pm_service.redeem(member_id, item["id"], 2, None, "k1")
    second = await pm_service.redeem(member_id, item["id"], 1, None, "k2")
    assert first.status == second.status == "pending"
    assert await drain() == 2
    rows = {r.reservation_id: r for r in await PointsMallRedemption.filter(member_id=member_id)}
    assert rows[first.reservation_id].status == "released"
    assert rows[first.reservation_id].release_reason == "coupon_sold_out"
    assert rows[second.reservation_id].status == "issued"
    assert await points_service.get_balance(member_id) == 90
    spends = await points_service.PointsEntry.filter(member_id=member_id, delta__lt=0)
    assert [e.idempotency_key for e in spends] == [f"pointsmall:redeem:{second.reservation_id}"]
    assert await Coupon.all().count() == 1
    assert await redis_stock(item["id"]) == 9 and await db_stock(item["id"]) == 9
    await _checks_pass()
