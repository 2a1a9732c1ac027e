"""Draws through the service: rules, the points spend, the draw log, Redis recovery."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, date, datetime

import pytest

from mall.audit.models import AuditLog
from mall.blindbox import service, stock
from mall.blindbox.models import BlindBoxDraw, BlindBoxPrize
from mall.blindbox.stock import keys as Keys
from mall.blindbox.tasks import check_blindbox
from mall.errors import MallError
from mall.kit import clock
from mall.points import service as points_service
from mall.redis import get_redis
from tests.blindbox.conftest import OPS, MakeMember, MakeSeries, prize

NOON = datetime(2025, 6, 15, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai
LABEL = "20250615"


async def _error(coro: object) -> str:
    with pytest.raises(MallError) as caught:
        await coro  # type: ignore[misc]
    return caught.value.code


async def test_age_rules(make_series: MakeSeries, make_member: MakeMember) -> None:
    clock.set_now(NOON)
    adults_only = await make_series([prize("a", 1)])
    kids_ok = await make_series([prize("a", 1)], allow_minors=True)
    twelve_up = await make_series([prize("a", 1)], allow_minors=True, min_age=12)

    no_birthday = await make_member(birthday=None)
    assert await _error(service.draw(no_birthday.id, kids_ok.id)) == "BIRTHDAY_REQUIRED"
    seven = await make_member(birthday=date(2017, 6, 16))  # turns 8 tomorrow
    assert await _error(service.draw(seven.id, kids_ok.id)) == "AGE_NOT_ALLOWED"
    eight = await make_member(birthday=date(2017, 6, 15))  # 8 today
    assert (await service.draw(eight.id, kids_ok.id)).points_cost == 100
    assert await _error(service.draw(eight.id, twelve_up.id)) == "AGE_NOT_ALLOWED"
    assert await _error(service.draw(eight.id, adults_only.id)) == "MINOR_NOT_ALLOWED"
    almost = await make_member(birthday=date(2007, 6, 16))  # 18 tomorrow
    assert await _error(service.draw(almost.id, adults_only.id)) == "MINOR_NOT_ALLOWED"
    adult = await make_member(birthday=date(2007, 6, 15))  # 18 today
    assert (await service.draw(adult.id, adults_only.id)).prize.name == "a"
    # refusals touch nothing: only the two successful draws exist
    assert await service.drain() == 2
    assert await BlindBoxDraw.all().count() == 2
    assert await get_redis().get(Keys(adults_only.id).seq) == "1"


async def test_a_member_short_of_points_gets_the_draw_released_and_the_unit_back_once(
    make_series: MakeSeries, make_member: MakeMember
) -> None:
    clock.set_now(NOON)
    series = await make_series(
        [prize("a", 3, stock=10), prize("b", 1, "rare", stock=10)],
        daily_draw_cap=5,
        guarantee_tier="rare",
        guarantee_every=50,
    )
    member = await make_member(points=250)  # enough for two draws of 100
    first = await service.draw(member.id, series.id)
    second = await service.draw(member.id, series.id)
    assert (first.status, second.status) == ("pending", "pending")
    assert await service.drain() == 2
    keys = Keys(series.id)
    redis = get_redis()
    before = (
        await redis.hgetall(keys.stock),
        await redis.hget(keys.day(LABEL), str(member.id)),
        await redis.hget(keys.pity, str(member.id)),
    )
    assert before[1] == "2" and second.pity_after == int(before[2] or 0)
    assert sum(int(v) for v in before[0].values()) == 18

    # the request reads no balance: the draw is told at once ...
    third = await service.draw(member.id, series.id)
    assert third.status == "pending" and third.points_cost == 100
    assert (await service.get_draw(member.id, third.draw_id)).status == "pending"
    assert sum(int(v) for v in (await redis.hgetall(keys.stock)).values()) == 17
    assert (await check_blindbox()).ok  # the unit is in the backlog
    # ... and the consumer finds the member short: released, nothing spent, all back
    assert await service.drain() == 1
    after = (
        await redis.hgetall(keys.stock),
        await redis.hget(keys.day(LABEL), str(member.id)),
        await redis.hget(keys.pity, str(member.id)),
    )
    assert after == before
    read = await service.get_draw(member.id, third.draw_id)
    assert (read.status, read.release_reason) == ("released", "not_enough_points")
    assert read.prize == third.prize and read.fulfilment_status is None
    row = await BlindBoxDraw.get(draw_id=third.draw_id)
    assert row.stock_returned and row.status == "released"
    # the give-back happens once, however often it is asked for
    from mall.blindbox.draws import finish_release

    await finish_release(row)
    assert not await service.give_back(row)
    assert await redis.hgetall(keys.stock) == before[0]
    assert await points_service.get_balance(member.id) == 50
    confirmed = await BlindBoxDraw.filter(member_id=member.id, status="confirmed")
    assert {d.draw_id for d in confirmed} == {first.draw_id, second.draw_id}
    mine = await service.get_draw(member.id, first.draw_id)
    assert mine.status == "confirmed" and mine.fulfilment_status == "pending"
    with pytest.raises(MallError) as other:
        await service.get_draw(member.id + 1, first.draw_id)
    assert other.value.code == "DRAW_NOT_FOUND"
    assert (await check_blindbox()).ok


async def test_logged_draws_rederive_including_guaranteed_ones(
    make_series: MakeSeries, make_member: MakeMember
) -> None:
    series = await make_series(
        [prize("a", 900), prize("b", 90, stock=5), prize("c", 10, "secret", stock=3)],
        guarantee_tier="secret",
        guarantee_every=4,
    )
    member = await make_member(points=2000)
    for _ in range(12):
        await service.draw(member.id, series.id)
    await service.drain()
    rows = await BlindBoxDraw.filter(series_id=series.id).order_by("id")
    assert len(rows) == 12
    assert all(service.rederive(row) == row.prize_id for row in rows)
    assert [row.seq for row in rows] == list(range(1, 13))
    modes = Counter(row.probability_table["mode"] for row in rows)
    assert modes["guarantee"] >= 1 and modes["guarantee"] == sum(row.guaranteed for row in rows)
    for row in rows:
        if row.guaranteed:
            assert row.pity_before == 3 and row.tier == "secret"
    # a tampered log does not re-derive to the recorded prize
    row = rows[0]
    other = next(p for p in row.probability_table["prizes"] if p[0] != row.prize_id)
    forged = {
        "random_value": row.random_value,
        "probability_table": {"mode": "normal", "tier": None, "prizes": [other]},
    }
    assert service.rederive(forged) != row.prize_id


async def test_concurrent_draws_never_oversell_and_reconcile(
    make_series: MakeSeries, make_member: MakeMember
) -> None:
    series = await make_series([prize("a", 2, stock=12), prize("b", 1, stock=8)])
    members = [await make_member(points=100) for _ in range(40)]
    results = await asyncio.gather(
        *(service.draw(m.id, series.id) for m in members), return_exceptions=True
    )
    wins = [r for r in results if not isinstance(r, BaseException)]
    losses = Counter(r.code for r in results if isinstance(r, MallError))
    assert len(wins) == 20 and losses == {"SERIES_SOLD_OUT": 20}
    per_prize = Counter(w.prize.name for w in wins)
    assert per_prize == {"a": 12, "b": 8}
    assert (await check_blindbox()).ok  # all 20 in the backlog
    assert await service.drain() == 20
    assert await BlindBoxDraw.filter(series_id=series.id).count() == 20
    assert sorted(await BlindBoxDraw.all().values_list("seq", flat=True)) == list(range(1, 21))
    report = await check_blindbox()
    assert report.ok, report.lines
    # every loser still has their points
    balances = [await points_service.get_balance(m.id) for m in members]
    assert sorted(balances) == [0] * 20 + [100] * 20


async def test_redis_loss_is_rebuilt_from_the_draw_log(
    make_series: MakeSeries, make_member: MakeMember
) -> None:
    clock.set_now(NOON)
    series = await make_series(
        [prize("a", 1, stock=10), prize("b", 1, "rare", stock=10)],
        daily_draw_cap=10,
        guarantee_tier="rare",
        guarantee_every=100,
    )
    member = await make_member(points=1000)
    for _ in range(4):
        await service.draw(member.id, series.id)
    await service.drain()
    keys = Keys(series.id)
    redis = get_redis()
    snapshot = (
        await redis.hgetall(keys.stock),
        await redis.hget(keys.pity, str(member.id)),
        await redis.hget(keys.day(LABEL), str(member.id)),
        await redis.get(keys.seq),
    )
    await redis.flushdb()
    # the next read (or draw) warms the series back from the database
    detail = await service.disclose(series.id, member.id)
    assert sum(p.stock_left or 0 for p in detail.prizes) == 16
    assert detail.me is not None and detail.me.draws_today == 4
    rebuilt = (
        await redis.hgetall(keys.stock),
        await redis.hget(keys.pity, str(member.id)),
        await redis.hget(keys.day(LABEL), str(member.id)),
        await redis.get(keys.seq),
    )
    assert rebuilt == snapshot
    fifth = await service.draw(member.id, series.id)
    assert fifth.seq == 5 and fifth.draws_today == 5
    await service.drain()
    assert (await check_blindbox()).ok


async def test_a_dead_consumers_entries_are_claimed_and_persisted_once(
    make_series: MakeSeries, make_member: MakeMember
) -> None:
    from mall.blindbox.stock import DRAWS

    series = await make_series([prize("a", 1, stock=3)])
    member = await make_member()
    told = [await service.draw(member.id, series.id) for _ in range(2)]
    # a consumer reads the entries and dies before its commit
    read = await DRAWS.read(series.id, "dead", count=10, claim_idle_ms=60_000)
    assert len(read) == 2
    assert await service.process_pending_once("alive", claim_idle_ms=60_000) == 0
    assert (await check_blindbox()).ok  # still the backlog
    assert (await service.get_draw(member.id, told[0].draw_id)).status == "pending"
    # after the idle time another consumer claims them
    assert await service.process_pending_once("alive", claim_idle_ms=0) == 2
    assert await DRAWS.backlog(series.id) == 0
    assert await get_redis().hlen(Keys(series.id).res) == 0
    # a replay of an entry already persisted (a crash before the acknowledgement)
    # makes nothing twice
    from mall.blindbox.draws import persist_batch

    fields = {"rid": told[0].draw_id, "member": str(member.id), "prize": str(told[0].prize.id)}
    assert await persist_batch(series.id, [("1-1", fields)]) == ["1-1"]
    assert await BlindBoxDraw.filter(member_id=member.id).count() == 2
    assert await points_service.get_balance(member.id) == 800
    assert (await check_blindbox()).ok


async def test_reconciler_reports_a_mismatch(make_series: MakeSeries) -> None:
    series = await make_series([prize("a", 1, stock=5), prize("b", 1)])
    assert (await check_blindbox()).ok
    a = await BlindBoxPrize.get(series_id=series.id, name="a")
    await get_redis().hincrby(Keys(series.id).stock, str(a.id), 1)  # a unit from nowhere
    report = await check_blindbox()
    assert not report.ok
    assert any(line.startswith("MISMATCH") and f"prize {a.id}" in line for line in report.lines)


async def test_stock_adjustments_are_audited_and_never_go_below_zero(
    make_series: MakeSeries, make_member: MakeMember
) -> None:
    series = await make_series([prize("a", 1, stock=2), prize("b", 1)])
    a = await BlindBoxPrize.get(series_id=series.id, name="a")
    b = await BlindBoxPrize.get(series_id=series.id, name="b")
    await service.adjust_stock(OPS, series.id, a.id, 5, "second shipment")
    assert (await BlindBoxPrize.get(id=a.id)).stock == 7
    assert await get_redis().hget(Keys(series.id).stock, str(a.id)) == "7"
    with pytest.raises(MallError) as short:
        await service.adjust_stock(OPS, series.id, a.id, -8, "broken")
    assert short.value.code == "STOCK_TOO_LOW" and short.value.params == {"left": 7, "wanted": 8}
    await service.adjust_stock(OPS, series.id, a.id, -7, "recalled")
    assert await _error(service.adjust_stock(OPS, series.id, b.id, 1, "x")) == "PRIZE_UNLIMITED"
    audit = await AuditLog.filter(action="blindbox.prize.stock").order_by("id")
    assert [entry.detail["delta"] for entry in audit] == [5, -7]
    assert audit[0].detail["reason"] == "second shipment"
    # a has none left: every draw now lands on b
    member = await make_member()
    assert (await service.draw(member.id, series.id)).prize.name == "b"
    await service.drain()
    assert (await check_blindbox()).ok


@pytest.mark.clock
async def test_closed_or_out_of_window_series_refuse_draws(
    make_series: MakeSeries, make_member: MakeMember
) -> None:
    clock.set_now(NOON)
    member = await make_member()
    draft = await make_series([prize("a", 1)], status="draft")
    later = await make_series([prize("a", 1)], starts_at=datetime(2025, 6, 16, tzinfo=UTC))
    assert await _error(service.draw(member.id, draft.id)) == "SERIES_NOT_ON_SALE"
    assert await _error(service.draw(member.id, later.id)) == "SERIES_NOT_ON_SALE"
    assert await _error(service.draw(member.id, 999_999)) == "SERIES_NOT_FOUND"
    cards = await service.list_on_offer()
    assert [(c.id, c.is_open) for c in cards] == [(later.id, False)]


async def test_demo_seed_is_idempotent_and_checks_are_discovered() -> None:
    from mall import domains
    from mall.blindbox import demo
    from mall.blindbox.models import BlindBoxSeries
    from mall.members import service as members_service

    await members_service.create_staff("admin", "correct-horse-battery", "admin")
    await demo.seed()
    await demo.seed()
    assert await BlindBoxSeries.filter(name=demo.DEMO_NAME).count() == 1
    detail = (await service.list_on_offer())[0]
    assert detail.is_open and detail.guarantee is not None
    assert "blindbox" in domains.checks()
    assert {"blindbox.give_backs", "blindbox.reconcile"} <= {j.name for j in domains.jobs()}


async def test_the_reconcile_job_repairs_a_drift_that_persists(make_series: MakeSeries) -> None:
    from mall.blindbox.tasks import JOBS

    series = await make_series([prize("a", 1, stock=5), prize("b", 1)])
    a = await BlindBoxPrize.get(series_id=series.id, name="a")
    await get_redis().hincrby(Keys(series.id).stock, str(a.id), -2)  # units lost in Redis
    job = next(j for j in JOBS if j.name == "blindbox.reconcile")
    await job.run()
    assert await get_redis().hget(Keys(series.id).stock, str(a.id)) == "3"  # seen once
    await job.run()
    assert await get_redis().hget(Keys(series.id).stock, str(a.id)) == "5"
    assert (await check_blindbox()).ok


async def test_a_backlog_of_more_draws_than_one_statement_takes_is_reconciled(
    make_series: MakeSeries,
) -> None:
    # the worker down through a busy launch: the draws stream's backlog can hold more
    # draws than one statement's parameters (PostgreSQL: 32,767)
    series = await make_series([prize("a", 1, stock=5), prize("b", 1)])
    b = await BlindBoxPrize.get(series_id=series.id, name="b")
    async with get_redis().pipeline(transaction=False) as pipe:
        for n in range(40_000):
            pipe.xadd(Keys(series.id).draws, {"rid": f"backlog{n}", "prize": str(b.id)})
        await pipe.execute()
    assert (await stock._reading(series)).backlog == 40_000
