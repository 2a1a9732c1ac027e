"""A batch of draws is written at once: the points of all in one `spend_many`, the rows
in one insert under one stock guard per prize; a draw refused on the way is released
without leaving anything in the member's points history, and the others still land."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from mall.blindbox import service
from mall.blindbox.models import BlindBoxDraw, BlindBoxPrize, DrawStatus
from mall.blindbox.tasks import check_blindbox
from mall.kit import clock
from mall.points import service as points_service
from mall.points.models import PointsEntry
from tests.blindbox.conftest import MakeMember, MakeSeries, prize


async def _spends(member_id: int) -> int:
    return await PointsEntry.filter(member_id=member_id, reason="blindbox.draw").count()


async def test_one_batch_keeps_the_paid_draws_and_releases_the_short_ones(
    make_series: MakeSeries, make_member: MakeMember
) -> None:
    series = await make_series([prize("plush", 1, stock=20)])
    rich = await make_member(points=300)
    once = await make_member(points=100)  # points for one of its two draws
    broke = await make_member(points=0)
    told = [
        await service.draw(rich.id, series.id, "r1"),
        await service.draw(once.id, series.id, "o1"),
        await service.draw(broke.id, series.id, "b1"),
        await service.draw(rich.id, series.id, "r2"),
        await service.draw(once.id, series.id, "o2"),
    ]
    assert await service.drain() == 5  # one batch
    rows = {r.draw_id: r for r in await BlindBoxDraw.all()}
    status = {d.draw_id: rows[d.draw_id].status for d in told}
    assert [status[d.draw_id] for d in told] == [
        DrawStatus.CONFIRMED, DrawStatus.CONFIRMED, DrawStatus.RELEASED,
        DrawStatus.CONFIRMED, DrawStatus.RELEASED,
    ]  # fmt: skip
    assert rows[told[2].draw_id].release_reason == "not_enough_points"
    assert await points_service.get_balance(rich.id) == 100
    assert await points_service.get_balance(once.id) == 0
    assert (await _spends(rich.id), await _spends(once.id), await _spends(broke.id)) == (2, 1, 0)
    assert (await BlindBoxPrize.get(series_id=series.id)).drawn == 3
    report = await check_blindbox()
    assert report.ok, report.lines


async def test_a_guard_refusal_after_the_spend_leaves_no_points_entry(
    make_series: MakeSeries, make_member: MakeMember
) -> None:
    """The database has fewer units than Redis handed out: the batch's guard refuses,
    each draw then takes its unit alone, and the ones beyond the stock are released
    with nothing spent (the pass is run again without them)."""
    series = await make_series([prize("plush", 1, stock=10)])
    members = [await make_member(points=100) for _ in range(4)]
    told = [await service.draw(m.id, series.id, f"k{i}") for i, m in enumerate(members)]
    await BlindBoxPrize.filter(series_id=series.id).update(stock=2)  # drift
    assert await service.drain() == 4
    rows = await BlindBoxDraw.filter(draw_id__in=[d.draw_id for d in told])
    kept = [r for r in rows if r.status == DrawStatus.CONFIRMED]
    released = [r for r in rows if r.status == DrawStatus.RELEASED]
    assert (len(kept), len(released)) == (2, 2)
    assert {r.release_reason for r in released} == {"oversell_guard"}
    for row in kept:
        assert await _spends(row.member_id) == 1
    for row in released:
        assert await _spends(row.member_id) == 0
        assert await points_service.get_balance(row.member_id) == 100
    assert (await BlindBoxPrize.get(series_id=series.id)).drawn == 2


@pytest.mark.clock
async def test_a_batch_writes_every_column_as_the_orm_did(
    make_series: MakeSeries, make_member: MakeMember
) -> None:
    """The draws are inserted as plain rows: defaults, the clock's created_at, the
    table as JSON, the released draw's reason and fulfilment."""
    moment = datetime(2028, 2, 29, 15, 59, 59, 500000, tzinfo=UTC)  # 23:59:59.5 in Shanghai
    clock.set_now(moment)
    series = await make_series([prize("plush", 1, stock=20)])
    rich = await make_member(points=100)
    broke = await make_member(points=0)
    told = [
        await service.draw(rich.id, series.id, "r1"),
        await service.draw(broke.id, series.id, "b1"),
    ]
    clock.set_now(moment + timedelta(seconds=1))  # persisted on the next day
    assert await service.drain() == 2
    plush = await BlindBoxPrize.get(series_id=series.id)
    rows = {r["member_id"]: r for r in await BlindBoxDraw.filter(series_id=series.id).values()}
    for member, decision in zip((rich, broke), told, strict=True):
        row = rows[member.id]
        assert row["draw_id"] == decision.draw_id and row["seq"] == decision.seq
        assert row["created_at"] == moment + timedelta(seconds=1)
        assert row["business_day"] == date(2028, 2, 29)  # the day it was drawn
        assert (row["prize_id"], row["prize_name"], row["tier"]) == (plush.id, "plush", "common")
        assert (row["value_fen"], row["points_cost"], row["guaranteed"]) == (990, 100, False)
        assert row["probability_table"] == {
            "mode": "normal",
            "tier": None,
            "total": 1,
            "prizes": [[plush.id, "common", 1]],
        }
        assert row["points_entry_key"] == f"blindbox:{decision.draw_id}"
        assert row["mall_order_id"] is None and row["coupon_id"] is None
    paid, short = rows[rich.id], rows[broke.id]
    assert (paid["status"], paid["fulfilment_status"]) == (DrawStatus.CONFIRMED, "pending")
    assert (paid["release_reason"], paid["stock_returned"]) == ("", False)
    assert (short["status"], short["fulfilment_status"]) == (DrawStatus.RELEASED, "none")
    assert short["release_reason"] == "not_enough_points"
    assert short["stock_returned"] is True  # given back after the commit
    assert plush.drawn == 1
    report = await check_blindbox()
    assert report.ok, report.lines


async def test_a_batch_that_fails_as_a_whole_is_written_in_halves(
    make_series: MakeSeries, make_member: MakeMember, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One draw breaks every transaction it is in: the batch of 16 fails, its halves are
    tried and theirs; the other 15 draws are written, the bad one stays pending."""
    from mall.blindbox import draws

    series = await make_series([prize("plush", 1, stock=50)])
    members = [await make_member(points=100) for _ in range(16)]
    told = [await service.draw(m.id, series.id, f"k{m.id}") for m in members]
    bad = told[3].draw_id
    tries: list[int] = []
    real = draws._persist_in_transaction

    async def persist(series_id: int, entries: list[dict[str, str]]) -> Any:
        tries.append(len(entries))
        if any(f["rid"] == bad for f in entries):
            raise RuntimeError("connection reset by peer")
        return await real(series_id, entries)

    monkeypatch.setattr(draws, "_persist_in_transaction", persist)
    assert await draws.process_pending_once(count=16) == 15
    assert len(tries) <= 1 + 2 * 4  # the batch, then about 2 * log2(16); not 1 + 16
    written = {r.draw_id for r in await BlindBoxDraw.all()}
    assert written == {d.draw_id for d in told} - {bad}
    monkeypatch.setattr(draws, "_persist_in_transaction", real)
    assert await draws.process_pending_once(count=16, claim_idle_ms=0) == 1
    assert await BlindBoxDraw.all().count() == 16
    report = await check_blindbox()
    assert report.ok, report.lines
