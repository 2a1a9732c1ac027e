"""Birthday points: granted at most once per member per year (idempotency key)."""

from __future__ import annotations

from mall.kit import clock
from mall.members.models import Member
from mall.points.ledger import _earn
from mall.points.models import (
    EARN,
    PointsEntry,
)
from mall.points.rules import get_rules

# --- birthday ------------------------------------------------------------------


async def grant_birthday_gifts(batch: int = 500) -> int:
    """Daily job: members whose birthday month it is get their level's gift, once a year."""
    today = clock.today()
    rules = await get_rules()
    granted = 0
    after = 0
    while True:
        members = (
            await Member.filter(birthday__isnull=False, id__gt=after)
            .order_by("id")
            .limit(batch)
            .values("id", "level", "birthday")
        )
        if not members:
            break
        after = members[-1]["id"]
        due = [m for m in members if m["birthday"].month == today.month]
        keys = {m["id"]: f"birthday:{m['id']}:{today.year}" for m in due}
        given = set(
            await PointsEntry.filter(idempotency_key__in=list(keys.values()) or [""]).values_list(
                "idempotency_key", flat=True
            )
        )
        for m in due:
            points = rules.level(m["level"]).birthday_points
            if keys[m["id"]] in given or points <= 0:
                continue
            await _earn(
                m["id"],
                points,
                keys[m["id"]],
                kind=EARN,
                reason="birthday",
                reference=f"birthday:{today.year}",
                expires_at=None,
                growth=0,
            )
            granted += 1
    return granted
