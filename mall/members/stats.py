"""Read-only figures about members, for the ops dashboard."""

from __future__ import annotations

from datetime import datetime

from mall.members.models import Member


async def member_count() -> int:
    return await Member.all().count()


async def joined_between(since: datetime, until: datetime) -> int:
    """Members who signed up in [since, until)."""
    return await Member.filter(created_at__gte=since, created_at__lt=until).count()
