"""Cursor pagination over descending integer ids (newest first)."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel
from tortoise.queryset import QuerySet

from mall.kit.bounds import fits_bigint

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


async def cursor_page(
    query: QuerySet[Any], cursor: str | None, size: int
) -> tuple[list[Any], str | None]:
    """Rows with id < cursor, newest first, and the cursor of the next page."""
    size = max(1, min(size, 100))
    if cursor:
        # routes declare `Cursor`; this also guards callers that pass a cursor unchecked
        if not (cursor.isascii() and cursor.isdigit() and fits_bigint(int(cursor))):
            from mall.errors import VALIDATION_ERROR

            raise VALIDATION_ERROR(fields=[{"field": "query.cursor", "message": "invalid cursor"}])
        query = query.filter(id__lt=int(cursor))
    rows = await query.order_by("-id").limit(size + 1)
    next_cursor = str(rows[size - 1].id) if len(rows) > size else None
    return list(rows[:size]), next_cursor
