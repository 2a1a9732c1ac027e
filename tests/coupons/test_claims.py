"""The claim burst: Redis decides, the database records, the check proves they agree."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from mall.coupons import service
from mall.coupons.models import Coupon
from mall.coupons.tasks import check_coupons
from mall.errors import MallError
from mall.kit import clock
from mall.redis import get_redis
from tests.conftest import MemberLogin
from tests.factories import make_members, make_template


async def _claim(member_id: int, template_id: int) -> str:
    try:
        await service.claim(member_id, template_id)
    except MallError as exc:
        return exc.code
    return "ok"


async def test_1000_concurrent_claims_of_100_issue_exactly_100() -> None:
    template = await make_template(total_quantity=100, per_member_limit=1)
    members = await make_members(1000)
    # 1000 tasks at once; at most 400 hold a Redis connection (the pool allows 512)
    gate = asyncio.Semaphore(400)

    async def one(member_id: int) -> str:
        async with gate:
            return await _claim(member_id, template.id)

    started = time.perf_counter()
    results = await asyncio.gather(*(one(m.id) for m in members))
    elapsed = time.perf_counter() - started
    assert results.count("ok") == 100
    assert set(results) == {"ok", "COUPON_SOLD_OUT"}
    assert await Coupon.filter(template_id=template.id).count() == 100
    assert (
        len(set(await Coupon.filter(template_id=template.id).values_list("member_id", flat=True)))
        == 100
    )
    counts = await service.redis_counts(template.id)
    assert counts is not None and counts[0] == 100 and sum(counts[1].values()) == 100
    report = await check_coupons()
    assert report.ok, report.lines
    assert elapsed < 20, elapsed


async def test_per_member_limit_under_a_burst() -> None:
    template = await make_template(total_quantity=None, per_member_limit=2)
    (member,) = await make_members(1)
    results = await asyncio.gather(*(_claim(member.id, template.id) for _ in range(20)))
    assert results.count("ok") == 2
    assert results.count("COUPON_LIMIT_REACHED") == 18
    assert await Coupon.filter(member_id=member.id).count() == 2


async def test_retried_claim_id_gives_one_coupon_and_gives_back_the_second_win() -> None:
    template = await make_template(per_member_limit=5)
    (member,) = await make_members(1)
    first = await service.claim(member.id, template.id, "key-1")
    again = await service.claim(member.id, template.id, "key-1")
    assert again.id == first.id
    assert await Coupon.filter(template_id=template.id).count() == 1
    counts = await service.redis_counts(template.id)
    assert counts == (1, {member.id: 1})


async def test_failed_database_write_gives_the_win_back() -> None:
    template = await make_template(total_quantity=1)
    with pytest.raises(Exception):  # noqa: B017 - the FK violation's class depends on the driver
        await service.claim(999_999, template.id)  # no such member: the insert fails
    assert await service.redis_counts(template.id) == (0, {})
    (member,) = await make_members(1)
    assert await _claim(member.id, template.id) == "ok"  # the only coupon is still there


async def test_lost_redis_is_reseeded_from_the_database() -> None:
    template = await make_template(total_quantity=3, per_member_limit=1)
    members = await make_members(5)
    assert [await _claim(m.id, template.id) for m in members[:2]] == ["ok", "ok"]
    await get_redis().flushdb()
    assert await _claim(members[0].id, template.id) == "COUPON_LIMIT_REACHED"
    results = [await _claim(m.id, template.id) for m in members[2:]]
    assert results == ["ok", "COUPON_SOLD_OUT", "COUPON_SOLD_OUT"]
    assert await Coupon.filter(template_id=template.id).count() == 3
    assert (await check_coupons()).ok


@pytest.mark.clock
async def test_claim_window_and_switches() -> None:
    now = datetime(2025, 5, 1, 12, tzinfo=UTC)
    clock.set_now(now)
    (member,) = await make_members(1)
    later = await make_template(claim_starts_at=now + timedelta(hours=1))
    over = await make_template(claim_ends_at=now)
    pack_only = await make_template(claimable=False)
    assert await _claim(member.id, later.id) == "COUPON_CLAIM_NOT_STARTED"
    assert await _claim(member.id, over.id) == "COUPON_CLAIM_ENDED"
    assert await _claim(member.id, pack_only.id) == "COUPON_NOT_CLAIMABLE"
    assert await _claim(member.id, 424242) == "COUPON_TEMPLATE_NOT_FOUND"
    clock.advance(timedelta(hours=1))
    assert await _claim(member.id, later.id) == "ok"
    await service.update_template(later.id, {"active": False})
    assert await _claim(member.id, later.id) == "COUPON_NOT_CLAIMABLE"
    assert await Coupon.all().count() == 1


async def test_check_reports_a_mismatch() -> None:
    template = await make_template()
    (member,) = await make_members(1)
    coupon = await service.claim(member.id, template.id)
    await Coupon.filter(id=coupon.id).delete()
    report = await check_coupons()
    assert not report.ok
    assert any("redis issued=1 db rows=0" in line for line in report.lines)


@pytest.mark.clock
async def test_claim_route_is_idempotent_and_lists_by_status(
    client: httpx.AsyncClient, member_headers: MemberLogin
) -> None:
    clock.set_now(datetime(2024, 11, 30, 2, tzinfo=UTC))  # 10:00 on 30 Nov in Shanghai
    template = await make_template(per_member_limit=3)
    headers = await member_headers("claimer")
    key = {**headers, "Idempotency-Key": "claim-abc"}
    first = await client.post(
        "/api/v1/coupons/claim", json={"template_id": template.id}, headers=key
    )
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["last_valid_day"] == "2025-02-28"
    assert body["expires_at"].startswith("2025-02-28T16:00:00")
    again = await client.post(
        "/api/v1/coupons/claim", json={"template_id": template.id}, headers=key
    )
    assert again.json()["id"] == body["id"]
    other = await client.post(
        "/api/v1/coupons/claim", json={"template_id": template.id}, headers=headers
    )
    assert other.status_code == 200
    assert await Coupon.filter(template_id=template.id).count() == 2
    usable = await client.get("/api/v1/coupons?status=usable", headers=headers)
    assert len(usable.json()["items"]) == 2
    # through the whole of 28 Feb (Shanghai), expired from 1 Mar 00:00
    clock.set_now(datetime(2025, 2, 28, 15, 59, 59, tzinfo=UTC))
    headers = await member_headers("claimer")  # a fresh token at the moved clock
    assert (
        len((await client.get("/api/v1/coupons?status=usable", headers=headers)).json()["items"])
        == 2
    )
    clock.advance(timedelta(seconds=1))
    assert (await client.get("/api/v1/coupons?status=usable", headers=headers)).json()[
        "items"
    ] == []
    expired = (await client.get("/api/v1/coupons?status=expired", headers=headers)).json()["items"]
    assert [c["status"] for c in expired] == ["expired", "expired"]
    missing = await client.post(
        "/api/v1/coupons/claim",
        json={"template_id": 9999},
        headers={**headers, "Accept-Language": "en"},
    )
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "COUPON_TEMPLATE_NOT_FOUND"
    zh = await client.post("/api/v1/coupons/claim", json={"template_id": 9999}, headers=headers)
    assert zh.json()["error"]["message"] == "优惠券不存在"
