"""Coupons: templates and gift packs (ops), the member's coupons and their life (usable
-> locked -> used, back on cancel or refund while valid, expired past validity), and
expiry reminders within the touch cap. A hot domain reads as decision -> persistence ->
ops:

- `stock.py`: the template's pool in Redis on the hot-stock kit (warm, take, give-back,
  the reconciliation);
- `claims.py`: issuing coupons, the claim burst decided in one Lua call
  (`lua/take.lua`), grants and gift packs, each writing its coupon rows;
- this module: templates and packs, the member's coupons, their life, reminders, and
  the names other domains and the routers use (re-exported below)."""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tortoise.expressions import Q
from tortoise.functions import Count
from tortoise.transactions import in_transaction

from mall.audit import service as audit_service
from mall.config import get_settings
from mall.coupons import stock
from mall.coupons.claims import COUPON_CLAIM_ENDED as COUPON_CLAIM_ENDED
from mall.coupons.claims import COUPON_CLAIM_NOT_STARTED as COUPON_CLAIM_NOT_STARTED
from mall.coupons.claims import COUPON_LIMIT_REACHED as COUPON_LIMIT_REACHED
from mall.coupons.claims import COUPON_NOT_CLAIMABLE as COUPON_NOT_CLAIMABLE
from mall.coupons.claims import COUPON_SOLD_OUT as COUPON_SOLD_OUT
from mall.coupons.claims import TEMPLATE_NOT_FOUND as TEMPLATE_NOT_FOUND
from mall.coupons.claims import add_months as add_months
from mall.coupons.claims import claim as claim
from mall.coupons.claims import grant as grant
from mall.coupons.claims import issue_new_member_packs as issue_new_member_packs
from mall.coupons.claims import issue_pack as issue_pack
from mall.coupons.claims import last_valid_day
from mall.coupons.claims import relative_validity as relative_validity
from mall.coupons.claims import validity_for as validity_for
from mall.coupons.models import Coupon, CouponTemplate, GiftPack
from mall.coupons.stock import reconcile as reconcile
from mall.coupons.stock import redis_counts as redis_counts
from mall.coupons.stock import warm_template as warm_template
from mall.errors import ErrorCode, MallError
from mall.i18n import _, translate
from mall.kit import clock
from mall.kit import stock as kit
from mall.kit.bulk import select_in
from mall.kit.pagination import cursor_page
from mall.members import service as members_service
from mall.members.models import Member
from mall.pricing.calc import CouponOffer
from mall.redis import get_redis
from mall.touch import service as touch_service
from mall.wechat import client as wechat_client

log = logging.getLogger("mall.coupons")

COUPON_NOT_FOUND = ErrorCode("COUPON_NOT_FOUND", 404, _("Coupon not found"))
COUPON_NOT_USABLE = ErrorCode(
    "COUPON_NOT_USABLE", 409, _("This coupon cannot be used now (it is {status})")
)
COUPON_NOT_VOIDABLE = ErrorCode(
    "COUPON_NOT_VOIDABLE",
    409,
    _("This coupon has been used or is held by an unpaid order; it cannot be voided"),
)
GIFT_PACK_NOT_FOUND = ErrorCode("GIFT_PACK_NOT_FOUND", 404, _("Gift pack not found"))
GIFT_PACK_TOO_MANY_MEMBERS = ErrorCode(
    "GIFT_PACK_TOO_MANY_MEMBERS",
    422,
    _(
        "This gives the pack to {members} members, more than {max} at once: send it as a "
        "campaign to a segment"
    ),
)
GIFT_PACK_TEMPLATE_UNKNOWN = ErrorCode(
    "GIFT_PACK_TEMPLATE_UNKNOWN", 422, _("Coupon template {template_id} does not exist")
)


# --- gift packs to members (ops) ---------------------------------------------------


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
        # ids and tags in the one read: a segment can be the whole member table, more
        # ids than one statement's parameters take (PostgreSQL: 32,767)
        rows: list[Any] = await query.order_by("id").values_list("id", "tags")
        segment = [int(m) for m, tags in rows if tag is None or tag in (tags or [])]
        given = set(targets)
        targets += [m for m in segment if m not in given]
    # each member is issued inside this request: a segment the size of the member table
    # would outlast it, half given (a campaign is queued and run by its job instead)
    limit = get_settings().gift_pack_issue_max
    if len(targets) > limit:
        raise GIFT_PACK_TOO_MANY_MEMBERS(members=len(targets), max=limit)
    existing = {int(row[0]) for row in await select_in(Member, "id", targets, ["id"])}
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
    """Change a template's terms. A new total quantity moves Redis by the kit's rule: a
    decrease first (it may leave the template sold out: no floor), an increase after the
    database commits."""
    template = await get_template(template_id)
    if changes:

        async def commit() -> None:
            async with in_transaction():
                await CouponTemplate.filter(id=template_id).update(**changes)

        delta = 0
        if "total_quantity" in changes:
            delta = (changes["total_quantity"] or 0) - (template.total_quantity or 0)
        await kit.adjust(
            stock.POOL.keys(template_id),
            delta,
            commit,
            refused=lambda left: RuntimeError(f"template {template_id}: {left} left"),
            floor=None,
        )
        await template.refresh_from_db()
    await warm_template(template)
    return template


async def list_templates(active: bool | None = None) -> list[CouponTemplate]:
    query = CouponTemplate.all()
    if active is not None:
        query = query.filter(active=active)
    return await query.order_by("-id")


_FIGURES_CHUNK = 500


async def template_figures(template_ids: list[int]) -> dict[int, tuple[int, int]]:
    """(issued, used) per template, from the database."""
    figures: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    rows: list[Any] = []
    # the templates list is not paged: in chunks, under any statement's parameter limit
    for start in range(0, len(template_ids), _FIGURES_CHUNK):
        rows += (
            await Coupon.filter(template_id__in=template_ids[start : start + _FIGURES_CHUNK])
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


async def get_coupon(coupon_id: int) -> Coupon | None:
    """One coupon by id (another domain showing the coupon it granted)."""
    return await Coupon.get_or_none(id=coupon_id)


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
