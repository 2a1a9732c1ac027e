"""Record staff writes; call inside the same transaction as the write itself."""

from __future__ import annotations

from typing import Any, Protocol

from mall.audit.models import AuditLog


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


async def recent(limit: int = 100, action: str | None = None) -> list[AuditLog]:
    query = AuditLog.all()
    if action:
        query = query.filter(action=action)
    return await query.order_by("-id").limit(limit)
