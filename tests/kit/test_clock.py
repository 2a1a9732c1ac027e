"""Shanghai calendar periods as UTC instants, and datetimes stored as UTC text on SQLite."""

from __future__ import annotations

import importlib
from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace

import pytest
from tortoise import connections

from mall.kit import clock, dbtime
from mall.members.models import Member

pytestmark = pytest.mark.clock


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.nodb
def test_day_and_month_bounds_are_utc() -> None:
    start, end = clock.local_day_bounds_utc(date(2026, 12, 1))
    assert (start, end) == (_utc(2026, 11, 30, 16), _utc(2026, 12, 1, 16))
    assert start.utcoffset() == timedelta(0) and end.utcoffset() == timedelta(0)
    assert clock.start_of_local_day(date(2027, 1, 1)) == _utc(2026, 12, 31, 16)
    assert clock.start_of_local_day(date(2027, 1, 1)).tzinfo is UTC
    # 29 February of a leap year, and the month around it
    assert clock.local_month_bounds_utc(date(2028, 2, 29)) == (
        _utc(2028, 1, 31, 16),
        _utc(2028, 2, 29, 16),
    )
    assert clock.local_month_bounds_utc(date(2026, 12, 31)) == (
        _utc(2026, 11, 30, 16),
        _utc(2026, 12, 31, 16),
    )
    assert clock.next_month_start(date(2028, 1, 31)) == date(2028, 2, 1)
    assert clock.next_month_start(date(2026, 12, 1)) == date(2027, 1, 1)
    assert clock.local_days_bounds_utc(date(2028, 2, 28), date(2028, 2, 29)) == (
        _utc(2028, 2, 27, 16),
        _utc(2028, 2, 29, 16),
    )
    # ISO week: Wednesday 1 March 2028 is in the week of Monday 28 February
    assert clock.local_week_bounds_utc(date(2028, 3, 1)) == (
        _utc(2028, 2, 27, 16),
        _utc(2028, 3, 5, 16),
    )


@pytest.mark.nodb
def test_as_utc_reads_naive_as_shanghai() -> None:
    assert clock.as_utc(datetime(2026, 12, 1, 2, 47)) == _utc(2026, 11, 30, 18, 47)
    assert clock.as_utc(datetime(2026, 12, 1, 2, 47)).tzinfo is UTC
    shanghai = datetime(2026, 12, 1, 2, 47, tzinfo=clock.SHANGHAI)
    assert clock.as_utc(shanghai) == shanghai and clock.as_utc(shanghai).tzinfo is UTC


@pytest.mark.nodb
def test_frozen_at_restores_the_clock_it_found() -> None:
    outer = _utc(2028, 2, 29, 15, 59)
    clock.set_now(outer)
    with clock.frozen_at(_utc(2025, 1, 1)):
        assert clock.now() == _utc(2025, 1, 1)
    assert clock.now() == outer  # a frozen clock stays frozen where it was
    clock.reset()
    clock.advance(timedelta(days=3))
    with clock.frozen_at(_utc(2025, 1, 1)):
        pass
    assert clock.now() - datetime.now(UTC) > timedelta(days=2, hours=23)  # running, offset kept


@pytest.mark.nodb
def test_sqlite_text_of_a_datetime_is_utc_and_sorts_in_time_order() -> None:
    shanghai = datetime(2026, 12, 1, 0, 0, tzinfo=clock.SHANGHAI)
    assert dbtime.to_text(shanghai) == "2026-11-30 16:00:00+00:00"
    moments = [
        _utc(2026, 11, 30, 15, 59, 59, 999999),
        shanghai,
        _utc(2026, 11, 30, 16, 0, 0, 1),
        datetime(2026, 12, 1, 2, 41, tzinfo=clock.SHANGHAI),
        _utc(2026, 11, 30, 18, 41, 0, 500000),
    ]
    texts = [dbtime.to_text(m) for m in moments]
    assert len(set(texts)) == len(moments)
    assert sorted(texts) == [dbtime.to_text(m) for m in sorted(moments)]
    # the last conversion is kept for the same object only (a batch's one `created_at`)
    for m, text in zip(moments * 2, texts * 2, strict=True):
        assert dbtime.to_text(m) == dbtime.to_text(m) == text


async def test_a_bound_in_shanghai_time_counts_the_early_hours_of_the_day() -> None:
    """A member who joined at 02:41 on 1 Dec (Shanghai) joined in December: on SQLite the
    stored text and the bound were compared with different offsets before."""
    joined = datetime(2026, 12, 1, 2, 41, tzinfo=clock.SHANGHAI)
    early = await Member.create(openid="o-early", nickname="early")
    late_nov = await Member.create(openid="o-nov", nickname="nov")
    await Member.filter(id=early.id).update(created_at=joined)
    await Member.filter(id=late_nov.id).update(
        created_at=datetime(2026, 11, 30, 23, 59, tzinfo=clock.SHANGHAI)
    )
    since, until = clock.local_month_bounds_utc(date(2026, 12, 1))
    december = Member.filter(created_at__gte=since, created_at__lt=until)
    assert [m.id for m in await december] == [early.id]
    # bounds given in Shanghai time compare the same
    local_since = datetime(2026, 12, 1, tzinfo=clock.SHANGHAI)
    assert await Member.filter(created_at__gte=local_since).count() == 1
    assert (await Member.get(id=early.id)).created_at == joined
    conn = connections.get("default")
    if conn.capabilities.dialect == "sqlite":
        _n, rows = await conn.execute_query(
            "SELECT created_at FROM member WHERE id = ?", [early.id]
        )
        assert rows[0][0] == "2026-11-30 18:41:00+00:00"


async def test_created_at_follows_the_mall_clock() -> None:
    """auto_now fields come from `mall.kit.clock`, like every other time the mall records."""
    moment = datetime(2028, 2, 29, 23, 59, tzinfo=clock.SHANGHAI)
    clock.set_now(moment)
    member = await Member.create(openid="o-leap", nickname="leap")
    assert member.created_at == moment
    assert (await Member.get(id=member.id)).created_at == moment
    february = clock.local_month_bounds_utc(date(2028, 2, 1))
    assert await Member.filter(created_at__gte=february[0], created_at__lt=february[1]).exists()


async def test_migration_rewrites_sqlite_datetimes_written_with_an_offset() -> None:
    """Rows an older version wrote at +08:00 (or without an offset) become UTC text."""
    migration = importlib.import_module("mall.migrations.0005_utc_datetimes")
    conn = connections.get("default")
    member = await Member.create(openid="o-old", nickname="old")
    if conn.capabilities.dialect != "sqlite":  # timestamptz: nothing to rewrite
        await migration.datetimes_to_utc_text(None, SimpleNamespace(client=conn))
        return
    await conn.execute_query(
        "UPDATE member SET created_at = ?, updated_at = ? WHERE id = ?",
        ["2026-11-30 23:59:00+08:00", "2026-12-01 02:41:00.5", member.id],
    )
    # a November sign-up whose text sorts into December
    since, until = clock.local_month_bounds_utc(date(2026, 12, 1))
    december = Member.filter(created_at__gte=since, created_at__lt=until)
    assert await december.exists()
    await migration.datetimes_to_utc_text(None, SimpleNamespace(client=conn))
    _n, rows = await conn.execute_query(
        "SELECT created_at, updated_at FROM member WHERE id = ?", [member.id]
    )
    assert tuple(rows[0]) == ("2026-11-30 15:59:00+00:00", "2026-12-01 02:41:00.500000+00:00")
    assert not await december.exists()
