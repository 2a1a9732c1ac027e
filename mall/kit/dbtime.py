"""Time as the database sees it: one clock, and UTC text on SQLite.

- SQLite keeps datetimes as text and compares them as text. Tortoise writes an aware
  datetime with its own offset (`isoformat(" ")`), so a bound at 00:00+08:00 sorts after
  a row at 18:41+00:00 the evening before, though it is earlier. Writing every aware
  datetime as UTC, in one place at the driver, gives stored values and the values in
  filters one format whose text order is time order. (PostgreSQL stores `timestamptz`.)
- Tortoise fills `auto_now` / `auto_now_add` fields from the system clock; they follow
  `mall.kit.clock` instead, so `created_at` agrees with every other time the mall records
  (and with a test's frozen clock)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

from mall.kit import clock

_installed: set[str] = set()

# the last datetime converted and its text: `insert_rows` gives every row of a batch the
# same `created_at` object, so a consumer's batch converts it once, not once per row
_last: tuple[datetime, str] | None = None


def to_text(value: datetime) -> str:
    """SQLite's text of a datetime: an aware one in UTC, `YYYY-MM-DD HH:MM:SS[.ffffff]+00:00`
    (`+` sorts before `.`, so a whole second still sorts before its fractions)."""
    global _last
    last = _last
    if last is not None and last[0] is value:  # datetimes are immutable
        return last[1]
    text = (value.astimezone(UTC) if value.tzinfo is not None else value).isoformat(" ")
    _last = (value, text)
    return text


def _clock_now() -> datetime:
    return clock.now()


def install(*, sqlite: bool) -> None:
    """Idempotent; called by `mall.db.tortoise_config`."""
    if "clock" not in _installed:
        from tortoise import timezone

        # `timezone.localtime()` (auto_now fields) reads the module's `now` at call time
        timezone.now = _clock_now
        _installed.add("clock")
    if sqlite and "sqlite" not in _installed:
        # Tortoise registers its own adapter when its SQLite executor is imported: import
        # it first, so ours replaces it
        import tortoise.backends.sqlite.executor  # noqa: F401

        sqlite3.register_adapter(datetime, to_text)
        _installed.add("sqlite")
