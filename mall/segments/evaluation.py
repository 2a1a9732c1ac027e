"""Segment rules evaluated to the exact set of member ids, and segments themselves (CRUD).

A rule document is evaluated as set algebra over member ids: member columns (level,
points balance) are filtered in SQL; purchases, bindings, birthdays and tags are
gathered per member and intersected in Python. That is exact and dialect-neutral, and
fast enough for the 10k-100k members a brand mall has. Also home of the segments error
codes (defined once; re-exported by mall.segments.service)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from tortoise.functions import Count, Max
from tortoise.transactions import in_transaction

from mall.audit import service as audit_service
from mall.audit.service import Actor
from mall.errors import ErrorCode
from mall.i18n import _
from mall.kit import clock
from mall.members.models import Member
from mall.points import service as points_service
from mall.segments.models import MemberAutoTag, Segment
from mall.segments.schemas import (
    BirthdayMonth,
    BoundPlatform,
    LastPurchase,
    Level,
    PointsBalance,
    PurchaseCount,
    Rules,
    Source,
    Tags,
)

SEGMENT_NOT_FOUND = ErrorCode("SEGMENT_NOT_FOUND", 404, _("Segment not found"))
SEGMENT_INACTIVE = ErrorCode(
    "SEGMENT_INACTIVE", 409, _("This segment is switched off; switch it on to send to it")
)
SEGMENT_EMPTY = ErrorCode("SEGMENT_EMPTY", 409, _("No member is in this segment now"))
CAMPAIGN_NOT_FOUND = ErrorCode("CAMPAIGN_NOT_FOUND", 404, _("Campaign not found"))
CAMPAIGN_PACK_INACTIVE = ErrorCode(
    "CAMPAIGN_PACK_INACTIVE", 409, _("Gift pack {gift_pack_id} is switched off")
)
CAMPAIGN_TOUCH_KIND = "campaign"
AUTO_PREFIX = "auto:"
# statuses of a recipient once it was handled
OUTCOMES = ("sent", "skipped_by_cap", "no_grant", "refused", "failed")
_BATCH = 200
_LEASE_SECONDS = 300


# --- purchases and bindings (read-only views of other domains) --------------------
#
# Orders and points expose no aggregate per member yet, so these read their tables
# read-only, in this one place. The mall-orders part is guarded: if `mall.orders.models`
# is missing or lacks `member_id`/`status`/`paid_at`, mall orders simply count as none.

PURCHASED_STATUSES = ("paid", "shipped", "completed")


@dataclass
class Purchases:
    count: int = 0
    last: datetime | None = None

    def add(self, count: int, last: datetime | None) -> None:
        self.count += count
        if last is not None and (self.last is None or last > self.last):
            self.last = last


async def _mall_order_purchases() -> dict[int, Purchases]:
    try:
        from mall.orders import models as orders_models

        order = orders_models.Order
        names = set(order._meta.fields_map) | set(order._meta.fk_fields)
        if not {"status", "paid_at"} <= names or not names & {"member", "member_id"}:
            return {}
    except (ImportError, AttributeError):
        return {}
    rows = (
        await order.filter(status__in=PURCHASED_STATUSES)
        .annotate(n=Count("id"), last=Max("paid_at"))
        .group_by("member_id")
        .values("member_id", "n", "last")
    )
    return {int(r["member_id"]): Purchases(int(r["n"]), _aware(r["last"])) for r in rows}


async def _marketplace_purchases() -> dict[int, Purchases]:
    from mall.points.models import ExternalOrder

    rows = (
        await ExternalOrder.filter(
            member_id__isnull=False, status__in=points_service.BINDABLE_STATUSES
        )
        .annotate(n=Count("id"), last=Max("paid_at"))
        .group_by("member_id")
        .values("member_id", "n", "last")
    )
    return {int(r["member_id"]): Purchases(int(r["n"]), _aware(r["last"])) for r in rows}


async def purchases_by_member(source: Source = "all") -> dict[int, Purchases]:
    """Paid purchases per member (members with none are absent)."""
    merged: dict[int, Purchases] = defaultdict(Purchases)
    parts = []
    if source in ("all", "mall"):
        parts.append(await _mall_order_purchases())
    if source in ("all", "marketplace"):
        parts.append(await _marketplace_purchases())
    for part in parts:
        for member_id, p in part.items():
            merged[member_id].add(p.count, p.last)
    return dict(merged)


async def bound_platforms() -> dict[int, set[str]]:
    """The marketplace platforms each member bound an order from."""
    from mall.points.models import ExternalOrder

    rows: list[Any] = (
        await ExternalOrder.filter(member_id__isnull=False)
        .distinct()
        .values_list("member_id", "platform")
    )
    found: dict[int, set[str]] = defaultdict(set)
    for member_id, platform in rows:
        found[int(member_id)].add(str(platform))
    return dict(found)


def _aware(moment: Any) -> datetime | None:
    if moment is None:
        return None
    if isinstance(moment, str):  # SQLite aggregates come back as text
        moment = datetime.fromisoformat(moment)
    if isinstance(moment, datetime) and moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment if isinstance(moment, datetime) else None


# --- evaluating rules ------------------------------------------------------------


@dataclass
class _Sets:
    """Members that must be in (intersection) and must be out (union)."""

    include: set[int] | None = None
    exclude: set[int] = field(default_factory=set)

    def must_be_in(self, ids: Iterable[int]) -> None:
        chosen = set(ids)
        self.include = chosen if self.include is None else self.include & chosen

    def must_be_out(self, ids: Iterable[int]) -> None:
        self.exclude |= set(ids)


def _in_range(value: int, gte: int | None, lte: int | None) -> bool:
    return (gte is None or value >= gte) and (lte is None or value <= lte)


def _day_start(day: date) -> datetime:
    return clock.start_of_local_day(day)


async def _ops_tag_holders(tags: set[str]) -> dict[str, set[int]]:
    holders: dict[str, set[int]] = {t: set() for t in tags}
    rows: list[Any] = await Member.all().values_list("id", "tags")
    for member_id, member_tags in rows:
        for tag in member_tags or []:
            if tag in holders:
                holders[tag].add(int(member_id))
    return holders


async def _tag_holders(tags: set[str]) -> dict[str, set[int]]:
    auto = {t for t in tags if t.startswith(AUTO_PREFIX)}
    holders = await _ops_tag_holders(tags - auto) if tags - auto else {}
    if auto:
        rows: list[Any] = await MemberAutoTag.filter(
            tag__in=[t[len(AUTO_PREFIX) :] for t in auto]
        ).values_list("tag", "member_id")
        for t in auto:
            holders[t] = set()
        for tag, member_id in rows:
            holders[AUTO_PREFIX + str(tag)].add(int(member_id))
    return holders


async def evaluate(rules: Rules) -> list[int]:
    """The ids of every member matching all predicates, ascending. Deleted accounts
    never match: they get no gifts and no messages."""
    query = Member.filter(deleted_at__isnull=True)
    sets = _Sets()
    purchases: dict[str, dict[int, Purchases]] = {}

    async def purchases_of(source: Source) -> dict[int, Purchases]:
        if source not in purchases:
            purchases[source] = await purchases_by_member(source)
        return purchases[source]

    tag_predicates = [p for p in rules.all if isinstance(p, Tags)]
    wanted_tags = {t for p in tag_predicates for t in (*p.any, *p.all, *p.none)}
    holders = await _tag_holders(wanted_tags) if wanted_tags else {}
    platforms: dict[int, set[str]] | None = None

    for p in rules.all:
        if isinstance(p, Level):
            if p.values is not None:
                query = query.filter(level__in=p.values)
            if p.gte is not None:
                query = query.filter(level__gte=p.gte)
            if p.lte is not None:
                query = query.filter(level__lte=p.lte)
        elif isinstance(p, PointsBalance):
            if p.gte is not None:
                query = query.filter(points_balance__gte=p.gte)
            if p.lte is not None:
                query = query.filter(points_balance__lte=p.lte)
        elif isinstance(p, BirthdayMonth):
            months = set(p.months)
            if p.this_month:
                months.add(clock.today().month)
            born: list[Any] = await Member.filter(birthday__isnull=False).values_list(
                "id", "birthday"
            )
            sets.must_be_in(int(m) for m, day in born if _as_date(day).month in months)
        elif isinstance(p, PurchaseCount):
            counts = await purchases_of(p.source)
            if _in_range(0, p.gte, p.lte):  # members with no purchase match too
                sets.must_be_out(
                    m for m, c in counts.items() if not _in_range(c.count, p.gte, p.lte)
                )
            else:
                sets.must_be_in(m for m, c in counts.items() if _in_range(c.count, p.gte, p.lte))
        elif isinstance(p, LastPurchase):
            counts = await purchases_of(p.source)
            after = _day_start(p.after) if p.after else None
            before = _day_start(p.before) if p.before else None

            def fits(last: datetime | None, after: Any = after, before: Any = before) -> bool:
                if last is None:
                    return False
                return (after is None or last >= after) and (before is None or last < before)

            if p.include_never:
                sets.must_be_out(m for m, c in counts.items() if not fits(c.last))
            else:
                sets.must_be_in(m for m, c in counts.items() if fits(c.last))
        elif isinstance(p, BoundPlatform):
            if platforms is None:
                platforms = await bound_platforms()
            names = {points_service.normalize_platform(n) for n in p.platforms}
            matched = [m for m, bound in platforms.items() if not names or bound & names]
            if p.bound:
                sets.must_be_in(matched)
            else:
                sets.must_be_out(matched)
        elif isinstance(p, Tags):
            if p.any:
                sets.must_be_in(set().union(*(holders[t] for t in p.any)))
            for t in p.all:
                sets.must_be_in(holders[t])
            if p.none:
                sets.must_be_out(set().union(*(holders[t] for t in p.none)))

    if sets.include is not None:
        if not sets.include:
            return []
        ids = await _ids_within(query, sets.include)
    else:
        every: list[Any] = await query.values_list("id", flat=True)
        ids = [int(m) for m in every]
    return sorted(m for m in ids if m not in sets.exclude)


async def _ids_within(query: Any, chosen: set[int]) -> list[int]:
    found: list[int] = []
    ordered = sorted(chosen)
    for start in range(0, len(ordered), 1000):
        chunk = ordered[start : start + 1000]
        found += [int(m) for m in await query.filter(id__in=chunk).values_list("id", flat=True)]
    return found


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


async def preview(rules: Rules, sample_size: int = 20) -> tuple[int, list[Member]]:
    """The live count and the newest `sample_size` matching members."""
    ids = await evaluate(rules)
    sample_ids = ids[-sample_size:] if sample_size else []
    sample = await Member.filter(id__in=sample_ids).order_by("-id") if sample_ids else []
    return len(ids), list(sample)


# --- segments (CRUD) -------------------------------------------------------------


def _document(rules: Rules) -> dict[str, Any]:
    return rules.model_dump(mode="json", by_alias=True, exclude_none=True)


async def create_segment(
    actor: Actor | None, *, name: str, description: str, rules: Rules
) -> tuple[Segment, int]:
    count = len(await evaluate(rules))
    async with in_transaction():
        segment = await Segment.create(
            name=name,
            description=description,
            rules=_document(rules),
            last_count=count,
            counted_at=clock.now(),
            staff_id=actor.id if actor else None,
        )
        await audit_service.record(
            actor, "segment.create", f"segment:{segment.id}", name=name, rules=segment.rules
        )
    return segment, count


async def get_segment(segment_id: int) -> Segment:
    segment = await Segment.get_or_none(id=segment_id)
    if segment is None:
        raise SEGMENT_NOT_FOUND()
    return segment


def rules_of(segment: Segment) -> Rules:
    return Rules.model_validate(segment.rules)


async def count_segment(segment: Segment) -> list[int]:
    """Evaluate the segment now and remember its size."""
    ids = await evaluate(rules_of(segment))
    now = clock.now()
    await Segment.filter(id=segment.id).update(last_count=len(ids), counted_at=now)
    segment.last_count, segment.counted_at = len(ids), now
    return ids


async def member_ids(segment_id: int) -> list[int]:
    """The members in a segment now (for other domains, e.g. issuing a gift pack)."""
    return await evaluate(rules_of(await get_segment(segment_id)))


async def update_segment(actor: Actor | None, segment_id: int, changes: dict[str, Any]) -> Segment:
    async with in_transaction():
        segment = await get_segment(segment_id)
        if "rules" in changes and changes["rules"] is not None:
            changes["rules"] = _document(Rules.model_validate(changes["rules"]))
        changes = {k: v for k, v in changes.items() if v is not None}
        if changes:
            await Segment.filter(id=segment_id).update(**changes)
        await audit_service.record(actor, "segment.update", f"segment:{segment_id}", **changes)
    segment = await get_segment(segment_id)
    if "rules" in changes:
        await count_segment(segment)
    return segment


async def list_segments(active: bool | None = None) -> list[Segment]:
    query = Segment.all()
    if active is not None:
        query = query.filter(active=active)
    return await query.order_by("-id")
