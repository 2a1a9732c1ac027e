"""Coupons: templates, the claim burst (decided in one Lua call), gift packs (the
new-member pack once per member), the coupon's life (usable -> locked -> used, back on
cancel or refund while valid, expired past validity), expiry reminders within the
touch cap, and the Redis/DB reconciliation."""

from __future__ import annotations

import calendar
import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q
from tortoise.functions import Count
from tortoise.transactions import in_transaction

from mall.audit import service as audit_service
from mall.config import get_settings
from mall.coupons.models import Coupon, CouponTemplate, GiftPack, GiftPackIssue
from mall.errors import ErrorCode, MallError
from mall.i18n import _, translate
from mall.kit import clock
from mall.kit.pagination import cursor_page
from mall.members import service as members_service
from mall.members.models import Member
from mall.pricing.calc import CouponOffer
from mall.redis import get_redis, script
from mall.touch import service as touch_service
from mall.wechat import client as wechat_client

log = logging.getLogger("mall.coupons")

TEMPLATE_NOT_FOUND = ErrorCode("COUPON_TEMPLATE_NOT_FOUND", 404, _("This coupon does not exist"))
COUPON_NOT_FOUND = ErrorCode("COUPON_NOT_FOUND", 404, _("Coupon not found"))
COUPON_SOLD_OUT = ErrorCode("COUPON_SOLD_OUT", 409, _("All of these coupons have been claimed"))
COUPON_LIMIT_REACHED = ErrorCode(
    "COUPON_LIMIT_REACHED", 409, _("You already hold the most of this coupon allowed ({limit})")
)
COUPON_NOT_CLAIMABLE = ErrorCode("COUPON_NOT_CLAIMABLE", 409, _("This coupon cannot be claimed"))
COUPON_CLAIM_NOT_STARTED = ErrorCode(
    "COUPON_CLAIM_NOT_STARTED", 409, _("Claiming this coupon has not started yet")
)
COUPON_CLAIM_ENDED = ErrorCode("COUPON_CLAIM_ENDED", 409, _("Claiming this coupon has ended"))
COUPON_NOT_USABLE = ErrorCode(
    "COUPON_NOT_USABLE", 409, _("This coupon cannot be used now (it is {status})")
)
COUPON_NOT_VOIDABLE = ErrorCode(
    "COUPON_NOT_VOIDABLE",
    409,
    _("This coupon has been used or is held by an unpaid order; it cannot be voided"),
)
GIFT_PACK_NOT_FOUND = ErrorCode("GIFT_PACK_NOT_FOUND", 404, _("Gift pack not found"))
GIFT_PACK_TEMPLATE_UNKNOWN = ErrorCode(
    "GIFT_PACK_TEMPLATE_UNKNOWN", 422, _("Coupon template {template_id} does not exist")
)

_LOSS = {
    "cold": TEMPLATE_NOT_FOUND,
    "inactive": COUPON_NOT_CLAIMABLE,
    "not_claimable": COUPON_NOT_CLAIMABLE,
    "not_started": COUPON_CLAIM_NOT_STARTED,
    "ended": COUPON_CLAIM_ENDED,
    "sold_out": COUPON_SOLD_OUT,
}


# --- validity -----------------------------------------------------------------


def add_months(day: date, months: int) -> date:
    """The same day of the month `months` later, or that month's last day if it is shorter."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def relative_validity(issued_at: datetime, months: int) -> tuple[datetime, datetime]:
    """(valid_from, expires_at) of a coupon valid `months` calendar months from issue.

    As the PRC Civil Code counts periods (art. 201-202): the issue day is day 0, and the
    last valid day is the day with the same number `months` later (Asia/Shanghai), or that
    month's last day when it has no such day. So issued 30 Nov 2024 -> works through
    28 Feb 2025; 30 Nov 2023 -> through 29 Feb 2024 (leap year); 15 Jan -> through
    15 Apr; 31 Mar -> through 30 Jun; 31 Dec -> through 31 Mar. The coupon works from the
    moment of issue; `expires_at` is exclusive: 00:00 Asia/Shanghai after the last day."""
    last_day = add_months(issued_at.astimezone(clock.SHANGHAI).date(), months)
    return issued_at, clock.start_of_local_day(last_day + timedelta(days=1))


def last_valid_day(expires_at: datetime) -> date:
    return (expires_at - timedelta(microseconds=1)).astimezone(clock.SHANGHAI).date()


def validity_for(template: CouponTemplate, issued_at: datetime) -> tuple[datetime, datetime]:
    if template.validity == "fixed" and template.valid_from and template.valid_until:
        return template.valid_from, template.valid_until
    return relative_validity(issued_at, template.valid_months)


def _window_over(template: CouponTemplate, at: datetime) -> bool:
    return template.validity == "fixed" and bool(
        template.valid_until and template.valid_until <= at
    )


# --- Redis side of the claim --------------------------------------------------


def _keys(template_id: int) -> list[str]:
    tag = f"{{cpn:{template_id}}}"
    return [f"{tag}:meta", f"{tag}:issued", f"{tag}:members"]


def _ts(moment: datetime | None) -> str:
    return "" if moment is None else str(int(moment.timestamp()))


async def warm_template(template: CouponTemplate) -> None:
    """Load the template's terms into Redis; when Redis has no counts yet, seed them from
    the database rows (a lost Redis may at worst re-issue coupons whose rows were still
    being written; the reconciler reports any difference)."""
    counts = (
        await Coupon.filter(template_id=template.id)
        .annotate(n=Count("id"))
        .group_by("member_id")
        .values_list("member_id", "n")
    )
    pairs: list[Any] = []
    for member_id, n in counts:
        pairs += [member_id, n]
    await script("mall.coupons", "warm")(
        keys=_keys(template.id),
        args=[
            -1 if template.total_quantity is None else template.total_quantity,
            template.per_member_limit,
            1 if template.active else 0,
            1 if template.claimable else 0,
            _ts(template.claim_starts_at),
            _ts(template.claim_ends_at),
            sum(int(n) for _m, n in counts),
            *pairs,
        ],
    )


async def _take(template_id: int, member_id: int, n: int, *, shopper: bool) -> tuple[str, int]:
    take = script("mall.coupons", "take")
    args = [member_id, int(clock.now().timestamp()), n, 1 if shopper else 0]
    status, number = await take(keys=_keys(template_id), args=args)
    if status == "cold":
        template = await CouponTemplate.get_or_none(id=template_id)
        if template is None:
            return "cold", 0
        await warm_template(template)
        status, number = await take(keys=_keys(template_id), args=args)
    return str(status), int(number)


async def _give_back(template_id: int, member_id: int, n: int) -> None:
    await script("mall.coupons", "give_back")(keys=_keys(template_id), args=[member_id, n])


async def redis_counts(template_id: int) -> tuple[int, dict[int, int]] | None:
    """(issued, held per member) as Redis sees them; None when the template is not loaded."""
    meta, issued, members = _keys(template_id)
    redis = get_redis()
    if not await redis.exists(meta):
        return None
    held = await redis.hgetall(members)
    return int(await redis.get(issued) or 0), {int(k): int(v) for k, v in held.items()}


# --- claim ----------------------------------------------------------------------


async def claim(member_id: int, template_id: int, claim_id: str | None = None) -> Coupon:
    """A shopper claims one coupon. Redis decides (quantity, window, per-member limit) in
    one Lua call, so losers never touch the database; the winner's row is written next,
    and if that fails the win is given back in Redis. `claim_id` (unique) makes a retry
    return the first coupon."""
    claim_id = claim_id or uuid.uuid4().hex
    status, number = await _take(template_id, member_id, 1, shopper=True)
    if status == "limit_reached":
        template = await CouponTemplate.get_or_none(id=template_id)
        raise COUPON_LIMIT_REACHED(limit=template.per_member_limit if template else number)
    if status != "ok":
        raise _LOSS.get(status, COUPON_NOT_CLAIMABLE)()
    try:
        template = await CouponTemplate.get(id=template_id)
        now = clock.now()
        valid_from, expires_at = validity_for(template, now)
        return await Coupon.create(
            template_id=template_id,
            member_id=member_id,
            claim_id=f"claim:{member_id}:{claim_id}",
            source="claim",
            valid_from=valid_from,
            expires_at=expires_at,
        )
    except IntegrityError:
        await _give_back(template_id, member_id, 1)
        existing = await Coupon.get_or_none(claim_id=f"claim:{member_id}:{claim_id}")
        if existing is not None:
            return existing  # the same claim, retried
        raise
    except BaseException:
        await _give_back(template_id, member_id, 1)
        raise


# --- grants from other domains ----------------------------------------------------


async def grant(member_id: int, template_id: int, *, grant_key: str, source: str) -> Coupon:
    """Give one coupon of a template as a prize or a redemption (blind box, points mall),
    once per `grant_key`. The template's quantity is decided in Redis like a claim; its
    per-member limit does not apply (the member paid for it). Joins the caller's
    transaction; the Redis win is given back if the row cannot be written."""
    claim_id = f"grant:{grant_key}"[:191]
    existing = await Coupon.get_or_none(claim_id=claim_id)
    if existing is not None:
        return existing
    template = await CouponTemplate.get_or_none(id=template_id)
    if template is None or _window_over(template, clock.now()):
        raise COUPON_NOT_CLAIMABLE()
    status, _n = await _take(template_id, member_id, 1, shopper=False)
    if status != "ok":
        raise _LOSS.get(status, COUPON_NOT_CLAIMABLE)()
    try:
        valid_from, expires_at = validity_for(template, clock.now())
        async with in_transaction():
            return await Coupon.create(
                template_id=template_id,
                member_id=member_id,
                claim_id=claim_id,
                source=source,
                valid_from=valid_from,
                expires_at=expires_at,
            )
    except BaseException:
        await _give_back(template_id, member_id, 1)
        raise


async def return_grant(template_id: int, member_id: int) -> None:
    """Give a granted coupon's quantity back in Redis after the caller's transaction
    rolled the coupon row back (Redis is not part of the transaction)."""
    await _give_back(template_id, member_id, 1)


# --- gift packs -----------------------------------------------------------------


async def issue_pack(
    pack: GiftPack, member_id: int, issue_key: str, *, source: str, staff_id: int | None = None
) -> GiftPackIssue | None:
    """Give one pack to one member once per `issue_key`; None if that key was used.

    Template quantities are decided in Redis like claims (the per-member limit does not
    apply to packs); a sold-out, inactive or ended template is left out and noted in
    `skipped`. Every Redis win is given back if the transaction does not commit."""
    if await GiftPackIssue.filter(issue_key=issue_key).exists():
        return None
    taken: list[tuple[int, int]] = []
    try:
        async with in_transaction():
            issue = await GiftPackIssue.create(
                pack_id=pack.id, member_id=member_id, issue_key=issue_key, staff_id=staff_id
            )
            now = clock.now()
            coupon_ids: list[int] = []
            skipped: list[dict[str, object]] = []
            for item in pack.items:
                template_id, quantity = int(item["template_id"]), int(item.get("quantity", 1))
                template = await CouponTemplate.get_or_none(id=template_id)
                if template is None or _window_over(template, now):
                    skipped.append({"template_id": template_id, "reason": "ended"})
                    continue
                status, _n = await _take(template_id, member_id, quantity, shopper=False)
                if status != "ok":
                    skipped.append({"template_id": template_id, "reason": status})
                    continue
                taken.append((template_id, quantity))
                valid_from, expires_at = validity_for(template, now)
                for i in range(quantity):
                    coupon = await Coupon.create(
                        template_id=template_id,
                        member_id=member_id,
                        claim_id=f"pack:{issue.id}:{template_id}:{i}",
                        source=source,
                        valid_from=valid_from,
                        expires_at=expires_at,
                    )
                    coupon_ids.append(coupon.id)
            issue.coupon_ids = coupon_ids
            issue.skipped = skipped
            await issue.save(update_fields=["coupon_ids", "skipped"])
    except BaseException as exc:
        for template_id, quantity in taken:
            await _give_back(template_id, member_id, quantity)
        if isinstance(exc, IntegrityError) and not taken:
            if await GiftPackIssue.filter(issue_key=issue_key).exists():
                return None  # issued concurrently under the same key
        raise
    return issue


async def issue_new_member_packs(member: Member) -> None:
    """Hook run when a member joins: every active new-member pack, once per member."""
    for pack in await GiftPack.filter(for_new_members=True, active=True).order_by("id"):
        await issue_pack(pack, member.id, f"join:{pack.id}:{member.id}", source="new_member")


if issue_new_member_packs not in members_service.on_member_joined:
    members_service.on_member_joined.append(issue_new_member_packs)


async def issue_pack_to_members(
    pack_id: int,
    *,
    member_ids: list[int],
    tag: str | None,
    min_level: int | None,
    request_key: str,
    staff_id: int | None,
) -> tuple[GiftPack, list[dict[str, Any]]]:
    """Ops give a pack to members by id or to a segment; once per member per request key."""
    pack = await get_pack(pack_id)
    targets = list(dict.fromkeys(member_ids))
    if tag is not None or min_level is not None:
        query = Member.all()
        if min_level is not None:
            query = query.filter(level__gte=min_level)
        ids: list[Any] = await query.order_by("id").values_list("id", flat=True)
        segment = [int(m) for m in ids]
        if tag is not None:
            tagged = await Member.filter(id__in=segment).values_list("id", "tags")
            segment = [int(m) for m, tags in tagged if tag in (tags or [])]
        targets += [m for m in segment if m not in set(targets)]
    existing = set(await Member.filter(id__in=targets).values_list("id", flat=True))
    results: list[dict[str, Any]] = []
    for member_id in targets:
        if member_id not in existing:
            results.append({"member_id": member_id, "issued": False, "reason": "MEMBER_NOT_FOUND"})
            continue
        issue = await issue_pack(
            pack,
            member_id,
            f"ops:{pack.id}:{request_key}:{member_id}",
            source="pack",
            staff_id=staff_id,
        )
        if issue is None:
            results.append({"member_id": member_id, "issued": False, "reason": "ALREADY_ISSUED"})
        else:
            results.append(
                {
                    "member_id": member_id,
                    "issued": True,
                    "coupon_ids": issue.coupon_ids,
                    "skipped": issue.skipped,
                }
            )
    return pack, results


# --- templates and packs (ops) --------------------------------------------------


async def create_template(data: dict[str, Any]) -> CouponTemplate:
    if data.get("valid_months") is None:
        data["valid_months"] = get_settings().coupon_default_valid_months
    if data.get("validity") == "fixed" and data.get("claim_ends_at") is None:
        data["claim_ends_at"] = data.get("valid_until")
    if data.get("kind") in ("cash", "gift", "exchange"):
        data["discount_percent"] = 100
    template = await CouponTemplate.create(**data)
    await warm_template(template)
    return template


async def get_template(template_id: int) -> CouponTemplate:
    template = await CouponTemplate.get_or_none(id=template_id)
    if template is None:
        raise TEMPLATE_NOT_FOUND()
    return template


async def update_template(template_id: int, changes: dict[str, Any]) -> CouponTemplate:
    template = await get_template(template_id)
    if changes:
        await CouponTemplate.filter(id=template_id).update(**changes)
        await template.refresh_from_db()
    await warm_template(template)
    return template


async def list_templates(active: bool | None = None) -> list[CouponTemplate]:
    query = CouponTemplate.all()
    if active is not None:
        query = query.filter(active=active)
    return await query.order_by("-id")


async def template_figures(template_ids: list[int]) -> dict[int, tuple[int, int]]:
    """(issued, used) per template, from the database."""
    figures: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    rows = (
        await Coupon.filter(template_id__in=template_ids)
        .annotate(n=Count("id"))
        .group_by("template_id", "status")
        .values_list("template_id", "status", "n")
    )
    for template_id, status, n in rows:
        figures[int(template_id)][0] += int(n)
        if status == "used":
            figures[int(template_id)][1] += int(n)
    return {k: (v[0], v[1]) for k, v in figures.items()}


async def _check_items(items: list[dict[str, int]]) -> None:
    ids = {int(i["template_id"]) for i in items}
    found = set(await CouponTemplate.filter(id__in=ids).values_list("id", flat=True))
    for template_id in sorted(ids - found):
        raise GIFT_PACK_TEMPLATE_UNKNOWN(template_id=template_id)


async def create_pack(data: dict[str, Any]) -> GiftPack:
    await _check_items(data["items"])
    return await GiftPack.create(**data)


async def get_pack(pack_id: int) -> GiftPack:
    pack = await GiftPack.get_or_none(id=pack_id)
    if pack is None:
        raise GIFT_PACK_NOT_FOUND()
    return pack


async def update_pack(pack_id: int, changes: dict[str, Any]) -> GiftPack:
    pack = await get_pack(pack_id)
    if "items" in changes:
        await _check_items(changes["items"])
    if changes:
        await GiftPack.filter(id=pack_id).update(**changes)
        await pack.refresh_from_db()
    return pack


async def list_packs() -> list[GiftPack]:
    return await GiftPack.all().order_by("-id")


# --- the member's coupons ---------------------------------------------------------


def effective_status(coupon: Coupon, at: datetime) -> str:
    if coupon.status == "usable" and coupon.expires_at <= at:
        return "expired"
    return coupon.status


async def list_coupons(
    member_id: int, status: str | None, cursor: str | None, size: int
) -> tuple[list[Coupon], str | None]:
    now = clock.now()
    query = Coupon.filter(member_id=member_id).select_related("template")
    if status == "usable":
        query = query.filter(status="usable", expires_at__gt=now)
    elif status == "expired":
        query = query.filter(Q(status="expired") | Q(status="usable", expires_at__lte=now))
    elif status is not None:
        query = query.filter(status=status)
    return await cursor_page(query, cursor, size)


def offer_of(coupon: Coupon) -> CouponOffer:
    """The coupon with its template's terms, as pricing sees it."""
    t: CouponTemplate = coupon.template
    return CouponOffer(
        coupon_id=coupon.id,
        template_id=t.id,
        name=t.name,
        kind=t.kind,  # type: ignore[arg-type]
        status=coupon.status,
        valid_from=coupon.valid_from,
        expires_at=coupon.expires_at,
        face_value_fen=t.face_value_fen,
        threshold_fen=t.threshold_fen,
        discount_percent=t.discount_percent,
        discount_cap_fen=t.discount_cap_fen,
        gift_sku_id=t.gift_sku_id,
        gift_value_fen=t.gift_value_fen,
        scope=t.scope,  # type: ignore[arg-type]
        scope_ids=list(t.scope_ids or []),
    )


async def offers_for(member_id: int, also: int | None = None) -> list[CouponOffer]:
    """The member's unexpired usable coupons (plus coupon `also`, whatever its state) for
    pricing a cart: which apply and why the others do not."""
    now = clock.now()
    condition = Q(status="usable", expires_at__gt=now)
    if also is not None:
        condition |= Q(id=also)
    rows = await Coupon.filter(condition, member_id=member_id).select_related("template")
    return [offer_of(c) for c in sorted(rows, key=lambda c: (c.expires_at, c.id))]


# --- life of a coupon (called by orders) ------------------------------------------


async def lock(coupon_id: int, member_id: int, order_ref: str) -> Coupon:
    """usable -> locked for an unpaid order; the same order locking again is a no-op."""
    now = clock.now()
    updated = await Coupon.filter(
        id=coupon_id,
        member_id=member_id,
        status="usable",
        valid_from__lte=now,
        expires_at__gt=now,
    ).update(status="locked", order_ref=order_ref, locked_at=now)
    coupon = await Coupon.get_or_none(id=coupon_id, member_id=member_id)
    if coupon is None:
        raise COUPON_NOT_FOUND()
    if not updated and not (coupon.status == "locked" and coupon.order_ref == order_ref):
        raise COUPON_NOT_USABLE(status=effective_status(coupon, now))
    return coupon


async def use(coupon_id: int, order_ref: str) -> None:
    """locked -> used when the order is paid."""
    updated = await Coupon.filter(id=coupon_id, status="locked", order_ref=order_ref).update(
        status="used", used_at=clock.now()
    )
    if (
        not updated
        and not await Coupon.filter(id=coupon_id, status="used", order_ref=order_ref).exists()
    ):
        raise COUPON_NOT_USABLE(status="not locked by this order")


async def release(coupon_id: int, order_ref: str) -> str:
    """Order cancelled, unpaid at the deadline, or refunded: the coupon comes back while
    still valid, else it becomes expired. Returns the coupon's status afterwards."""
    now = clock.now()
    held = Coupon.filter(id=coupon_id, order_ref=order_ref, status__in=["locked", "used"])
    await held.filter(expires_at__gt=now).update(
        status="usable", order_ref=None, locked_at=None, used_at=None
    )
    await held.filter(expires_at__lte=now).update(status="expired")
    coupon = await Coupon.get_or_none(id=coupon_id)
    return coupon.status if coupon else "missing"


VOIDABLE = ("usable", "expired")


async def void(
    coupon_id: int,
    *,
    reason: str,
    staff: Any | None = None,
    member_id: int | None = None,
    source: str = "ops",
) -> Coupon:
    """usable or expired (never used) -> voided, by one conditional update; voiding a
    voided coupon again is a no-op. A coupon an unpaid order holds (locked) or one that
    was used is refused with COUPON_NOT_VOIDABLE. Joins the caller's transaction; with
    `staff` the void is audited in it. The template's issued count is not given back
    (the row stays, and Redis and the database keep agreeing)."""
    query = Coupon.filter(id=coupon_id)
    if member_id is not None:
        query = query.filter(member_id=member_id)
    coupon = await query.first()
    if coupon is None:
        raise COUPON_NOT_FOUND()
    if coupon.status == "voided":
        return coupon
    async with in_transaction():
        moved = await Coupon.filter(id=coupon.id, status__in=VOIDABLE).update(
            status="voided", voided_at=clock.now(), void_reason=reason[:128]
        )
        fresh = await Coupon.get(id=coupon.id)
        if not moved:
            if fresh.status == "voided":
                return fresh
            raise COUPON_NOT_VOIDABLE(status=effective_status(fresh, clock.now()))
        if staff is not None:
            await audit_service.record(
                staff,
                "coupon.void",
                f"coupon:{coupon.id}",
                member_id=coupon.member_id,
                template_id=coupon.template_id,
                before=coupon.status,
                reason=reason,
                source=source,
            )
    return fresh


async def expire_due() -> int:
    """usable coupons past their validity become expired."""
    return await Coupon.filter(status="usable", expires_at__lte=clock.now()).update(
        status="expired"
    )


# --- expiry reminders ---------------------------------------------------------------

REMINDER_KIND = "coupon_expiry"
# The subscribe template's fields: thing1 coupon name, date2 last valid day, thing3 a note.
REMINDER_NOTE = _("You have {count} coupons expiring soon")


@dataclass
class ReminderReport:
    members: int = 0
    sent: int = 0
    no_grant: int = 0
    capped: int = 0
    refused: int = 0
    failed: int = 0
    coupon_ids: list[int] = field(default_factory=list)


async def send_expiry_reminders() -> ReminderReport:
    """One subscribe message per member whose usable coupons expire within
    `coupon_reminder_days`, only if the member granted the template, within the touch cap.
    43101 (refused) zeroes the grant; other failures give the grant and touch back and
    leave the coupons for the next run. A reminded coupon is never reminded again."""
    settings = get_settings()
    report = ReminderReport()
    template_id = settings.coupon_expiry_template_id
    if not template_id:
        return report
    now = clock.now()
    due = (
        await Coupon.filter(
            status="usable",
            reminded_at__isnull=True,
            expires_at__gt=now,
            expires_at__lte=now + timedelta(days=settings.coupon_reminder_days),
        )
        .select_related("template")
        .order_by("expires_at", "id")
    )
    by_member: dict[int, list[Coupon]] = defaultdict(list)
    for coupon in due:
        by_member[coupon.member_id].append(coupon)
    report.members = len(by_member)
    granted: set[int] = set()
    ids = list(by_member)
    for start in range(0, len(ids), 500):
        granted |= await touch_service.members_with_grant(template_id, ids[start : start + 500])
    for member_id, coupons in by_member.items():
        if member_id not in granted or not await touch_service.use_grant(member_id, template_id):
            report.no_grant += 1
            continue
        reference = f"coupons:{coupons[0].id}"
        if not await touch_service.try_touch(member_id, REMINDER_KIND, reference):
            await touch_service.give_back_grant(member_id, template_id)
            report.capped += 1
            continue
        first = coupons[0]
        day = last_valid_day(first.expires_at)
        data = {
            "thing1": first.template.name[:20],
            "date2": f"{day.year}年{day.month}月{day.day}日",
            "thing3": translate(REMINDER_NOTE, settings.default_locale, count=len(coupons))[:20],
        }
        try:
            member = await members_service.get_member(member_id)
            await wechat_client.send_subscribe_message(
                member.openid, template_id, data, page=settings.coupon_reminder_page
            )
        except MallError as exc:
            await touch_service.give_back_touch(member_id, REMINDER_KIND, reference)
            if exc.code == "WECHAT_USER_REFUSED":
                await touch_service.refused(member_id, template_id)
                report.refused += 1
            else:
                await touch_service.give_back_grant(member_id, template_id)
                report.failed += 1
                log.warning("coupon reminder failed member=%s code=%s", member_id, exc.code)
            continue
        coupon_ids = [c.id for c in coupons]
        await Coupon.filter(id__in=coupon_ids).update(reminded_at=now)
        report.sent += 1
        report.coupon_ids += coupon_ids
    return report


async def daily_expiry_reminders() -> ReminderReport | None:
    """Run the reminders once per Asia/Shanghai day, from `coupon_reminder_local_hour` on."""
    settings = get_settings()
    local = clock.local_now()
    if local.hour < settings.coupon_reminder_local_hour:
        return None
    marker = f"coupons:reminders:{local.date().isoformat()}"
    if not await get_redis().set(marker, "1", nx=True, ex=2 * 24 * 3600):
        return None
    try:
        return await send_expiry_reminders()
    except BaseException:
        await get_redis().delete(marker)  # let the next run try again today
        raise
