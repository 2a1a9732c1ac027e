"""One-to-one touches.

Subscribe-message grants: recorded when the member accepts, used one per message,
zeroed when WeChat says the member refused (43101).

The touch cap: at most `touch_cap_per_month` one-to-one touches per member per
Asia/Shanghai calendar month, shared by every kind of message. Redis decides atomically
(one Lua call on `touch:{m:<member>}:<yyyymm>`); the append-only `TouchLog` keeps the
record and re-seeds the counter if Redis lost it. Take a touch before sending; give it
back if the message did not go out."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.expressions import F

from mall.config import get_settings
from mall.kit import clock, tx
from mall.redis import script
from mall.touch.models import SubscribeGrant, TouchLog

_TTL_SECONDS = 40 * 24 * 3600


async def record_grants(member_id: int, template_ids: list[str]) -> list[SubscribeGrant]:
    """One more allowed message per accepted template."""
    for template_id in dict.fromkeys(template_ids):
        for _attempt in range(3):
            updated = await SubscribeGrant.filter(
                member_id=member_id, template_id=template_id
            ).update(remaining=F("remaining") + 1, refused_at=None)
            if updated:
                break
            try:
                await SubscribeGrant.create(
                    member_id=member_id, template_id=template_id, remaining=1
                )
                break
            except IntegrityError:  # created concurrently: add to it instead
                continue
    return await grants_of(member_id)


async def grants_of(member_id: int) -> list[SubscribeGrant]:
    return await SubscribeGrant.filter(member_id=member_id).order_by("template_id")


async def members_with_grant(template_id: str, member_ids: list[int]) -> set[int]:
    rows: list[Any] = await SubscribeGrant.filter(
        template_id=template_id, member_id__in=member_ids, remaining__gt=0
    ).values_list("member_id", flat=True)
    return {int(m) for m in rows}


async def use_grant(member_id: int, template_id: str) -> bool:
    """Take one allowed message; False when none is left."""
    updated = await SubscribeGrant.filter(
        member_id=member_id, template_id=template_id, remaining__gt=0
    ).update(remaining=F("remaining") - 1)
    return bool(updated)


async def give_back_grant(member_id: int, template_id: str) -> None:
    await SubscribeGrant.filter(
        member_id=member_id, template_id=template_id, refused_at__isnull=True
    ).update(remaining=F("remaining") + 1)


async def refused(member_id: int, template_id: str) -> None:
    """WeChat answered 43101: the member refused or has no subscription left; stop."""
    await SubscribeGrant.filter(member_id=member_id, template_id=template_id).update(
        remaining=0, refused_at=clock.now()
    )


# --- the monthly touch cap ----------------------------------------------------------


def month_of(moment: datetime | None = None) -> str:
    local = (moment or clock.now()).astimezone(clock.SHANGHAI)
    return f"{local.year:04d}{local.month:02d}"


def _key(member_id: int, month: str) -> str:
    return f"touch:{{m:{member_id}}}:{month}"


async def touches_in(member_id: int, month: str) -> int:
    """Touches recorded in the log for one member and month."""
    deltas: list[Any] = await TouchLog.filter(member_id=member_id, month=month).values_list(
        "delta", flat=True
    )
    return max(sum(int(d) for d in deltas), 0)


async def try_touch(member_id: int, kind: str, reference: str = "") -> bool:
    """Take one of this month's touches for the member; False when the cap is reached."""
    month = month_of()
    key = _key(member_id, month)
    cap = get_settings().touch_cap_per_month
    take = script("mall.touch", "take")
    result = int(await take(keys=[key], args=[cap, _TTL_SECONDS, ""]))
    if result == -1:
        seed = await touches_in(member_id, month)
        result = int(await take(keys=[key], args=[cap, _TTL_SECONDS, seed]))
    if result != 1:
        return False
    async with tx.transaction():
        # the Redis count goes back if the log row (or a caller's transaction) rolls back
        await tx.on_rollback(lambda: script("mall.touch", "give_back")(keys=[key], args=[]))
        await TouchLog.create(member_id=member_id, month=month, kind=kind, reference=reference)
    return True


async def give_back_touch(member_id: int, kind: str, reference: str = "") -> None:
    """The message did not go out: the touch does not count."""
    month = month_of()
    await TouchLog.create(
        member_id=member_id, month=month, kind=kind, delta=-1, reference=reference
    )
    await script("mall.touch", "give_back")(keys=[_key(member_id, month)], args=[])
