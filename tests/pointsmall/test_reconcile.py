"""A crash between the Lua and the database write must not leak stock."""

from __future__ import annotations

from datetime import timedelta

from mall.config import get_settings
from mall.kit import clock
from mall.members import service as members_service
from mall.pointsmall import redeem
from mall.pointsmall import service as pm_service
from mall.pointsmall.tasks import CHECKS, JOBS
from mall.redis import get_redis
from tests.pointsmall.conftest import MakeItem, NewMember, db_stock, redis_stock


async def test_reservation_never_written_is_returned_after_expiry(
    make_item: MakeItem, new_member: NewMember
) -> None:
    item_row = await make_item(total_stock=5, points_price=100, limit_per_member=1)
    item = await pm_service.get_item(item_row["id"])
    lost_member, _h = await new_member(points=1000)
    late_member, _h2 = await new_member(points=1000)
    # 1: the process died right after the Lua: no database row
    await redeem._reserve(item, lost_member, 1, "r-lost")
    # 2: the process died after the commit, before the confirming Lua
    label = await redeem._reserve(item, late_member, 1, "r-late")
    await redeem._write(item, late_member, 1, 100, "r-late", label, None)
    assert await redis_stock(item.id) == 3 and await db_stock(item.id) == 4

    # in flight, not expired: counted as pending, the check agrees, nothing returned
    report = await CHECKS["pointsmall"]()
    assert report.ok, report.lines
    result = await pm_service.reconcile()
    assert result.returned == 0 and result.confirmed == 0
    assert await redis_stock(item.id) == 3

    clock.advance(timedelta(seconds=get_settings().pointsmall_reservation_ttl_seconds + 1))
    result = await pm_service.reconcile()
    assert result.returned == 1 and result.confirmed == 1 and not result.mismatches
    assert await redis_stock(item.id) == 4 and await db_stock(item.id) == 4
    buyers = await get_redis().hgetall(f"{{pm:{item.id}}}:buyers")
    assert buyers == {str(late_member): "1"}  # the lost member's limit is back
    assert await get_redis().zcard(f"{{pm:{item.id}}}:resv") == 0
    report = await CHECKS["pointsmall"]()
    assert report.ok, report.lines
    # the lost member can redeem now
    member = await members_service.get_member(lost_member)
    await pm_service.redeem(member, item.id, 1, None, "again")
    assert await redis_stock(item.id) == 3


async def test_check_reports_drift_and_the_job_repairs_it_when_it_persists(
    make_item: MakeItem,
) -> None:
    item = await make_item(total_stock=5)
    await get_redis().set(f"{{pm:{item['id']}}}:stock", 7)  # e.g. a lost cancellation
    report = await CHECKS["pointsmall"]()
    assert not report.ok
    assert any("redis stock 7" in line for line in report.lines)
    job = next(j for j in JOBS if j.name == "pointsmall.reconcile")
    first = await pm_service.reconcile()
    assert first.mismatches and not first.repaired  # seen once: could be a write in flight
    await job.run()
    assert await redis_stock(item["id"]) == 5
    assert (await CHECKS["pointsmall"]()).ok
