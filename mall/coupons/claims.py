"""Issuing coupons: the shopper's claim (the burst, decided in one Lua call), grants
from other domains (prizes, redemptions), gift packs (the new-member pack once per
member), and when an issued coupon is valid.

Every issue takes its units from the template's pool (`stock.take`, `lua/take.lua`), so
losers never touch the database; the winner's row is written next, and if it is not,
the take is given back, once (`stock.give_back`)."""

from __future__ import annotations

import calendar
import functools
import logging
import uuid
from datetime import date, datetime, timedelta

from tortoise.exceptions import IntegrityError

from mall.coupons import stock
from mall.coupons.models import Coupon, CouponTemplate, GiftPack, GiftPackIssue
from mall.errors import ErrorCode
from mall.i18n import _
from mall.kit import clock, tx
from mall.members import service as members_service
from mall.members.models import Member

log = logging.getLogger("mall.coupons")

TEMPLATE_NOT_FOUND = ErrorCode("COUPON_TEMPLATE_NOT_FOUND", 404, _("This coupon does not exist"))
COUPON_SOLD_OUT = ErrorCode("COUPON_SOLD_OUT", 409, _("All of these coupons have been claimed"))
COUPON_LIMIT_REACHED = ErrorCode(
    "COUPON_LIMIT_REACHED", 409, _("You already hold the most of this coupon allowed ({limit})")
)
COUPON_NOT_CLAIMABLE = ErrorCode("COUPON_NOT_CLAIMABLE", 409, _("This coupon cannot be claimed"))
COUPON_CLAIM_NOT_STARTED = ErrorCode(
    "COUPON_CLAIM_NOT_STARTED", 409, _("Claiming this coupon has not started yet")
)
COUPON_CLAIM_ENDED = ErrorCode("COUPON_CLAIM_ENDED", 409, _("Claiming this coupon has ended"))

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


# --- claim ----------------------------------------------------------------------


async def claim(member_id: int, template_id: int, claim_id: str | None = None) -> Coupon:
    """A shopper claims one coupon. Redis decides (quantity, window, per-member limit) in
    one Lua call, so losers never touch the database; the winner's row is written next,
    and if that fails the win is given back in Redis. `claim_id` (unique) makes a retry
    return the first coupon."""
    claim_id = claim_id or uuid.uuid4().hex
    taken = await stock.take(template_id, member_id, 1, shopper=True)
    if taken.status == "limit_reached":
        template = await CouponTemplate.get_or_none(id=template_id)
        raise COUPON_LIMIT_REACHED(limit=template.per_member_limit if template else taken.number)
    if taken.status != "ok":
        raise _LOSS.get(taken.status, COUPON_NOT_CLAIMABLE)()
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
        await stock.give_back(template_id, member_id, 1, taken.take_id)
        existing = await Coupon.get_or_none(claim_id=f"claim:{member_id}:{claim_id}")
        if existing is not None:
            return existing  # the same claim, retried
        raise
    except BaseException:
        await stock.give_back(template_id, member_id, 1, taken.take_id)
        raise


# --- grants from other domains ----------------------------------------------------


async def grant(member_id: int, template_id: int, *, grant_key: str, source: str) -> Coupon:
    """Give one coupon of a template as a prize or a redemption (blind box, points mall),
    once per `grant_key`. The template's quantity is decided in Redis like a claim; its
    per-member limit does not apply (the member paid for it). Joins the caller's
    transaction; the Redis win is given back if that transaction does not commit."""
    claim_id = f"grant:{grant_key}"[:191]
    existing = await Coupon.get_or_none(claim_id=claim_id)
    if existing is not None:
        return existing
    template = await CouponTemplate.get_or_none(id=template_id)
    if template is None or _window_over(template, clock.now()):
        raise COUPON_NOT_CLAIMABLE()
    valid_from, expires_at = validity_for(template, clock.now())
    async with tx.transaction():
        taken = await stock.take(template_id, member_id, 1, shopper=False)
        if taken.status != "ok":
            raise _LOSS.get(taken.status, COUPON_NOT_CLAIMABLE)()
        # the Redis win goes back if this row, or the caller's transaction it joins,
        # does not commit
        await tx.on_rollback(lambda: stock.give_back(template_id, member_id, 1, taken.take_id))
        return await Coupon.create(
            template_id=template_id,
            member_id=member_id,
            claim_id=claim_id,
            source=source,
            valid_from=valid_from,
            expires_at=expires_at,
        )


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
    taken = False
    try:
        async with tx.transaction():
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
                took = await stock.take(template_id, member_id, quantity, shopper=False)
                if took.status != "ok":
                    skipped.append({"template_id": template_id, "reason": took.status})
                    continue
                taken = True
                await tx.on_rollback(functools.partial(_give_back, took, member_id))
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
    except IntegrityError:
        # the Redis wins were given back on the rollback (tx.on_rollback above)
        if not taken and await GiftPackIssue.filter(issue_key=issue_key).exists():
            return None  # issued concurrently under the same key
        raise
    return issue


async def _give_back(took: stock.Take, member_id: int) -> None:
    await stock.give_back(took.template_id, member_id, took.n, took.take_id)


async def issue_new_member_packs(member: Member) -> None:
    """Hook run when a member joins: every active new-member pack, once per member."""
    for pack in await GiftPack.filter(for_new_members=True, active=True).order_by("id"):
        await issue_pack(pack, member.id, f"join:{pack.id}:{member.id}", source="new_member")


if issue_new_member_packs not in members_service.on_member_joined:
    members_service.on_member_joined.append(issue_new_member_packs)
