"""Bounded integers for every id, amount and count a client can send.

Each type fits the column it ends up in, so an out-of-range value is a 422
`VALIDATION_ERROR` from validation, never an `OverflowError` (SQLite) or a
`NumericValueOutOfRange` (PostgreSQL) turned into a 500. Use them on path, query and
body fields alike (`order_id: Id`, `cursor: Cursor | None = None`, `points: Points = 0`);
add a tighter `Field(le=...)` where the domain has its own limit.

The ceilings:
- ids are positive BIGINT (1 .. 2**63-1);
- money is integer fen up to `MAX_FEN` = 10**12 fen (10 billion yuan): far above any
  single amount, yet a million such amounts still sum inside BIGINT;
- points, counts, stock and quantities go up to `MAX_COUNT` = 10**9, which fits the
  32-bit INTEGER columns some of them live in (2**31-1) with room for a few additions."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints

BIGINT_MAX = 2**63 - 1
INT_MAX = 2**31 - 1
MAX_FEN = 10**12
MAX_POINTS = 10**9
MAX_COUNT = 10**9
PAGE_MAX = 100

Id = Annotated[int, Field(ge=1, le=BIGINT_MAX)]
"""A row id (BIGINT primary keys are positive)."""

Fen = Annotated[int, Field(ge=0, le=MAX_FEN)]
"""An amount of money in fen (1 yuan = 100 fen)."""

SignedFen = Annotated[int, Field(ge=-MAX_FEN, le=MAX_FEN)]
"""A signed change of money in fen (adjustments)."""

Points = Annotated[int, Field(ge=0, le=MAX_POINTS)]
SignedPoints = Annotated[int, Field(ge=-MAX_POINTS, le=MAX_POINTS)]

Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
"""A number of units, uses or members; 0 allowed (stock, limits, thresholds)."""

Quantity = Annotated[int, Field(ge=1, le=MAX_COUNT)]
"""A positive number of units."""

SignedCount = Annotated[int, Field(ge=-MAX_COUNT, le=MAX_COUNT)]
"""A signed change of units (stock adjustments)."""

Percent = Annotated[int, Field(ge=0, le=100)]

MemberLevel = Annotated[int, Field(ge=0, le=100)]
"""A member level number (the rules allow levels 0..100)."""

SortOrder = Annotated[int, Field(ge=-1_000_000, le=1_000_000)]
"""A display order (INTEGER columns)."""

Version = Annotated[int, Field(ge=0, le=INT_MAX)]
"""A rules document version (0: nothing saved yet)."""

Limit = Annotated[int, Field(ge=1, le=PAGE_MAX)]
"""A page size."""


def _cursor_fits(value: str) -> str:
    if value and int(value) > BIGINT_MAX:
        raise ValueError("cursor out of range")
    return value


Cursor = Annotated[
    str,
    StringConstraints(max_length=19, pattern=r"^[0-9]*$"),
    AfterValidator(_cursor_fits),
]
"""The `next_cursor` of the previous page: digits that fit BIGINT ("" = first page)."""


def fits_bigint(value: int) -> bool:
    """For ids parsed outside pydantic (raw ASGI paths, cursors in services)."""
    return 1 <= value <= BIGINT_MAX
