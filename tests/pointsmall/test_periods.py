"""Per-period redemption limits follow the Asia/Shanghai calendar at any hour: the limit
holds to the last minute of a day, ISO week or month (also after Redis lost its counters)
and opens again at 00:00 of the next one."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

import pytest

from mall.errors import MallError
from mall.kit import clock
from mall.pointsmall import service as pm_service
from mall.redis import get_redis
from tests.pointsmall.conftest import MakeItem, NewMember, redeem_as

pytestmark = pytest.mark.clock

LIMITED = "REDEEM_PERIOD_LIMIT_REACHED"

# (period, a minute before the period ends in Shanghai)
EDGES = [
    ("day", "2026-11-30T23:59:00+08:00"),
    ("week", "2027-01-03T23:59:00+08:00"),  # a Sunday; the ISO week spans the new year
    ("month", "2028-02-29T23:59:00+08:00"),
    ("month", "2026-12-31T23:59:00+08:00"),
]


async def _redeem(item_id: int, member_id: int) -> str:
    """Through the service (the moved clock would outlive an access token): "ok" or the
    error code."""
    try:
        row = await redeem_as(member_id, item_id, key=secrets.token_hex(8))
    except MallError as exc:
        return exc.code
    return "ok" if row.status == "issued" else row.status


@pytest.mark.parametrize(("period", "last_minute"), EDGES)
async def test_period_limit_opens_at_shanghai_midnight(
    period: str,
    last_minute: str,
    make_item: MakeItem,
    new_member: NewMember,
) -> None:
    item = await make_item(total_stock=10, limit_per_period=1, limit_period=period)
    clock.set_now(datetime.fromisoformat(last_minute))  # after the ops token was issued
    member_id, _headers = await new_member(points=1000)
    assert await _redeem(item["id"], member_id) == "ok"
    assert await _redeem(item["id"], member_id) == LIMITED
    # the counter outlives the period in Redis
    label = pm_service.period_label(period, clock.now())
    ttl = await get_redis().ttl(pm_service.period_key(item["id"], label))
    assert ttl > 60
    # counters rebuilt from the database count this period's redemption
    await get_redis().flushdb()
    assert await _redeem(item["id"], member_id) == LIMITED

    clock.advance(timedelta(seconds=59))  # 23:59:59 still
    assert await _redeem(item["id"], member_id) == LIMITED
    clock.advance(timedelta(seconds=1))  # 00:00:00, a new period
    assert await _redeem(item["id"], member_id) == "ok"
    assert await _redeem(item["id"], member_id) == LIMITED


@pytest.mark.parametrize("period", ["day", "week", "month"])
async def test_period_limit_at_the_runs_clock(
    period: str, make_item: MakeItem, new_member: NewMember
) -> None:
    """At the clock the run starts with (MALL_TEST_NOW in .ci/run): the limit holds
    within the period and the Redis counter lives at least to its end."""
    item = await make_item(total_stock=10, limit_per_period=1, limit_period=period)
    member_id, _headers = await new_member(points=1000)
    assert await _redeem(item["id"], member_id) == "ok"
    await get_redis().flushdb()
    assert await _redeem(item["id"], member_id) == LIMITED
    day = clock.today()
    bounds = {
        "day": clock.local_day_bounds_utc,
        "week": clock.local_week_bounds_utc,
        "month": clock.local_month_bounds_utc,
    }[period](day)
    label = pm_service.period_label(period, clock.now())
    ttl = await get_redis().ttl(pm_service.period_key(item["id"], label))
    assert ttl >= (bounds[1] - clock.now()).total_seconds()
