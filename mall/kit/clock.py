"""The one source of time. Tests move it with `set_now`/`advance`; the business day
is the Asia/Shanghai calendar day.

Instants are UTC-aware everywhere they are stored or compared: SQLite keeps datetimes as
text, so a bound written with +08:00 compares wrong against a row written in UTC. Day,
week and month bounds are Shanghai calendar periods given as UTC instants, [start, end)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")

_frozen: datetime | None = None
_offset = timedelta(0)


def now() -> datetime:
    """Current time, timezone-aware (UTC)."""
    if _frozen is not None:
        return _frozen
    return datetime.now(UTC) + _offset


def local_now() -> datetime:
    return now().astimezone(SHANGHAI)


def today() -> date:
    """The business day (Asia/Shanghai)."""
    return local_now().date()


def set_now(moment: datetime | None) -> None:
    """Freeze time at `moment` (aware), or unfreeze with None."""
    global _frozen
    if moment is not None and moment.tzinfo is None:
        raise ValueError("set_now needs an aware datetime")
    _frozen = moment


def advance(delta: timedelta) -> None:
    global _frozen, _offset
    if _frozen is not None:
        _frozen = _frozen + delta
    else:
        _offset += delta


def reset() -> None:
    global _frozen, _offset
    _frozen = None
    _offset = timedelta(0)


@contextmanager
def frozen_at(moment: datetime) -> Iterator[None]:
    """Freeze time at `moment` for the block, then restore the clock as it was (frozen
    or running), so a helper that moves time does not undo a test's own frozen clock."""
    saved = (_frozen, _offset)
    set_now(moment)
    try:
        yield
    finally:
        _restore(*saved)


def _restore(frozen: datetime | None, offset: timedelta) -> None:
    global _frozen, _offset
    _frozen, _offset = frozen, offset


# --- Shanghai calendar periods as UTC instants -------------------------------------


def as_utc(moment: datetime) -> datetime:
    """`moment` as UTC; a naive one is read as Asia/Shanghai wall time (what staff type)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=SHANGHAI)
    return moment.astimezone(UTC)


def start_of_local_day(day: date) -> datetime:
    """The instant (UTC) the Shanghai calendar day `day` begins."""
    return datetime(day.year, day.month, day.day, tzinfo=SHANGHAI).astimezone(UTC)


def local_day_bounds_utc(day: date) -> tuple[datetime, datetime]:
    """[start, end) of the Shanghai day `day`, in UTC."""
    return start_of_local_day(day), start_of_local_day(day + timedelta(days=1))


def local_days_bounds_utc(first: date, last: date) -> tuple[datetime, datetime]:
    """[start, end) of the Shanghai days `first` through `last` (inclusive), in UTC."""
    return start_of_local_day(first), start_of_local_day(last + timedelta(days=1))


def month_start(day: date) -> date:
    return day.replace(day=1)


def next_month_start(day: date) -> date:
    """The first day of the month after the one `day` is in."""
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


def local_month_bounds_utc(day: date) -> tuple[datetime, datetime]:
    """[start, end) of the Shanghai calendar month `day` is in, in UTC."""
    return start_of_local_day(month_start(day)), start_of_local_day(next_month_start(day))


def local_week_bounds_utc(day: date) -> tuple[datetime, datetime]:
    """[start, end) of the ISO week (Monday first, Shanghai) `day` is in, in UTC."""
    monday = day - timedelta(days=day.weekday())
    return start_of_local_day(monday), start_of_local_day(monday + timedelta(days=7))
