"""Referral: share codes, binding customers to promoters (first binding wins), promoter
levels and the commission ledger.

Orders call two hooks (both idempotent by order and event):
- `on_order_completed(order_id, member_id, paid_fen)` when an order completes, with the
  money the customer paid for it (wallet + cash, less anything already refunded);
- `on_order_refunded(order_id, member_id, refunded_fen, refund_ref=...)` after each
  refund, with that refund's money and its id.
A completion writes `rate x paid` for the customer's promoter; a refund writes a negative
entry so the order's net commission is `rate x (paid - refunded)`, never below zero."""

from __future__ import annotations

import csv
import io
import logging
import secrets
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.functions import Count, Sum
from tortoise.transactions import in_transaction

from mall.audit import service as audit_service
from mall.config import get_settings
from mall.errors import FORBIDDEN, ErrorCode
from mall.i18n import _
from mall.kit import clock, ratelimit, versioned
from mall.kit.pagination import cursor_page
from mall.members import service as members_service
from mall.members.models import Member, Staff
from mall.referral.models import CommissionEntry, Promoter, ReferralBinding, ReferralRulesVersion
from mall.referral.schemas import PromoterLevel, ReferralRules

log = logging.getLogger("mall.referral")

REFERRAL_CODE_UNKNOWN = ErrorCode("REFERRAL_CODE_UNKNOWN", 404, _("This share code does not exist"))
REFERRAL_SELF = ErrorCode("REFERRAL_SELF", 409, _("You cannot bind to your own share code"))
REFERRAL_ALREADY_BOUND = ErrorCode(
    "REFERRAL_ALREADY_BOUND", 409, _("You are already bound to another promoter")
)
REFERRAL_WINDOW_CLOSED = ErrorCode(
    "REFERRAL_WINDOW_CLOSED",
    409,
    _("A share code can only be bound within {days} days of joining"),
)
REFERRAL_PROMOTER_INACTIVE = ErrorCode(
    "REFERRAL_PROMOTER_INACTIVE", 409, _("This share code is no longer valid")
)
PROMOTER_NOT_FOUND = ErrorCode("PROMOTER_NOT_FOUND", 404, _("Promoter not found"))
PROMOTER_EXISTS = ErrorCode("PROMOTER_EXISTS", 409, _("This person is already a promoter"))
PROMOTER_LEVEL_UNKNOWN = ErrorCode(
    "PROMOTER_LEVEL_UNKNOWN", 422, _("Promoter level {level} does not exist")
)
REFERRAL_RULES_CONFLICT = ErrorCode(
    "REFERRAL_RULES_CONFLICT",
    409,
    _("The referral rules were changed by someone else (now version {current}); reload"),
)
REFERRAL_LEVEL_IN_USE = ErrorCode(
    "REFERRAL_LEVEL_IN_USE",
    409,
    _("Level {level} is held by {promoters} promoters; move them to another level first"),
)
STAFF_NOT_FOUND = ErrorCode("STAFF_NOT_FOUND", 404, _("Staff account not found"))

# no 0/O, 1/I/L: codes are read aloud and typed by hand
_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
_CODE_LENGTH = 8
_BIND_ATTEMPTS_PER_10_MIN = 10


# --- rules -------------------------------------------------------------------------


async def get_rules_version() -> tuple[int, ReferralRules, datetime | None]:
    version, document, saved_at = await versioned.latest(ReferralRulesVersion)
    rules = ReferralRules() if document is None else ReferralRules.model_validate(document)
    return version, rules, saved_at


async def get_rules() -> ReferralRules:
    return (await get_rules_version())[1]


async def save_rules(rules: ReferralRules, *, staff: Any, base_version: int | None) -> int:
    """A new version of the levels (audited). A level still held by promoters cannot go."""
    async with in_transaction():
        current, old, _at = await get_rules_version()
        if base_version is not None and base_version != current:
            raise REFERRAL_RULES_CONFLICT(current=current)
        kept = {level.code for level in rules.levels}
        for level in old.levels:
            if level.code not in kept:
                held = await Promoter.filter(level=level.code).count()
                if held:
                    raise REFERRAL_LEVEL_IN_USE(level=level.code, promoters=held)
        document = rules.model_dump(mode="json")
        if not await versioned.append(
            ReferralRulesVersion, version=current + 1, document=document, staff=staff
        ):
            raise REFERRAL_RULES_CONFLICT(current=current + 1)
        await audit_service.record(
            staff,
            "referral.rules.update",
            f"referral_rules:{current + 1}",
            before=old.model_dump(mode="json"),
            after=document,
        )
    return current + 1


def level_of(rules: ReferralRules, code: str) -> PromoterLevel:
    # a promoter's level always exists (save_rules refuses to drop a held level); a rate
    # of zero is the safe reading if the data says otherwise
    return rules.level(code) or PromoterLevel(code=code, name=code, rate_bp=0)


# --- promoters -----------------------------------------------------------------------


def new_code() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(_CODE_LENGTH))


async def _create_promoter(**who: Any) -> Promoter:
    for _attempt in range(5):
        try:
            return await Promoter.create(code=new_code(), created_at=clock.now(), **who)
        except IntegrityError:
            existing = await Promoter.get_or_none(
                **{k: v for k, v in who.items() if k in ("member_id", "staff_id")}
            )
            if existing is not None:
                return existing
            # else the code collided: draw another
    raise RuntimeError("could not draw a free share code")


async def promoter_for_member(member_id: int) -> Promoter:
    """The member's own promoter record (share code), created on first use."""
    promoter = await Promoter.get_or_none(member_id=member_id)
    if promoter is not None:
        return promoter
    rules = await get_rules()
    return await _create_promoter(member_id=member_id, level=rules.member_level)


async def create_promoter(
    *, member_id: int | None, staff_id: int | None, level: str | None, actor: Staff
) -> Promoter:
    """Ops make a member (e.g. a KOC) or a staff account (admin only) a promoter."""
    rules = await get_rules()
    if staff_id is not None:
        if actor.role != "admin":
            raise FORBIDDEN()
        if not await Staff.filter(id=staff_id).exists():
            raise STAFF_NOT_FOUND()
        default = rules.staff_level
    else:
        await members_service.get_member(int(member_id or 0))
        default = rules.member_level
    level = level or default
    if rules.level(level) is None:
        raise PROMOTER_LEVEL_UNKNOWN(level=level)
    async with in_transaction():
        if member_id is not None:
            existing = await Promoter.get_or_none(member_id=member_id)
            if existing is not None:  # a member who already shared: promote that code
                if existing.level != level:
                    await Promoter.filter(id=existing.id).update(level=level)
                    existing.level = level
                promoter = existing
            else:
                promoter = await _create_promoter(member_id=member_id, level=level)
        else:
            if await Promoter.filter(staff_id=staff_id).exists():
                raise PROMOTER_EXISTS()
            promoter = await _create_promoter(staff_id=staff_id, level=level)
        await audit_service.record(
            actor,
            "referral.promoter.create",
            f"promoter:{promoter.id}",
            member_id=member_id,
            staff_id=staff_id,
            level=level,
        )
    return promoter


async def get_promoter(promoter_id: int) -> Promoter:
    promoter = await Promoter.get_or_none(id=promoter_id)
    if promoter is None:
        raise PROMOTER_NOT_FOUND()
    return promoter


async def promoter_of_staff(staff_id: int) -> Promoter:
    promoter = await Promoter.get_or_none(staff_id=staff_id)
    if promoter is None:
        raise PROMOTER_NOT_FOUND()
    return promoter


async def update_promoter(
    promoter_id: int, *, level: str | None, active: bool | None, actor: Staff | None
) -> Promoter:
    promoter = await get_promoter(promoter_id)
    changes: dict[str, Any] = {}
    if level is not None:
        if (await get_rules()).level(level) is None:
            raise PROMOTER_LEVEL_UNKNOWN(level=level)
        changes["level"] = level
    if active is not None:
        changes["active"] = active
    if changes:
        async with in_transaction():
            await Promoter.filter(id=promoter_id).update(**changes)
            await audit_service.record(
                actor,
                "referral.promoter.update",
                f"promoter:{promoter_id}",
                before={"level": promoter.level, "active": promoter.active},
                **changes,
            )
    return await get_promoter(promoter_id)


async def list_promoters(
    *, level: str | None, cursor: str | None, size: int
) -> tuple[list[Promoter], str | None]:
    query = Promoter.all()
    if level:
        query = query.filter(level=level)
    return await cursor_page(query, cursor, size)


async def figures(promoter_ids: list[int]) -> dict[int, tuple[int, int]]:
    """promoter id -> (customers bound, net commission fen)."""
    if not promoter_ids:
        return {}
    bound = (
        await ReferralBinding.filter(promoter_id__in=promoter_ids)
        .annotate(n=Count("id"))
        .group_by("promoter_id")
        .values("promoter_id", "n")
    )
    earned = (
        await CommissionEntry.filter(promoter_id__in=promoter_ids)
        .annotate(total=Sum("amount_fen"))
        .group_by("promoter_id")
        .values("promoter_id", "total")
    )
    out = {pid: (0, 0) for pid in promoter_ids}
    for r in bound:
        out[int(r["promoter_id"])] = (int(r["n"]), 0)
    for r in earned:
        pid = int(r["promoter_id"])
        out[pid] = (out[pid][0], int(r["total"] or 0))
    return out


async def names(promoters: list[Promoter]) -> dict[int, str]:
    member_ids = [p.member_id for p in promoters if p.member_id is not None]
    staff_ids = [p.staff_id for p in promoters if p.staff_id is not None]
    members = dict(await Member.filter(id__in=member_ids).values_list("id", "nickname"))
    staff = dict(await Staff.filter(id__in=staff_ids).values_list("id", "username"))
    result: dict[int, str] = {}
    for p in promoters:
        if p.member_id is not None:
            result[p.id] = str(members.get(p.member_id, ""))
        else:
            result[p.id] = str(staff.get(p.staff_id, ""))
    return result


async def customers_page(
    promoter_id: int, cursor: str | None, size: int
) -> tuple[list[tuple[ReferralBinding, str, int]], str | None]:
    """The promoter's customers, newest binding first, with nickname and net commission."""
    rows, next_cursor = await cursor_page(
        ReferralBinding.filter(promoter_id=promoter_id), cursor, size
    )
    ids = [b.customer_id for b in rows]
    nick = dict(await Member.filter(id__in=ids).values_list("id", "nickname")) if ids else {}
    earned = (
        await CommissionEntry.filter(promoter_id=promoter_id, customer_id__in=ids)
        .annotate(total=Sum("amount_fen"))
        .group_by("customer_id")
        .values("customer_id", "total")
        if ids
        else []
    )
    by_customer = {int(r["customer_id"]): int(r["total"] or 0) for r in earned}
    return [
        (b, str(nick.get(b.customer_id, "")), by_customer.get(b.customer_id, 0)) for b in rows
    ], next_cursor


# --- binding -------------------------------------------------------------------------


async def binding_of(customer_id: int) -> ReferralBinding | None:
    return await ReferralBinding.get_or_none(customer_id=customer_id)


async def bind(customer: Member, code: str, *, source: str = "share") -> ReferralBinding:
    """Bind a new member to the promoter whose code this is. The first binding wins;
    binding the same code again answers the existing binding."""
    await ratelimit.hit(f"referral:bind:{customer.id}", _BIND_ATTEMPTS_PER_10_MIN, 600)
    code = code.strip().upper()
    promoter = await Promoter.get_or_none(code=code)
    if promoter is None:
        raise REFERRAL_CODE_UNKNOWN()
    if promoter.member_id == customer.id:
        raise REFERRAL_SELF()
    existing = await binding_of(customer.id)
    if existing is not None:
        if existing.promoter_id == promoter.id:
            return existing
        raise REFERRAL_ALREADY_BOUND()
    if not promoter.active:
        raise REFERRAL_PROMOTER_INACTIVE()
    days = get_settings().referral_bind_days
    if clock.now() - customer.created_at > timedelta(days=days):
        raise REFERRAL_WINDOW_CLOSED(days=days)
    try:
        return await ReferralBinding.create(
            customer_id=customer.id,
            promoter_id=promoter.id,
            code=promoter.code,
            source=source,
            bound_at=clock.now(),
        )
    except IntegrityError:  # bound concurrently: the first one wins
        winner = await binding_of(customer.id)
        if winner is not None and winner.promoter_id == promoter.id:
            return winner
        raise REFERRAL_ALREADY_BOUND() from None


async def my_referral(member: Member) -> dict[str, Any]:
    promoter = await promoter_for_member(member.id)
    rules = await get_rules()
    level = level_of(rules, promoter.level)
    customers, commission = (await figures([promoter.id]))[promoter.id]
    binding = await binding_of(member.id)
    return {
        "code": promoter.code,
        "level": level.code,
        "level_name": level.name,
        "rate_bp": level.rate_bp if promoter.active else 0,
        "customers": customers,
        "commission_fen": commission,
        "bound_to": binding.code if binding else None,
    }


# --- commission ----------------------------------------------------------------------


def commission_on(base_fen: int, rate_bp: int) -> int:
    """Rounded down to the fen: the promoter never gets a fen more than the rate says."""
    return max(base_fen, 0) * rate_bp // 10_000


async def on_order_completed(
    order_id: int, member_id: int, paid_fen: int
) -> CommissionEntry | None:
    """Commission for the customer's promoter on a completed order; once per order.
    None when the customer is not bound, the promoter is inactive or earns nothing."""
    key = f"order:{order_id}:completed"
    existing = await CommissionEntry.get_or_none(event_key=key)
    if existing is not None:
        return existing
    binding = await binding_of(member_id)
    if binding is None or paid_fen <= 0:
        return None
    promoter = await get_promoter(binding.promoter_id)
    if not promoter.active:
        return None
    level = level_of(await get_rules(), promoter.level)
    amount = commission_on(paid_fen, level.rate_bp)
    if amount <= 0:
        return None
    try:
        async with in_transaction():
            return await CommissionEntry.create(
                promoter_id=promoter.id,
                customer_id=member_id,
                order_id=order_id,
                event="completed",
                event_key=key,
                level=level.code,
                rate_bp=level.rate_bp,
                base_fen=paid_fen,
                amount_fen=amount,
                created_at=clock.now(),
            )
    except IntegrityError:  # completed twice at once: the first entry stands
        return await CommissionEntry.get(event_key=key)


async def on_order_refunded(
    order_id: int, member_id: int, refunded_fen: int, *, refund_ref: str | int = "all"
) -> CommissionEntry | None:
    """Reverse the commission of a refunded order (a negative entry), once per refund.
    None when the order earned no commission. The order's net commission never goes
    below zero, and a full refund reverses it to exactly zero."""
    key = f"order:{order_id}:refund:{refund_ref}"[:191]
    existing = await CommissionEntry.get_or_none(event_key=key)
    if existing is not None:
        return existing
    if refunded_fen <= 0:
        return None
    async with in_transaction():
        # lock the grant: refunds of one order are reversed one at a time
        grant = (
            await CommissionEntry.filter(event_key=f"order:{order_id}:completed")
            .select_for_update()
            .first()
        )
        if grant is None:
            return None
        entries = await CommissionEntry.filter(order_id=order_id, promoter_id=grant.promoter_id)
        if any(e.event_key == key for e in entries):
            return next(e for e in entries if e.event_key == key)
        net_base = sum(e.base_fen for e in entries)
        net_amount = sum(e.amount_fen for e in entries)
        taken = min(refunded_fen, max(net_base, 0))
        reversal = commission_on(net_base - taken, grant.rate_bp) - net_amount
        try:
            async with in_transaction():
                return await CommissionEntry.create(
                    promoter_id=grant.promoter_id,
                    customer_id=grant.customer_id,
                    order_id=order_id,
                    event="refunded",
                    event_key=key,
                    level=grant.level,
                    rate_bp=grant.rate_bp,
                    base_fen=-taken,
                    amount_fen=min(reversal, 0),
                    created_at=clock.now(),
                )
        except IntegrityError:
            return await CommissionEntry.get(event_key=key)


async def commissions_page(
    *, promoter_id: int | None, cursor: str | None, size: int
) -> tuple[list[CommissionEntry], str | None]:
    query = CommissionEntry.all()
    if promoter_id is not None:
        query = query.filter(promoter_id=promoter_id)
    return await cursor_page(query, cursor, size)


_CSV_HEADER = (
    "entry_id",
    "created_at",
    "promoter_id",
    "promoter_code",
    "promoter_level",
    "customer_id",
    "order_id",
    "event",
    "rate_bp",
    "base_fen",
    "amount_fen",
)


async def export_csv(
    *, promoter_id: int | None, since: datetime | None, until: datetime | None
) -> AsyncIterator[str]:
    """Commission entries as CSV (UTF-8 with BOM so Excel reads it), newest first, streamed."""
    query = CommissionEntry.all()
    if promoter_id is not None:
        query = query.filter(promoter_id=promoter_id)
    if since is not None:
        query = query.filter(created_at__gte=clock.as_utc(since))
    if until is not None:
        query = query.filter(created_at__lt=clock.as_utc(until))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(_CSV_HEADER)
    yield "\ufeff" + buffer.getvalue()
    codes: dict[int, str] = {}
    last_id: int | None = None
    while True:
        page = query.filter(id__lt=last_id) if last_id is not None else query
        rows = await page.order_by("-id").limit(500)
        if not rows:
            return
        missing = {r.promoter_id for r in rows} - set(codes)
        if missing:
            codes.update(
                {
                    int(i): str(c)
                    for i, c in await Promoter.filter(id__in=missing).values_list("id", "code")
                }
            )
        buffer.seek(0)
        buffer.truncate()
        for r in rows:
            writer.writerow(
                (
                    r.id,
                    r.created_at.isoformat(),
                    r.promoter_id,
                    codes.get(r.promoter_id, ""),
                    r.level,
                    r.customer_id,
                    r.order_id,
                    r.event,
                    r.rate_bp,
                    r.base_fen,
                    r.amount_fen,
                )
            )
        yield buffer.getvalue()
        last_id = rows[-1].id
