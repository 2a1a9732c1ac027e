"""Ops void a coupon the member never used: one conditional update, audited; a used
coupon, or one an unpaid order holds, cannot be voided."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from mall.audit.models import AuditLog
from mall.coupons import service
from mall.coupons.models import Coupon
from mall.coupons.tasks import check_coupons
from mall.errors import MallError
from mall.kit import clock
from tests.conftest import StaffLogin
from tests.factories import make_members, make_template

ISSUED = datetime(2025, 1, 10, 4, tzinfo=UTC)


async def _coupons(n: int) -> list[Coupon]:
    clock.set_now(ISSUED)
    template = await make_template(per_member_limit=n)
    (member,) = await make_members(1)
    return [await service.claim(member.id, template.id) for _ in range(n)]


async def _void(
    client: httpx.AsyncClient, headers: dict[str, str], coupon_id: int, **extra: str
) -> httpx.Response:
    return await client.post(
        f"/api/admin/v1/coupons/{coupon_id}/void",
        json={"reason": "发错了"},
        headers={**headers, **extra},
    )


async def test_ops_void_an_unused_coupon_once_and_audited(
    client: httpx.AsyncClient, staff_headers: StaffLogin
) -> None:
    ops = await staff_headers("ops")
    usable, other = await _coupons(2)
    r = await _void(client, ops, usable.id)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "voided" and r.json()["void_reason"] == "发错了"
    again = await _void(client, ops, usable.id)
    assert again.status_code == 200 and again.json()["status"] == "voided"
    audits = await AuditLog.filter(action="coupon.void")
    assert len(audits) == 1 and audits[0].target == f"coupon:{usable.id}"
    assert audits[0].detail["before"] == "usable"
    # a voided coupon is gone from what pricing offers and cannot be locked by an order
    offers = await service.offers_for(usable.member_id)
    assert [o.coupon_id for o in offers] == [other.id]
    with pytest.raises(MallError) as err:
        await service.lock(usable.id, usable.member_id, "order-1")
    assert err.value.code == "COUPON_NOT_USABLE"
    # the template still counts it as issued: Redis and the database agree
    assert (await check_coupons()).ok


async def test_a_used_or_locked_coupon_cannot_be_voided(
    client: httpx.AsyncClient, staff_headers: StaffLogin
) -> None:
    ops = await staff_headers("ops")
    locked, used = await _coupons(2)
    await service.lock(locked.id, locked.member_id, "order-1")
    await service.lock(used.id, used.member_id, "order-2")
    await service.use(used.id, "order-2")
    r = await _void(client, ops, used.id)
    assert r.status_code == 409
    assert r.json()["error"] == {
        "code": "COUPON_NOT_VOIDABLE",
        "message": "该优惠券已使用或被未支付的订单占用，不能作废",
        "details": {"status": "used"},
    }
    r = await _void(client, ops, locked.id, **{"Accept-Language": "en"})
    assert r.status_code == 409 and r.json()["error"]["details"] == {"status": "locked"}
    assert "cannot be voided" in r.json()["error"]["message"]
    assert (await Coupon.get(id=used.id)).status == "used"
    assert (await Coupon.get(id=locked.id)).status == "locked"
    assert not await AuditLog.filter(action="coupon.void").exists()
    # the order is cancelled: the coupon comes back and can be voided
    await service.release(locked.id, "order-1")
    assert (await _void(client, ops, locked.id)).json()["status"] == "voided"


async def test_an_expired_coupon_can_be_voided_and_bad_ids_are_clear(
    client: httpx.AsyncClient, staff_headers: StaffLogin
) -> None:
    ops = await staff_headers("ops")
    (coupon,) = await _coupons(1)
    clock.set_now(coupon.expires_at + timedelta(days=1))
    ops = await staff_headers("ops")  # a fresh login at the new time
    assert (await _void(client, ops, coupon.id)).json()["status"] == "voided"
    missing = await _void(client, ops, coupon.id + 1000)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "COUPON_NOT_FOUND"
    huge = await _void(client, ops, 2**63)
    assert huge.status_code == 422
    empty = await client.post(
        f"/api/admin/v1/coupons/{coupon.id}/void", json={"reason": ""}, headers=ops
    )
    assert empty.status_code == 422


async def test_concurrent_voids_change_the_coupon_once() -> None:
    (coupon,) = await _coupons(1)

    class Ops:
        id = 1
        username = "ops"

    results = await asyncio.gather(
        *(service.void(coupon.id, reason="dup", staff=Ops()) for _ in range(5))
    )
    assert {c.status for c in results} == {"voided"}
    assert await AuditLog.filter(action="coupon.void").count() == 1
