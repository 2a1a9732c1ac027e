"""Draws answered at once and persisted by the stream consumer: bursts, retries and
consumers racing each other never overdraw stock nor spend points twice, and every
answer told ends in the ledger."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from mall.blindbox import service
from mall.blindbox.models import BlindBoxDraw, BlindBoxPrize
from mall.blindbox.schemas import DrawOut
from mall.blindbox.stock import DRAWS
from mall.blindbox.stock import keys as Keys
from mall.blindbox.tasks import check_blindbox
from mall.errors import MallError
from mall.kit import clock
from mall.points import service as points_service
from mall.points.models import PointsEntry
from mall.redis import get_redis
from tests.blindbox.conftest import MakeMember, MakeSeries, prize


async def test_a_burst_with_racing_consumers_never_overdraws_nor_spends_twice(
    make_series: MakeSeries, make_member: MakeMember
) -> None:
    series = await make_series([prize("a", 2, stock=15), prize("b", 1, stock=10)])
    # 12 members with points for 0..3 draws each, every one tapping 4 times at once
    members = [await make_member(points=100 * (i % 4)) for i in range(12)]
    points = {m.id: 100 * (i % 4) for i, m in enumerate(members)}
    taps = [(m.id, n) for m in members for n in range(4)]

    async def tap(member_id: int, n: int) -> DrawOut | MallError:
        try:
            return await service.draw(member_id, series.id, f"tap-{n}")
        except MallError as exc:
            return exc

    async def consume(name: str) -> int:
        done = 0
        for _round in range(40):
            done += await service.process_pending_once(name, count=5)
            await asyncio.sleep(0)
        return done

    # the burst and three consumers interleave; then a drain finishes the backlog
    results, *_consumed = await asyncio.gather(
        asyncio.gather(*(tap(m, n) for m, n in taps)),
        consume("c1"),
        consume("c2"),
        consume("c3"),
    )
    await service.drain()
    told = [r for r in results if isinstance(r, DrawOut)]
    refused = Counter(r.code for r in results if isinstance(r, MallError))
    # 25 units; a unit released during the burst may be drawn again
    assert len(told) >= 25 and set(refused) == {"SERIES_SOLD_OUT"}
    assert len(told) + sum(refused.values()) == len(taps)
    # a keyed retry of each tap answers the same draw and draws nothing more
    for (member_id, n), result in zip(taps, results, strict=True):
        if isinstance(result, DrawOut):
            again = await service.draw(member_id, series.id, f"tap-{n}")
            assert (again.draw_id, again.prize) == (result.draw_id, result.prize)
    assert await service.drain() == 0

    rows = {row.draw_id: row for row in await BlindBoxDraw.filter(series_id=series.id)}
    assert set(rows) == {t.draw_id for t in told}  # every answer told is recorded, once
    for answer in told:
        assert rows[answer.draw_id].prize_id == answer.prize.id
    confirmed = [row for row in rows.values() if row.status == "confirmed"]
    released = [row for row in rows.values() if row.status == "released"]
    assert {row.release_reason for row in released} <= {"not_enough_points"}
    # points: one spend per confirmed draw, none for a released one, never negative
    spends = await PointsEntry.filter(kind="spend").values_list("idempotency_key", flat=True)
    assert sorted(spends) == sorted(f"blindbox:{row.draw_id}" for row in confirmed)
    for member in members:
        mine = [row for row in confirmed if row.member_id == member.id]
        balance = await points_service.get_balance(member.id)
        assert balance == points[member.id] - 100 * len(mine) >= 0
    # stock: the database's guard and Redis agree, nothing overdrawn
    for p in await BlindBoxPrize.filter(series_id=series.id):
        assert p.drawn == sum(1 for row in confirmed if row.prize_id == p.id) <= (p.stock or 0)
    assert 0 < len(confirmed) <= 25
    assert await DRAWS.backlog(series.id) == 0
    report = await check_blindbox()
    assert report.ok, report.lines


async def test_concurrent_retries_with_one_key_get_one_draw(
    make_series: MakeSeries, make_member: MakeMember
) -> None:
    series = await make_series([prize("a", 1, stock=5), prize("b", 1)])
    member = await make_member(points=1000)
    answers = await asyncio.gather(
        *(service.draw(member.id, series.id, "same-tap") for _ in range(10))
    )
    assert len({(a.draw_id, a.prize.id, a.seq) for a in answers}) == 1
    assert await service.drain() == 1
    assert await points_service.get_balance(member.id) == 900
    # another key is another draw
    other = await service.draw(member.id, series.id, "next-tap")
    assert other.draw_id != answers[0].draw_id
    await service.drain()
    assert await points_service.get_balance(member.id) == 800
    assert (await check_blindbox()).ok


@pytest.mark.clock
async def test_a_keyed_retry_finds_its_draw_across_midnight_and_the_keys_expire(
    make_series: MakeSeries, make_member: MakeMember
) -> None:
    clock.set_now(datetime(2025, 6, 15, 15, 59, 30, tzinfo=UTC))  # 23:59:30 in Shanghai
    series = await make_series([prize("a", 1, stock=5)])
    member = await make_member(points=1000)
    first = await service.draw(member.id, series.id, "late-tap")
    clock.advance(timedelta(minutes=1))  # the next business day
    again = await service.draw(member.id, series.id, "late-tap")
    assert again.draw_id == first.draw_id and again.draws_today == first.draws_today
    keys = Keys(series.id)
    assert 0 < await get_redis().ttl(keys.idem("20250615")) <= 2 * 24 * 3600
    assert await service.drain() == 1
    assert await points_service.get_balance(member.id) == 900
