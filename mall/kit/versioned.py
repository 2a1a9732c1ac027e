"""Versioned documents (earning rules, referral levels): every save is a new row with
the next version number, the newest is in force, and an edit based on a stale version
is refused by the caller. The model has `version` (unique), `document`, `staff_id` and
`created_at`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from mall.kit import clock


async def latest(model: Any) -> tuple[int, dict[str, Any] | None, datetime | None]:
    """(version, document, saved at) of the newest row; (0, None, None) before any save."""
    row = await model.all().order_by("-version").first()
    if row is None:
        return 0, None, None
    return int(row.version), row.document, row.created_at


async def append(model: Any, *, version: int, document: dict[str, Any], staff: Any) -> bool:
    """Store `version`; False when a concurrent save took that number first."""
    try:
        async with in_transaction():
            await model.create(
                version=version,
                document=document,
                staff_id=getattr(staff, "id", None),
                created_at=clock.now(),
            )
    except IntegrityError:
        return False
    return True
