"""Subscribe-message grants: recorded when the member accepts, used one per message,
zeroed when WeChat says the member refused (43101)."""

from __future__ import annotations

from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.expressions import F

from mall.kit import clock
from mall.touch.models import SubscribeGrant


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
