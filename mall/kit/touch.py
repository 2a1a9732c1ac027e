"""The touch cap: at most `touch_cap_per_month` one-to-one touches per member per
Asia/Shanghai calendar month, shared by every kind of message.

Redis decides atomically (one Lua call on `touch:{m:<member>}:<yyyymm>`); the append-only
`TouchLog` keeps the record and re-seeds the counter if Redis lost it. Take a touch before
sending; give it back if the message did not go out."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from mall.config import get_settings
from mall.kit import clock
from mall.redis import script
from mall.touch.models import TouchLog

_TTL_SECONDS = 40 * 24 * 3600


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
    try:
        await TouchLog.create(member_id=member_id, month=month, kind=kind, reference=reference)
    except BaseException:
        await script("mall.touch", "give_back")(keys=[key], args=[])
        raise
    return True


async def give_back_touch(member_id: int, kind: str, reference: str = "") -> None:
    """The message did not go out: the touch does not count."""
    month = month_of()
    await TouchLog.create(
        member_id=member_id, month=month, kind=kind, delta=-1, reference=reference
    )
    await script("mall.touch", "give_back")(keys=[_key(member_id, month)], args=[])
