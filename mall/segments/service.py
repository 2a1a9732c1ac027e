"""Segments: evaluate a rule document to the exact set of member ids, keep members'
auto tags fresh, and run campaigns (a subscribe message or a gift pack) to a segment
within the monthly touch cap.

A rule document is evaluated as set algebra over member ids: member columns (level,
points balance) are filtered in SQL; purchases, bindings, birthdays and tags are
gathered per member and intersected in Python. That is exact and dialect-neutral, and
fast enough for the 10k-100k members a brand mall has."""

from __future__ import annotations

import logging
from typing import Any

from tortoise.functions import Count

from mall.audit import service as audit_service
from mall.audit.service import Actor
from mall.config import get_settings
from mall.kit import clock
from mall.members.models import Member
from mall.segments.campaigns import get_campaign as get_campaign
from mall.segments.campaigns import list_campaigns as list_campaigns
from mall.segments.campaigns import recipients_page as recipients_page
from mall.segments.campaigns import run_campaign as run_campaign
from mall.segments.campaigns import run_queued_campaigns as run_queued_campaigns
from mall.segments.campaigns import start_campaign as start_campaign
from mall.segments.evaluation import AUTO_PREFIX as AUTO_PREFIX
from mall.segments.evaluation import CAMPAIGN_NOT_FOUND as CAMPAIGN_NOT_FOUND
from mall.segments.evaluation import CAMPAIGN_PACK_INACTIVE as CAMPAIGN_PACK_INACTIVE
from mall.segments.evaluation import CAMPAIGN_TOUCH_KIND as CAMPAIGN_TOUCH_KIND
from mall.segments.evaluation import OUTCOMES as OUTCOMES
from mall.segments.evaluation import PURCHASED_STATUSES as PURCHASED_STATUSES
from mall.segments.evaluation import SEGMENT_EMPTY as SEGMENT_EMPTY
from mall.segments.evaluation import SEGMENT_INACTIVE as SEGMENT_INACTIVE
from mall.segments.evaluation import SEGMENT_NOT_FOUND as SEGMENT_NOT_FOUND
from mall.segments.evaluation import Purchases as Purchases
from mall.segments.evaluation import _as_date
from mall.segments.evaluation import bound_platforms as bound_platforms
from mall.segments.evaluation import count_segment as count_segment
from mall.segments.evaluation import create_segment as create_segment
from mall.segments.evaluation import evaluate as evaluate
from mall.segments.evaluation import get_segment as get_segment
from mall.segments.evaluation import list_segments as list_segments
from mall.segments.evaluation import member_ids as member_ids
from mall.segments.evaluation import preview as preview
from mall.segments.evaluation import purchases_by_member as purchases_by_member
from mall.segments.evaluation import rules_of as rules_of
from mall.segments.evaluation import update_segment as update_segment
from mall.segments.models import MemberAutoTag

log = logging.getLogger("mall.segments")


# --- auto tags -------------------------------------------------------------------


async def desired_auto_tags() -> set[tuple[int, str]]:
    """(member, tag) pairs the data says now: repeat_buyer, birthday_this_month,
    bound_<platform>."""
    settings = get_settings()
    pairs: set[tuple[int, str]] = set()
    for member_id, p in (await purchases_by_member("all")).items():
        if p.count >= settings.segments_repeat_buyer_min_purchases:
            pairs.add((member_id, "repeat_buyer"))
    month = clock.today().month
    born: list[Any] = await Member.filter(birthday__isnull=False).values_list("id", "birthday")
    pairs |= {(int(m), "birthday_this_month") for m, day in born if _as_date(day).month == month}
    for member_id, names in (await bound_platforms()).items():
        pairs |= {(member_id, f"bound_{name}"[:64]) for name in names}
    # a deleted account keeps its ledgers, but it is profiled no more
    deleted: list[Any] = await Member.filter(deleted_at__isnull=False).values_list("id", flat=True)
    if deleted:
        gone = {int(m) for m in deleted}
        pairs = {(m, t) for m, t in pairs if m not in gone}
    return pairs


async def refresh_auto_tags() -> tuple[int, int, int]:
    """Bring the auto-tag table in line with the data: (added, removed, total). Ops tags
    (`Member.tags`) are never touched."""
    desired = await desired_auto_tags()
    rows: list[Any] = await MemberAutoTag.all().values_list("id", "member_id", "tag")
    existing = {(int(m), str(t)): int(i) for i, m, t in rows}
    stale = [i for pair, i in existing.items() if pair not in desired]
    missing = [pair for pair in desired if pair not in existing]
    for start in range(0, len(stale), 1000):
        await MemberAutoTag.filter(id__in=stale[start : start + 1000]).delete()
    now = clock.now()
    for start in range(0, len(missing), 1000):
        await MemberAutoTag.bulk_create(
            [MemberAutoTag(member_id=m, tag=t, created_at=now) for m, t in missing[start:][:1000]],
            ignore_conflicts=True,
        )
    log.info("auto tags refreshed: +%d -%d total=%d", len(missing), len(stale), len(desired))
    return len(missing), len(stale), len(desired)


async def refresh_auto_tags_now(actor: Actor) -> tuple[int, int, int]:
    """Ops refresh the auto tags instead of waiting for the job (audited)."""
    added, removed, total = await refresh_auto_tags()
    await audit_service.record(
        actor, "segment.auto_tags.refresh", "", added=added, removed=removed, total=total
    )
    return added, removed, total


async def auto_tag_counts() -> list[tuple[str, int]]:
    rows = (
        await MemberAutoTag.all()
        .annotate(n=Count("id"))
        .group_by("tag")
        .order_by("tag")
        .values("tag", "n")
    )
    return [(AUTO_PREFIX + str(r["tag"]), int(r["n"])) for r in rows]


async def auto_tags_of(member_id: int) -> list[str]:
    tags: list[Any] = (
        await MemberAutoTag.filter(member_id=member_id)
        .order_by("tag")
        .values_list("tag", flat=True)
    )
    return [AUTO_PREFIX + str(t) for t in tags]
