"""Growth and member levels: levels follow growth, re-levelled when the rules change."""

from __future__ import annotations

import logging
from datetime import timedelta

from tortoise.transactions import in_transaction

from mall import pricing
from mall.kit import clock
from mall.members import service as members_service
from mall.members.models import Member
from mall.points.ledger import _lock_member, _set_level, owed
from mall.points.models import (
    PointsEntry,
    PointsLot,
)
from mall.points.rules import get_rules, get_rules_version
from mall.points.schemas import (
    Level,
    MemberDayOut,
    NextLevelOut,
    PointsSummaryOut,
)
from mall.redis import get_redis

log = logging.getLogger("mall.points")


# --- growth and levels -----------------------------------------------------------


async def _profile_extra(member: Member) -> dict[str, object]:
    rules = await get_rules()
    return {"level_name": rules.level(member.level).name}


members_service.profile_extras.append(_profile_extra)


async def level_of(member: Member) -> Level:
    """The member's level with its benefits (discount, birthday gift) from the rules."""
    return (await get_rules()).level(member.level)


_RELEVELLED = "points:relevelled_version"


async def relevel_members(batch: int = 500) -> int:
    """Put every member on the level their growth value reaches under the rules in
    force, up or down (a level is a threshold on growth; the price shown and charged
    follow the level). One member at a time, under its lock, each move recorded with
    `reason="rules"`. Idempotent: a second run moves nobody. Returns members moved."""
    version, rules, _at = await get_rules_version()
    bounds = [lv.threshold for lv in rules.levels[1:]] + [None]
    moved = 0
    for lv, upper in zip(rules.levels, bounds, strict=True):
        after = 0
        while True:
            query = Member.filter(
                growth_value__gte=lv.threshold, deleted_at__isnull=True, id__gt=after
            ).exclude(level=lv.level)
            if upper is not None:
                query = query.filter(growth_value__lt=upper)
            ids = [
                int(i)  # type: ignore[call-overload]
                for i in await query.order_by("id").limit(batch).values_list("id", flat=True)
            ]
            if not ids:
                break
            for member_id in ids:
                async with in_transaction():
                    member = await _lock_member(member_id)
                    target = rules.level_for(member.growth_value).level
                    if await _set_level(member, target, reason="rules", rules_version=version):
                        moved += 1
            after = ids[-1]
    if moved:
        log.info("re-levelled %s members for rules version %s", moved, version)
    return moved


async def relevel_if_rules_changed() -> int | None:
    """The re-levelling job: runs `relevel_members` once per rules version (a marker in
    Redis; if it is lost the next run re-checks everyone, which moves nobody twice).
    None when the version in force was done already."""
    version, _rules, _at = await get_rules_version()
    redis = get_redis()
    if await redis.get(_RELEVELLED) == str(version):
        return None
    moved = await relevel_members()
    await redis.set(_RELEVELLED, str(version))
    return moved


async def summary(member_id: int) -> PointsSummaryOut:
    member = await members_service.get_member(member_id)
    rules = await get_rules()
    now = clock.now()
    soon = await PointsLot.filter(
        member_id=member_id, remaining__gt=0, expires_at__lte=now + timedelta(days=30)
    ).order_by("expires_at")
    level = rules.level(member.level)
    nxt = next((lv for lv in rules.levels if lv.level == member.level + 1), None)
    # the same PricingRules the catalog and checkout charge with
    prices = rules.pricing_rules()
    basis, percents = pricing.member_rates(member.level, now, prices)
    return PointsSummaryOut(
        balance=member.points_balance,
        expiring_soon=sum(lot.remaining for lot in soon),
        expiring_soon_at=soon[0].expires_at if soon else None,
        level=member.level,
        level_name=level.name,
        discount_percent=pricing.percent_for_level(prices.level_percent_by_level, member.level),
        member_day=MemberDayOut(
            day_of_month=prices.member_day_of_month,
            next_date=pricing.next_member_day(now, prices),
            today=pricing.is_member_day(now, prices),
            percent=pricing.percent_for_level(prices.member_day_percent_by_level, member.level),
            policy=prices.member_day_policy,
        ),
        price_basis_today=basis,
        price_percents_today=percents,
        points_per_yuan=prices.points_per_yuan,
        points_max_share_percent=prices.points_max_share_percent,
        points_worth_fen=max(member.points_balance, 0) * 100 // prices.points_per_yuan,
        points_owed=await owed(member_id),
        growth_value=member.growth_value,
        next_level=NextLevelOut(
            level=nxt.level,
            name=nxt.name,
            threshold=nxt.threshold,
            growth_needed=max(nxt.threshold - member.growth_value, 0),
        )
        if nxt
        else None,
    )


async def ledger_page(
    member_id: int, cursor: str | None, size: int
) -> tuple[list[PointsEntry], str | None]:
    from mall.kit.pagination import cursor_page

    return await cursor_page(PointsEntry.filter(member_id=member_id), cursor, size)
