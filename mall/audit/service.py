"""Record staff writes; call inside the same transaction as the write itself."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from mall.audit.models import AuditLog
from mall.kit import clock


class Actor(Protocol):
    id: int
    username: str


async def record(actor: Actor | None, action: str, target: str = "", **detail: Any) -> AuditLog:
    return await AuditLog.create(
        staff_id=actor.id if actor else None,
        staff_username=actor.username if actor else "system",
        action=action,
        target=target,
        detail=detail,
    )


async def search(
    *,
    action: str | None = None,
    staff: str | None = None,
    target: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: int | None = None,
    limit: int = 100,
) -> tuple[list[AuditLog], int | None]:
    """Entries newest first, filtered by action, staff username ("system" for jobs),
    target and time [since, until) (a naive time is Shanghai wall time); with the cursor
    (an id) of the next page when there is one."""
    query = AuditLog.all()
    if action:
        query = query.filter(action=action)
    if staff:
        query = query.filter(staff_username=staff)
    if target:
        query = query.filter(target=target)
    if since is not None:
        query = query.filter(created_at__gte=clock.as_utc(since))
    if until is not None:
        query = query.filter(created_at__lt=clock.as_utc(until))
    if cursor is not None:
        query = query.filter(id__lt=cursor)
    rows = list(await query.order_by("-id").limit(limit + 1))
    next_cursor = rows[limit - 1].id if len(rows) > limit else None
    return rows[:limit], next_cursor
