"""The points ledger and every way members earn points.

Invariant, for every member at every commit: sum(entries.delta) == member.points_balance
== sum(lots.remaining) >= 0 (`mall check ledger` proves it).

Every write locks the member row first (SELECT ... FOR UPDATE on PostgreSQL; SQLite
runs one transaction at a time), so all ledger writes of one member are serialized
and lots are consumed without races; the balance itself still only moves by a
conditional update (`points_balance >= cost`). Every write is idempotent on a unique
key in the database; a second call with the same key returns the first result."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pydantic import ValidationError
from tortoise.exceptions import IntegrityError
from tortoise.expressions import F, Q
from tortoise.functions import Count, Sum
from tortoise.transactions import in_transaction

from mall import pricing
from mall.audit import service as audit_service
from mall.config import get_settings
from mall.errors import RATE_LIMITED, VALIDATION_ERROR, ErrorCode, MallError
from mall.i18n import _, translate
from mall.kit import clock, ratelimit, versioned
from mall.kit.text import scrub
from mall.members import service as members_service
from mall.members.models import Member
from mall.points.models import (
    ADJUST,
    EARN,
    EXPIRE,
    HOLD,
    REVERSE,
    SPEND,
    VOID,
    ExternalOrder,
    LevelChange,
    PointsDebt,
    PointsEntry,
    PointsHold,
    PointsLot,
    PointsLotUse,
    PointsRulesVersion,
    SignIn,
)
from mall.points.schemas import (
    STORED,
    ExternalOrderRow,
    ImportOut,
    ImportRowError,
    Level,
    MemberDayOut,
    NextLevelOut,
    PointsSummaryOut,
    Rules,
    SignInOut,
    SignInStatusOut,
)
from mall.redis import get_redis

log = logging.getLogger("mall.points")

NOT_ENOUGH_POINTS = ErrorCode(
    "NOT_ENOUGH_POINTS", 409, _("You have {balance} points; this needs {cost}")
)
POINTS_AMOUNT_INVALID = ErrorCode(
    "POINTS_AMOUNT_INVALID", 422, _("The number of points must be a positive whole number")
)
POINTS_HOLD_NOT_FOUND = ErrorCode("POINTS_HOLD_NOT_FOUND", 404, _("Points hold not found"))
POINTS_HOLD_CLOSED = ErrorCode("POINTS_HOLD_CLOSED", 409, _("This points hold is already {status}"))
POINTS_ENTRY_NOT_FOUND = ErrorCode("POINTS_ENTRY_NOT_FOUND", 404, _("Points entry not found"))
POINTS_NOT_REVERSIBLE = ErrorCode(
    "POINTS_NOT_REVERSIBLE", 409, _("This points entry cannot be reversed")
)
POINTS_REVERSE_TOO_LARGE = ErrorCode(
    "POINTS_REVERSE_TOO_LARGE", 409, _("At most {left} points of this entry can still be reversed")
)
ALREADY_SIGNED_IN = ErrorCode(
    "ALREADY_SIGNED_IN", 409, _("You have already signed in today; come back tomorrow")
)
EXTERNAL_ORDER_NOT_FOUND = ErrorCode(
    "EXTERNAL_ORDER_NOT_FOUND",
    404,
    _("No order with this number was found for that platform; check the number or try later"),
)
ORDER_PHONE_MISMATCH = ErrorCode(
    "ORDER_PHONE_MISMATCH", 422, _("The phone number does not match this order")
)
ORDER_ALREADY_BOUND = ErrorCode(
    "ORDER_ALREADY_BOUND", 409, _("This order has already been claimed by another member")
)
ORDER_ALREADY_BOUND_BY_YOU = ErrorCode(
    "ORDER_ALREADY_BOUND_BY_YOU", 409, _("You have already claimed this order")
)
ORDER_NOT_BINDABLE = ErrorCode(
    "ORDER_NOT_BINDABLE", 409, _("This order was refunded or cancelled and cannot earn points")
)
RULES_VERSION_CONFLICT = ErrorCode(
    "RULES_VERSION_CONFLICT",
    409,
    _("The rules were changed by someone else (now version {current}); reload and try again"),
)
IMPORT_UNREADABLE = ErrorCode("IMPORT_UNREADABLE", 422, _("The import could not be read: {reason}"))
IMPORT_TOO_LARGE = ErrorCode("IMPORT_TOO_LARGE", 413, _("The import is too large"))
IMPORT_ROW_INVALID = ErrorCode("IMPORT_ROW_INVALID", 422, _("Invalid value: {detail}"))
IMPORT_ROW_DUPLICATE = ErrorCode(
    "IMPORT_ROW_DUPLICATE", 422, _("The same order already appears in row {first_row}")
)
IMPORT_ROW_BOUND = ErrorCode(
    "IMPORT_ROW_BOUND",
    409,
    _("The order is already claimed by a member; the changed row was not applied"),
)

_KEY_MAX = 191
# no real field of an order export comes near this (order numbers are at most 64); a
# longer one is a broken row, reported as such rather than carried any further
IMPORT_FIELD_MAX = 256
BINDABLE_STATUSES = ("paid", "shipped", "completed")


# --- rules -------------------------------------------------------------------


async def get_rules() -> Rules:
    """The earning rules in force (defaults until ops save a version)."""
    _version, rules, _at = await get_rules_version()
    return rules


async def get_rules_version() -> tuple[int, Rules, datetime | None]:
    version, document, saved_at = await versioned.latest(PointsRulesVersion)
    if document is None:
        return version, Rules(), saved_at
    return version, Rules.model_validate(document, context=STORED), saved_at


async def save_rules(rules: Rules, *, staff: Any, base_version: int | None) -> int:
    """Store a new version of the rules; audited. Refuses an edit based on a stale version."""
    async with in_transaction():
        current, old, _at = await get_rules_version()
        if base_version is not None and base_version != current:
            raise RULES_VERSION_CONFLICT(current=current)
        document = rules.model_dump(mode="json")
        if not await versioned.append(
            PointsRulesVersion, version=current + 1, document=document, staff=staff
        ):
            raise RULES_VERSION_CONFLICT(current=current + 1)
        await audit_service.record(
            staff,
            "points.rules.update",
            f"points_rules:{current + 1}",
            before=old.model_dump(mode="json"),
            after=document,
        )
    return current + 1


def lot_expiry(rules: Rules, earned_at: datetime) -> datetime | None:
    policy = rules.expiry
    if policy.mode == "never":
        return None
    if policy.mode == "days":
        return earned_at + timedelta(days=policy.days)
    # the end of the following calendar year, Shanghai time
    year = earned_at.astimezone(clock.SHANGHAI).year
    return datetime(year + 2, 1, 1, tzinfo=clock.SHANGHAI).astimezone(UTC)


# --- the ledger core -----------------------------------------------------------


def _key(key: str) -> str:
    if not key:
        raise ValueError("an idempotency key is required")
    if len(key) <= _KEY_MAX:
        return key
    return key[:150] + ":" + hashlib.sha256(key.encode()).hexdigest()[:32]


def _positive(points: int) -> None:
    if not isinstance(points, int) or isinstance(points, bool) or points <= 0:
        raise POINTS_AMOUNT_INVALID()


async def _existing(key: str) -> PointsEntry | None:
    return await PointsEntry.get_or_none(idempotency_key=key)


async def _lock_member(member_id: int) -> Member:
    member = await Member.filter(id=member_id).select_for_update().first()
    if member is None:
        raise members_service.MEMBER_NOT_FOUND()
    return member


async def _append(
    member: Member,
    delta: int,
    kind: str,
    key: str,
    *,
    reason: str,
    reference: str,
    reverses_id: int | None = None,
    growth_delta: int = 0,
) -> PointsEntry:
    """Move the balance by `delta` (never below zero) and write the entry. Member locked."""
    if delta < 0:
        moved = await Member.filter(id=member.id, points_balance__gte=-delta).update(
            points_balance=F("points_balance") + delta
        )
        if not moved:
            raise NOT_ENOUGH_POINTS(balance=member.points_balance, cost=-delta)
    elif delta > 0:
        await Member.filter(id=member.id).update(points_balance=F("points_balance") + delta)
    member.points_balance += delta
    return await PointsEntry.create(
        member_id=member.id,
        delta=delta,
        balance_after=member.points_balance,
        kind=kind,
        reason=reason[:128],
        reference=reference[:128],
        idempotency_key=key,
        reverses_id=reverses_id,
        growth_delta=growth_delta,
        created_at=clock.now(),
    )


def _spend_order(lots: Iterable[PointsLot], first_lot_id: int | None = None) -> list[PointsLot]:
    far = datetime.max.replace(tzinfo=UTC)
    return sorted(
        lots,
        key=lambda lot: (lot.id != first_lot_id, lot.expires_at or far, lot.id),
    )


async def _consume_lots(
    member_id: int, points: int, entry_id: int, *, first_lot_id: int | None = None
) -> None:
    """Take `points` from the member's lots, soonest-expiring first. Member locked."""
    left = points
    lots = await PointsLot.filter(member_id=member_id, remaining__gt=0)
    for lot in _spend_order(lots, first_lot_id):
        if left == 0:
            break
        take = min(lot.remaining, left)
        moved = await PointsLot.filter(id=lot.id, remaining__gte=take).update(
            remaining=F("remaining") - take
        )
        if not moved:
            raise RuntimeError(f"points lot {lot.id} changed under a member lock")
        await PointsLotUse.create(entry_id=entry_id, lot_id=lot.id, points=take)
        left -= take
    if left:
        # the balance said yes but the lots say no: the ledger is broken; roll back
        raise RuntimeError(f"member {member_id} lots are {left} points short of the balance")


async def _restore_lots(original_entry_id: int, points: int, by_entry_id: int) -> None:
    """Give `points` back to the lots `original_entry_id` took them from, latest-expiring
    first. A lot that has lapsed meanwhile gets them back too; the expiry job then
    expires them, so nothing outlives its lot."""
    uses = await PointsLotUse.filter(entry_id=original_entry_id).values("lot_id", "points")
    net: dict[int, int] = {}
    for use in uses:
        net[use["lot_id"]] = net.get(use["lot_id"], 0) + use["points"]
    lots = await PointsLot.filter(id__in=[lid for lid, n in net.items() if n > 0])
    left = points
    for lot in reversed(_spend_order(lots)):
        if left == 0:
            break
        give = min(net[lot.id], left)
        await PointsLot.filter(id=lot.id).update(remaining=F("remaining") + give)
        await PointsLotUse.create(
            entry_id=original_entry_id, lot_id=lot.id, points=-give, by_entry_id=by_entry_id
        )
        left -= give
    if left:
        raise RuntimeError(f"entry {original_entry_id} took {points - left} points, not {points}")


async def _change_growth(member: Member, growth: int, entry_id: int | None) -> None:
    """Add (or on a claw-back remove) growth value and move the level with it."""
    if growth == 0:
        return
    if growth > 0:
        await Member.filter(id=member.id).update(growth_value=F("growth_value") + growth)
        member.growth_value += growth
    else:
        growth = max(growth, -member.growth_value)
        if growth == 0:
            return
        await Member.filter(id=member.id, growth_value__gte=-growth).update(
            growth_value=F("growth_value") + growth
        )
        member.growth_value += growth
    rules = await get_rules()
    await _set_level(member, rules.level_for(member.growth_value).level, entry_id=entry_id)


async def _set_level(
    member: Member,
    level: int,
    *,
    entry_id: int | None = None,
    reason: str = "growth",
    rules_version: int | None = None,
) -> bool:
    """Move a locked member to `level` (conditional on the level read) and record it.
    The one place a level changes: growth earned or clawed back, and re-levelling.

    Level benefits are read from the member's level where they are used (prices,
    birthday gift size, points-mall level gates), so a moved member has them at once."""
    if level == member.level:
        return False
    moved = await Member.filter(id=member.id, level=member.level).update(level=level)
    if not moved:
        raise RuntimeError(f"member {member.id} level changed under a member lock")
    await LevelChange.create(
        member_id=member.id,
        from_level=member.level,
        to_level=level,
        growth_value=member.growth_value,
        entry_id=entry_id,
        reason=reason,
        rules_version=rules_version,
        created_at=clock.now(),
    )
    member.level = level
    return True


async def _settle_debts(member: Member, earned: PointsEntry, lot: PointsLot) -> None:
    """New points settle what the member owes first, oldest debt first: one reverse
    entry per debt, against the earn that was clawed back, taken from the new lot.
    Member locked, inside the earn's transaction."""
    left = earned.delta
    debts = await PointsDebt.filter(member_id=member.id, remaining__gt=0).order_by("id")
    for debt in debts:
        if left <= 0:
            break
        pay = min(left, debt.remaining)
        settled = debt.remaining == pay
        moved = await PointsDebt.filter(id=debt.id, remaining__gte=pay).update(
            remaining=F("remaining") - pay, settled_at=clock.now() if settled else None
        )
        if not moved:
            raise RuntimeError(f"points debt {debt.id} changed under a member lock")
        entry = await _append(
            member,
            -pay,
            REVERSE,
            _key(f"settle:{earned.id}:{debt.id}"),
            reason="owed points settled",
            reference=f"debt:{debt.id}",
            reverses_id=debt.original_entry_id,
        )
        await _consume_lots(member.id, pay, entry.id, first_lot_id=lot.id)
        left -= pay


async def owed(member_id: int) -> int:
    """Points the member owes (claw-backs of points already spent), not yet settled."""
    rows: list[Any] = await PointsDebt.filter(member_id=member_id, remaining__gt=0).values_list(
        "remaining", flat=True
    )
    return sum(int(r) for r in rows)


async def _earn(
    member_id: int,
    points: int,
    key: str,
    *,
    kind: str,
    reason: str,
    reference: str,
    expires_at: datetime | None,
    growth: int,
) -> PointsEntry:
    """Credit `points` (may be 0 when only growth moves) as a new lot."""
    key = _key(key)
    found = await _existing(key)
    if found is not None:
        return found
    try:
        async with in_transaction():
            member = await _lock_member(member_id)
            found = await _existing(key)  # a twin committed while we waited for the lock
            if found is not None:
                return found
            entry = await _append(
                member, points, kind, key, reason=reason, reference=reference, growth_delta=growth
            )
            if points > 0:
                now = clock.now()
                if expires_at is None:
                    expires_at = lot_expiry(await get_rules(), now)
                lot = await PointsLot.create(
                    member_id=member_id,
                    entry_id=entry.id,
                    points=points,
                    remaining=points,
                    expires_at=expires_at,
                    created_at=now,
                )
                await _settle_debts(member, entry, lot)
            await _change_growth(member, growth, entry.id)
    except IntegrityError:
        found = await _existing(key)
        if found is not None:
            return found
        raise
    return entry


async def _take(
    member_id: int,
    points: int,
    key: str,
    *,
    kind: str,
    reason: str,
    reference: str,
    make_hold: bool = False,
    hold_expires_at: datetime | None = None,
) -> PointsEntry:
    """Debit `points` from lots, or raise NOT_ENOUGH_POINTS and change nothing."""
    try:
        async with in_transaction():
            member = await _lock_member(member_id)
            found = await _existing(key)
            if found is not None:
                return found
            entry = await _append(member, -points, kind, key, reason=reason, reference=reference)
            await _consume_lots(member_id, points, entry.id)
            if make_hold:
                await PointsHold.create(
                    member_id=member_id,
                    points=points,
                    entry_id=entry.id,
                    idempotency_key=key,
                    reason=reason[:128],
                    reference=reference[:128],
                    created_at=entry.created_at,
                    expires_at=hold_expires_at,
                )
    except IntegrityError:
        found = await _existing(key)
        if found is not None:
            return found
        raise
    return entry


async def earn(
    member_id: int,
    points: int,
    *,
    idempotency_key: str,
    reason: str,
    reference: str = "",
    expires_at: datetime | None = None,
    counts_for_growth: bool = True,
) -> PointsEntry:
    """Credit points as a new lot (expiring per the rules unless `expires_at` is given)."""
    _positive(points)
    return await _earn(
        member_id,
        points,
        idempotency_key,
        kind=EARN,
        reason=reason,
        reference=reference,
        expires_at=expires_at,
        growth=points if counts_for_growth else 0,
    )


async def spend(
    member_id: int, points: int, *, idempotency_key: str, reason: str, reference: str = ""
) -> PointsEntry:
    """Debit points, soonest-expiring lots first; NOT_ENOUGH_POINTS changes nothing."""
    _positive(points)
    key = _key(idempotency_key)
    found = await _existing(key)
    if found is not None:
        return found
    return await _take(member_id, points, key, kind=SPEND, reason=reason, reference=reference)


async def hold(
    member_id: int,
    points: int,
    *,
    idempotency_key: str,
    reason: str,
    reference: str = "",
    expires_at: datetime | None = None,
) -> PointsHold:
    """Reserve points (they leave the balance now); later `capture` or `void` the hold.

    Past `expires_at` the release job voids a hold still open, so points never stay
    stuck when the owner (a checkout, a redemption) is gone. An owner with its own
    deadline passes a moment safely after it (its close job runs first); the default is
    `points_hold_timeout_seconds` from now."""
    _positive(points)
    key = _key(idempotency_key)
    found = await PointsHold.get_or_none(idempotency_key=key)
    if found is not None:
        return found
    if expires_at is None:
        expires_at = clock.now() + timedelta(seconds=get_settings().points_hold_timeout_seconds)
    await _take(
        member_id,
        points,
        key,
        kind=HOLD,
        reason=reason,
        reference=reference,
        make_hold=True,
        hold_expires_at=expires_at,
    )
    return await PointsHold.get(idempotency_key=key)


async def release_expired_holds(batch: int = 500) -> int:
    """The release job: void every hold still open past its deadline. A hold captured
    meanwhile is left alone (capture and void are conditional updates on `held`)."""
    now = clock.now()
    legacy_before = now - timedelta(seconds=get_settings().points_hold_timeout_seconds)
    released = 0
    after = 0
    while True:
        due = (
            await PointsHold.filter(
                Q(expires_at__lte=now) | Q(expires_at__isnull=True, created_at__lte=legacy_before),
                status="held",
                id__gt=after,
            )
            .order_by("id")
            .limit(batch)
            .values_list("id", flat=True)
        )
        if not due:
            break
        for hold_id in due:
            try:
                await void(int(hold_id), idempotency_key=f"hold:{hold_id}:timeout")  # type: ignore[call-overload]
                released += 1
            except MallError as exc:  # captured meanwhile
                log.info("hold %s not released: %s", hold_id, exc.code)
        after = int(due[-1])  # type: ignore[call-overload]
    if released:
        log.info("released %s points holds past their deadline", released)
    return released


async def _get_hold(hold_id: int) -> PointsHold:
    found = await PointsHold.get_or_none(id=hold_id)
    if found is None:
        raise POINTS_HOLD_NOT_FOUND()
    return found


async def capture(hold_id: int, *, idempotency_key: str) -> None:
    """Make a hold final. Capturing a captured hold again is a no-op."""
    key = _key(idempotency_key)
    held = await _get_hold(hold_id)
    if held.status == "captured":
        return
    moved = await PointsHold.filter(id=hold_id, status="held").update(
        status="captured", closed_at=clock.now(), closed_key=key
    )
    if not moved:
        held = await _get_hold(hold_id)
        if held.status != "captured":
            raise POINTS_HOLD_CLOSED(status=held.status)


async def void(hold_id: int, *, idempotency_key: str) -> None:
    """Release a hold: its points go back to the lots they came from. Idempotent."""
    key = _key(idempotency_key)
    held = await _get_hold(hold_id)
    if held.status == "voided":
        return
    if held.status != "held":
        raise POINTS_HOLD_CLOSED(status=held.status)
    try:
        async with in_transaction():
            member = await _lock_member(held.member_id)
            moved = await PointsHold.filter(id=hold_id, status="held").update(
                status="voided", closed_at=clock.now(), closed_key=key
            )
            if not moved:
                held = await _get_hold(hold_id)
                if held.status == "voided":
                    return
                raise POINTS_HOLD_CLOSED(status=held.status)
            entry = await _append(
                member,
                held.points,
                VOID,
                key,
                reason=held.reason,
                reference=held.reference,
                reverses_id=held.entry_id,
            )
            await _restore_lots(held.entry_id, held.points, entry.id)
    except IntegrityError:
        # the void key was used before (e.g. reused by a caller): only fine if it voided this
        held = await _get_hold(hold_id)
        if held.status != "voided":
            raise


async def reverse(
    original_idempotency_key: str,
    *,
    idempotency_key: str,
    reason: str,
    points: int | None = None,
    owe_shortfall: bool = False,
) -> PointsEntry:
    """Give back (part of) a spend, or claw back (part of) an earn.

    A claw-back never drives the balance below zero: it takes what is left (possibly
    nothing) and the entry says how much it took. With `owe_shortfall` the rest is
    recorded as a `PointsDebt` that later earnings settle first, and the growth of the
    whole amount goes at once (growth is never spent); without it the rest is let go and
    growth is clawed back pro rata of what was taken. Spending never lowers growth."""
    if points is not None:
        _positive(points)
    key = _key(idempotency_key)
    found = await _existing(key)
    if found is not None:
        return found
    original = await _existing(_key(original_idempotency_key))
    if original is None:
        raise POINTS_ENTRY_NOT_FOUND()
    gives_back = original.kind in (SPEND, HOLD) or (original.kind == ADJUST and original.delta < 0)
    claws_back = original.kind == EARN or (original.kind == ADJUST and original.delta > 0)
    if not (gives_back or claws_back):
        raise POINTS_NOT_REVERSIBLE()
    try:
        async with in_transaction():
            member = await _lock_member(original.member_id)
            found = await _existing(key)
            if found is not None:
                return found
            if original.kind == HOLD:
                held = await PointsHold.get(entry_id=original.id)
                if held.status != "captured":  # an open hold is voided, not reversed
                    raise POINTS_NOT_REVERSIBLE()
            done: list[int] = [
                int(d)  # type: ignore[call-overload]
                for d in await PointsEntry.filter(
                    reverses_id=original.id, kind=REVERSE
                ).values_list("delta", flat=True)
            ]
            if gives_back:
                left = -original.delta - sum(done)
                amount = left if points is None else points
                if amount <= 0 or amount > left:
                    raise POINTS_REVERSE_TOO_LARGE(left=left)
                entry = await _append(
                    member,
                    amount,
                    REVERSE,
                    key,
                    reason=reason,
                    reference=original.reference,
                    reverses_id=original.id,
                )
                await _restore_lots(original.id, amount, entry.id)
                return entry
            owed: list[int] = [
                int(r)  # type: ignore[call-overload]
                for r in await PointsDebt.filter(original_entry_id=original.id).values_list(
                    "remaining", flat=True
                )
            ]
            # settlements of debts are reverse entries too (in `done`); open debts count
            left = original.delta + sum(done) - sum(owed)
            amount = left if points is None else points
            if amount <= 0 or amount > left:
                raise POINTS_REVERSE_TOO_LARGE(left=left)
            taken = min(amount, member.points_balance)
            shortfall = amount - taken if owe_shortfall else 0
            growth = 0
            if original.growth_delta > 0 and original.delta > 0:
                growth = -(original.growth_delta * (taken + shortfall) // original.delta)
            entry = await _append(
                member,
                -taken,
                REVERSE,
                key,
                reason=reason,
                reference=original.reference,
                reverses_id=original.id,
                growth_delta=growth,
            )
            if taken:
                lot = await PointsLot.get_or_none(entry_id=original.id)
                await _consume_lots(
                    member.id, taken, entry.id, first_lot_id=lot.id if lot else None
                )
            if shortfall:
                await PointsDebt.create(
                    member_id=member.id,
                    entry_id=entry.id,
                    original_entry_id=original.id,
                    points=shortfall,
                    remaining=shortfall,
                    reason=reason[:128],
                    created_at=entry.created_at,
                )
            await _change_growth(member, growth, entry.id)
            return entry
    except IntegrityError:
        found = await _existing(key)
        if found is not None:
            return found
        raise


async def get_balance(member_id: int) -> int:
    found = await Member.filter(id=member_id).values_list("points_balance", flat=True)
    if not found:
        raise members_service.MEMBER_NOT_FOUND()
    return int(found[0])  # type: ignore[call-overload]


def points_for_paid(rules: Rules, paid_fen: int) -> int:
    return max(paid_fen, 0) // rules.earn.fen_per_point


def growth_for_paid(rules: Rules, paid_fen: int, points: int) -> int:
    return points + (max(paid_fen, 0) // 100 if rules.earn.growth_from_paid else 0)


async def grant_for_order(
    member_id: int, paid_fen: int, *, idempotency_key: str, reference: str
) -> PointsEntry | None:
    """Order-to-points at the configured rate (rounded down); None when it earns nothing."""
    rules = await get_rules()
    points = points_for_paid(rules, paid_fen)
    growth = growth_for_paid(rules, paid_fen, points)
    if points <= 0 and growth <= 0:
        return None
    return await _earn(
        member_id,
        points,
        idempotency_key,
        kind=EARN,
        reason="order",
        reference=reference,
        expires_at=None,
        growth=growth,
    )


async def expire_member_lots(member_id: int, now: datetime | None = None) -> int:
    """Write one expire entry for whatever is left in the member's lapsed lots."""
    moment = now or clock.now()
    async with in_transaction():
        member = await _lock_member(member_id)
        lots = await PointsLot.filter(
            member_id=member_id, expires_at__lte=moment, remaining__gt=0
        ).order_by("expires_at", "id")
        total = sum(lot.remaining for lot in lots)
        if total == 0:
            return 0
        key = f"expire:{member_id}:{int(moment.timestamp())}:{secrets.token_hex(4)}"
        entry = await _append(member, -total, EXPIRE, key, reason="expired", reference="")
        for lot in lots:
            moved = await PointsLot.filter(id=lot.id, remaining=lot.remaining).update(remaining=0)
            if not moved:
                raise RuntimeError(f"points lot {lot.id} changed under a member lock")
            await PointsLotUse.create(entry_id=entry.id, lot_id=lot.id, points=lot.remaining)
    return total


async def expire_lapsed_lots(batch: int = 500) -> int:
    """The expiry job: expire every lapsed lot with points left. Returns points expired."""
    moment = clock.now()
    total = members = 0
    after = 0
    while True:
        member_ids = sorted(
            {
                int(mid)  # type: ignore[call-overload]
                for mid in await PointsLot.filter(
                    expires_at__lte=moment, remaining__gt=0, member_id__gt=after
                )
                .order_by("member_id")
                .limit(batch)
                .values_list("member_id", flat=True)
            }
        )
        if not member_ids:
            break
        for member_id in member_ids:
            expired = await expire_member_lots(member_id, moment)
            total += expired
            members += 1 if expired else 0
        after = member_ids[-1]
    if total:
        log.info("expired %s points in %s members' lapsed lots", total, members)
    return total


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


# --- sign-in -----------------------------------------------------------------


async def sign_in(member_id: int) -> SignInOut:
    """Today's (Asia/Shanghai) sign-in. The unique (member, day) row decides races."""
    day = clock.today()
    rules = await get_rules()
    try:
        async with in_transaction():
            yesterday = await SignIn.get_or_none(member_id=member_id, day=day - timedelta(days=1))
            streak = yesterday.streak + 1 if yesterday else 1
            points = rules.sign_in.reward_for(streak)
            await SignIn.create(
                member_id=member_id, day=day, streak=streak, points=points, created_at=clock.now()
            )
            if points > 0:
                await _earn(
                    member_id,
                    points,
                    f"signin:{member_id}:{day.isoformat()}",
                    kind=EARN,
                    reason="sign_in",
                    reference=f"sign_in:{day.isoformat()}",
                    expires_at=None,
                    growth=points,
                )
    except IntegrityError:
        today = await SignIn.get_or_none(member_id=member_id, day=day)
        if today is None:
            raise
        raise ALREADY_SIGNED_IN(streak=today.streak) from None
    return SignInOut(
        points_awarded=points, streak=streak, day=day, balance=await get_balance(member_id)
    )


async def sign_in_status(member_id: int) -> SignInStatusOut:
    day = clock.today()
    rules = await get_rules()
    rows = {
        s.day: s
        for s in await SignIn.filter(
            member_id=member_id, day__gte=day - timedelta(days=1), day__lte=day
        )
    }
    today = rows.get(day)
    yesterday = rows.get(day - timedelta(days=1))
    if today is not None:
        streak = today.streak
        return SignInStatusOut(
            signed_in_today=True,
            streak=streak,
            today_reward=today.points,
            tomorrow_reward=rules.sign_in.reward_for(streak + 1),
        )
    streak = yesterday.streak if yesterday else 0
    return SignInStatusOut(
        signed_in_today=False,
        streak=streak,
        today_reward=rules.sign_in.reward_for(streak + 1),
        tomorrow_reward=rules.sign_in.reward_for(streak + 2),
    )


# --- birthday ------------------------------------------------------------------


async def grant_birthday_gifts(batch: int = 500) -> int:
    """Daily job: members whose birthday month it is get their level's gift, once a year."""
    today = clock.today()
    rules = await get_rules()
    granted = 0
    after = 0
    while True:
        members = (
            await Member.filter(birthday__isnull=False, id__gt=after)
            .order_by("id")
            .limit(batch)
            .values("id", "level", "birthday")
        )
        if not members:
            break
        after = members[-1]["id"]
        due = [m for m in members if m["birthday"].month == today.month]
        keys = {m["id"]: f"birthday:{m['id']}:{today.year}" for m in due}
        given = set(
            await PointsEntry.filter(idempotency_key__in=list(keys.values()) or [""]).values_list(
                "idempotency_key", flat=True
            )
        )
        for m in due:
            points = rules.level(m["level"]).birthday_points
            if keys[m["id"]] in given or points <= 0:
                continue
            await _earn(
                m["id"],
                points,
                keys[m["id"]],
                kind=EARN,
                reason="birthday",
                reference=f"birthday:{today.year}",
                expires_at=None,
                growth=0,
            )
            granted += 1
    return granted


# --- marketplace orders: import and binding --------------------------------------


_PLATFORM_ALIASES = {
    "天猫": "tmall",
    "淘宝": "taobao",
    "京东": "jd",
    "抖音": "douyin",
    "拼多多": "pdd",
    "快手": "kuaishou",
    "小红书": "xiaohongshu",
}


def normalize_platform(platform: str) -> str:
    name = platform.strip().lower()
    return _PLATFORM_ALIASES.get(name, name)


def _phone_digits(phone: str) -> str:
    kept = "".join(ch for ch in phone if ch.isdigit() or ch == "*")
    if len(kept) == 13 and kept.startswith("86"):
        kept = kept[2:]
    return kept


def phone_matches(on_order: str, given: str) -> bool:
    """Digits equal; a `*` in the imported phone (marketplaces mask numbers) matches any."""
    a, b = _phone_digits(on_order), _phone_digits(given)
    if not a or len(a) != len(b) or "*" in b:
        return False
    return all(x == "*" or x == y for x, y in zip(a, b, strict=True))


async def _bind_failure(member_id: int) -> None:
    settings = get_settings()
    await ratelimit.hit(
        f"points:bind:{member_id}",
        settings.points_bind_max_failures,
        settings.points_bind_window_seconds,
    )


@dataclass
class BindResult:
    order: ExternalOrder
    points: int
    balance: int


async def bind_order(member_id: int, platform: str, order_no: str, phone: str) -> BindResult:
    """Claim a marketplace order: awards order-to-points once, to one member.

    Wrong guesses (unknown order, wrong phone) count against a per-member limit so
    orders cannot be enumerated; past it every attempt is RATE_LIMITED."""
    settings = get_settings()
    limit_key = f"points:bind:{member_id}"
    if await ratelimit.over_limit(limit_key, settings.points_bind_max_failures):
        ttl = await get_redis().ttl(f"rl:{limit_key}")
        raise RATE_LIMITED(retry_after=max(int(ttl), 1))
    platform = normalize_platform(platform)
    order_no = order_no.strip()
    order = await ExternalOrder.get_or_none(platform=platform, order_no=order_no)
    if order is None:
        await _bind_failure(member_id)
        raise EXTERNAL_ORDER_NOT_FOUND()
    if not phone_matches(order.phone, phone):
        await _bind_failure(member_id)
        raise ORDER_PHONE_MISMATCH()

    def already(bound_to: int) -> Exception:
        return ORDER_ALREADY_BOUND_BY_YOU() if bound_to == member_id else ORDER_ALREADY_BOUND()

    if order.member_id is not None:
        raise already(order.member_id)
    if order.status not in BINDABLE_STATUSES or order.refunded_fen >= order.paid_fen > 0:
        raise ORDER_NOT_BINDABLE(status=order.status)
    rules = await get_rules()
    # points on what is left after refunds so far; later refunds claw back from there
    net_fen = order.paid_fen - order.refunded_fen
    points = points_for_paid(rules, net_fen)
    async with in_transaction():
        claimed = await ExternalOrder.filter(
            id=order.id,
            member_id__isnull=True,
            status__in=BINDABLE_STATUSES,
            refunded_fen=order.refunded_fen,
        ).update(
            member_id=member_id,
            bound_at=clock.now(),
            points_awarded=points,
            refunded_at_bind_fen=order.refunded_fen,
        )
        if not claimed:
            fresh = await ExternalOrder.get(id=order.id)
            if fresh.member_id is not None:
                raise already(fresh.member_id)
            raise ORDER_NOT_BINDABLE(status=fresh.status)
        growth = growth_for_paid(rules, net_fen, points)
        if points > 0 or growth > 0:
            await _earn(
                member_id,
                points,
                f"bind:{order.id}",
                kind=EARN,
                reason="bind_order",
                reference=f"{platform}:{order_no}"[:128],
                expires_at=None,
                growth=growth,
            )
    order.member_id = member_id
    order.points_awarded = points
    return BindResult(order=order, points=points, balance=await get_balance(member_id))


def clawback_due(order: ExternalOrder, refunded_fen: int) -> int:
    """Points of a bound order to have clawed back once `refunded_fen` is refunded:
    pro rata of what the points were awarded on, rounded down (all of them when all of
    it is refunded)."""
    base = order.paid_fen - order.refunded_at_bind_fen
    refunded = max(0, min(refunded_fen, order.paid_fen) - order.refunded_at_bind_fen)
    if base <= 0 or order.points_awarded <= 0:
        return 0
    return order.points_awarded * refunded // base


async def refund_external_order(
    order: ExternalOrder, refunded_fen: int, status: str | None = None
) -> int:
    """A marketplace refund of a claimed order (cumulative `refunded_fen`): its points are
    clawed back pro rata in one transaction with the order's update. What the member
    already spent is taken from the balance as far as it goes and the rest is owed
    (`PointsDebt`), never a negative balance. Returns the points newly clawed back (taken
    or owed); 0 when the refund is not larger than the one recorded (idempotent)."""
    if order.member_id is None or refunded_fen <= order.refunded_fen:
        return 0
    refunded_fen = min(refunded_fen, order.paid_fen)
    due = clawback_due(order, refunded_fen)
    claw = due - order.points_reversed
    async with in_transaction():
        moved = await ExternalOrder.filter(
            id=order.id,
            member_id=order.member_id,
            refunded_fen=order.refunded_fen,
            points_reversed=order.points_reversed,
        ).update(
            refunded_fen=refunded_fen,
            points_reversed=max(due, order.points_reversed),
            status=status or order.status,
            updated_at=clock.now(),
        )
        if not moved:
            return 0  # a concurrent import applied it (or a bigger one) first
        if claw > 0:
            await reverse(
                f"bind:{order.id}",
                idempotency_key=f"bind:{order.id}:refund:{refunded_fen}",
                reason="marketplace refund",
                points=claw,
                owe_shortfall=True,
            )
    return max(claw, 0)


_HEADER_ALIASES = {
    "平台": "platform",
    "订单号": "order_no",
    "订单编号": "order_no",
    "手机号": "phone",
    "手机": "phone",
    "实付金额(分)": "paid_fen",
    "实付(分)": "paid_fen",
    "支付时间": "paid_at",
    "付款时间": "paid_at",
    "状态": "status",
    "订单状态": "status",
    "退款金额(分)": "refunded_fen",
    "已退款(分)": "refunded_fen",
}
_STATUS_ALIASES = {
    "已付款": "paid",
    "已支付": "paid",
    "已发货": "shipped",
    "已完成": "completed",
    "交易成功": "completed",
    "已退款": "refunded",
    "退款成功": "refunded",
    "已取消": "cancelled",
    "交易关闭": "cancelled",
    "canceled": "cancelled",
}


def _clean_row(raw: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for name, value in raw.items():
        if name is None:
            continue
        field = str(name).strip().lstrip("\ufeff")
        field = _HEADER_ALIASES.get(field, field.lower())
        if isinstance(value, str):
            value = value.strip()
            if value == "" and field in ("paid_at", "status", "refunded_fen"):
                continue
        row[field] = value
    status = row.get("status")
    if isinstance(status, str):
        row["status"] = _STATUS_ALIASES.get(status, status.lower())
    return row


def parse_import(body: bytes, content_type: str) -> list[tuple[int, dict[str, Any]]]:
    """(row number, fields) from a CSV (row numbers count the header as row 1, like a
    spreadsheet) or JSON (a list, or {"orders": [...]}; rows numbered from 1)."""
    if len(body) > get_settings().upload_max_bytes:
        raise IMPORT_TOO_LARGE()
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            text = body.decode("gb18030")  # Excel on Chinese Windows saves CSV as GBK
        except UnicodeDecodeError:
            raise IMPORT_UNREADABLE(reason="not UTF-8 or GBK text") from None
    stripped = text.lstrip()
    if "json" in content_type or (stripped[:1] in ("[", "{") and "csv" not in content_type):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise IMPORT_UNREADABLE(reason=f"invalid JSON at line {exc.lineno}") from None
        except RecursionError:
            raise IMPORT_UNREADABLE(reason="JSON nested too deeply") from None
        except ValueError:  # e.g. an integer of more than 4300 digits
            raise IMPORT_UNREADABLE(reason="invalid JSON") from None
        if isinstance(data, dict):
            data = data.get("orders")
        if not isinstance(data, list):
            raise IMPORT_UNREADABLE(reason='expected a list of orders or {"orders": [...]}')
        return [
            (i, _clean_row(item) if isinstance(item, dict) else {"_invalid": item})
            for i, item in enumerate(data, start=1)
        ]
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames:
        raise IMPORT_UNREADABLE(reason="the file is empty")
    rows = []
    try:
        for raw in reader:
            if not any((v or "").strip() for v in raw.values() if isinstance(v, str)):
                continue  # blank line
            rows.append((reader.line_num, _clean_row(raw)))
    except csv.Error as exc:
        # e.g. a field over csv's 131072 characters or a NUL byte: the reader cannot say
        # where the next row starts, so nothing of this file is imported
        # DictReader.line_num is only updated after a good row; its reader's is current
        raise IMPORT_UNREADABLE(reason=f"line {reader.reader.line_num}: {exc}") from None
    return rows


def _row_problem(row: dict[str, Any]) -> str | None:
    """Why a row cannot be read as an order at all: not an object, a nested value (JSON)
    or a field longer than any real one. Checked before anything renders its values."""
    if "_invalid" in row:
        return "row: an order must be an object"
    for name, value in row.items():
        if isinstance(value, dict | list):
            return f"{name[:32]}: a nested value is not allowed"
        if isinstance(value, str) and len(value) > IMPORT_FIELD_MAX:
            return f"{name[:32]}: longer than {IMPORT_FIELD_MAX} characters"
    return None


def _shown_order_no(row: dict[str, Any]) -> str:
    value = row.get("order_no")
    if isinstance(value, bool) or not isinstance(value, str | int):
        return ""
    return scrub(str(value)[:64])


def _as_shanghai(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=clock.SHANGHAI)
    return moment.astimezone(UTC)


def _row_error(row: int, order_no: str, error: ErrorCode, **params: Any) -> ImportRowError:
    return ImportRowError(
        row=row, order_no=order_no, code=error.code, message=translate(error.message, **params)
    )


async def import_external_orders(rows: list[tuple[int, dict[str, Any]]]) -> ImportOut:
    """Insert new orders, update changed ones not yet claimed; idempotent on
    (platform, order_no). Bad rows are reported with their row number; good rows land."""
    errors: list[ImportRowError] = []
    valid: dict[tuple[str, str], tuple[int, ExternalOrderRow]] = {}
    for number, raw in rows:
        problem = _row_problem(raw)
        if problem is not None:
            errors.append(
                _row_error(number, _shown_order_no(raw), IMPORT_ROW_INVALID, detail=problem)
            )
            continue
        try:
            parsed = ExternalOrderRow.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "row"
            errors.append(
                _row_error(
                    number,
                    _shown_order_no(raw),
                    IMPORT_ROW_INVALID,
                    detail=f"{where}: {first.get('msg', '')}",
                )
            )
            continue
        parsed.platform = normalize_platform(parsed.platform)
        ident = (parsed.platform, parsed.order_no)
        if ident in valid:
            errors.append(
                _row_error(number, parsed.order_no, IMPORT_ROW_DUPLICATE, first_row=valid[ident][0])
            )
            continue
        valid[ident] = (number, parsed)

    created = updated = unchanged = refunded = 0
    items = list(valid.items())
    now = clock.now()
    for start in range(0, len(items), 500):
        chunk = items[start : start + 500]
        existing = {
            (o.platform, o.order_no): o
            for o in await ExternalOrder.filter(
                platform__in=list({p for (p, _n), _v in chunk}),
                order_no__in=[n for (_p, n), _v in chunk],
            )
        }
        new: list[ExternalOrder] = []
        for ident, (number, row) in chunk:
            fields = {
                "phone": row.phone,
                "paid_fen": row.paid_fen,
                "paid_at": _as_shanghai(row.paid_at),
                "status": row.status,
                "refunded_fen": row.refund_fen,
            }
            old = existing.get(ident)
            if old is None:
                new.append(
                    ExternalOrder(
                        platform=row.platform,
                        order_no=row.order_no,
                        imported_at=now,
                        updated_at=now,
                        **fields,
                    )
                )
                continue
            if all(getattr(old, k) == v for k, v in fields.items()):
                unchanged += 1
                continue
            if old.member_id is None:
                moved = await ExternalOrder.filter(id=old.id, member_id__isnull=True).update(
                    updated_at=now, **fields
                )
                if moved:
                    updated += 1
                    continue
                old = await ExternalOrder.get(id=old.id)  # claimed meanwhile
            # A claimed order takes only a bigger refund (its points are clawed back);
            # any other change would rewrite what the member was awarded points for.
            refund_applies = row.refund_fen > old.refunded_fen
            if refund_applies:
                refunding = row.status in ("refunded", "cancelled")
                await refund_external_order(old, row.refund_fen, row.status if refunding else None)
                refunded += 1
            others = {k: v for k, v in fields.items() if k not in ("status", "refunded_fen")}
            status_moved = row.status != old.status and not (
                refund_applies and row.status in ("refunded", "cancelled")
            )
            if (
                status_moved
                or row.refund_fen < old.refunded_fen
                or any(getattr(old, k) != v for k, v in others.items())
            ):
                errors.append(_row_error(number, row.order_no, IMPORT_ROW_BOUND))
        if new:
            # a concurrent import of the same file may have inserted some: those are skipped
            await ExternalOrder.bulk_create(new, ignore_conflicts=True)
            created += len(new)
    errors.sort(key=lambda e: e.row)
    return ImportOut(
        rows=len(rows),
        created=created,
        updated=updated,
        unchanged=unchanged,
        refunded=refunded,
        errors=errors,
    )


# --- ops ---------------------------------------------------------------------


async def admin_adjust(
    member_id: int,
    points: int,
    *,
    reason: str,
    staff: Any,
    idempotency_key: str | None,
    counts_for_growth: bool = True,
    expires_at: datetime | None = None,
) -> PointsEntry:
    """Ops grant (positive) or deduct (negative) with a reason; audited with the entry."""
    await members_service.get_member(member_id)
    expires_at = _as_shanghai(expires_at)
    if expires_at is not None and expires_at <= clock.now():
        raise VALIDATION_ERROR(
            fields=[{"field": "body.expires_at", "message": "must be in the future"}]
        )
    key = _key(f"admin:{idempotency_key}" if idempotency_key else f"admin:{secrets.token_hex(12)}")
    found = await _existing(key)
    if found is not None:
        return found
    async with in_transaction():
        if points > 0:
            entry = await _earn(
                member_id,
                points,
                key,
                kind=ADJUST,
                reason=reason,
                reference=f"staff:{staff.id}",
                expires_at=expires_at,
                growth=points if counts_for_growth else 0,
            )
        else:
            entry = await _take(
                member_id, -points, key, kind=ADJUST, reason=reason, reference=f"staff:{staff.id}"
            )
        await audit_service.record(
            staff,
            "points.adjust",
            f"member:{member_id}",
            points=points,
            reason=reason,
            entry_id=entry.id,
        )
    return entry


# Other domains add figures to the overview: async (start, end) -> {name: value}.
overview_extras: list[Callable[[datetime, datetime], Awaitable[dict[str, object]]]] = []


async def overview(start: date, end: date) -> dict[str, Any]:
    """Points issued / spent / expired and binding over [start, end] (Shanghai days)."""
    since, until = clock.local_days_bounds_utc(start, end)
    window = PointsEntry.filter(created_at__gte=since, created_at__lt=until)

    async def sums(**where: Any) -> dict[str, int]:
        rows = (
            await window.filter(**where)
            .annotate(total=Sum("delta"))
            .group_by("kind")
            .values("kind", "total")
        )
        return {r["kind"]: int(r["total"] or 0) for r in rows}

    plus, minus = await sums(delta__gt=0), await sums(delta__lt=0)
    issued = plus.get(EARN, 0) + plus.get(ADJUST, 0) + minus.get(REVERSE, 0)
    spent = -(minus.get(SPEND, 0) + minus.get(HOLD, 0)) - plus.get(VOID, 0) - plus.get(REVERSE, 0)
    expired = -minus.get(EXPIRE, 0)
    deducted = -minus.get(ADJUST, 0)
    imported_q = ExternalOrder.filter(imported_at__gte=since, imported_at__lt=until)
    imported = await imported_q.count()
    bound = await imported_q.filter(member_id__isnull=False).count()
    signed = (
        await SignIn.filter(day__gte=start, day__lte=end)
        .annotate(n=Count("id"))
        .group_by("member_id")
        .values("member_id")
    )
    extra: dict[str, object] = {}
    for provider in overview_extras:
        extra.update(await provider(since, until))
    return {
        "start": start,
        "end": end,
        "points_issued": issued,
        "points_spent": spent,
        "points_expired": expired,
        "points_deducted": deducted,
        "consumption_rate": round(spent / issued, 4) if issued > 0 else None,
        "orders_imported": imported,
        "orders_bound": bound,
        "binding_rate": round(bound / imported, 4) if imported else None,
        "members_signed_in": len(signed),
        "extra": extra,
    }


# --- the ledger check ----------------------------------------------------------


@dataclass
class LedgerProblem:
    member_id: int
    text: str


async def ledger_problems() -> tuple[int, list[LedgerProblem]]:
    """(members checked, problems): entries == balance == lots, nothing negative,
    every lot's remaining equals its points minus its net uses, and every debt's points
    equal what is left of it plus its settlements."""
    entry_sums = {
        r["member_id"]: int(r["total"] or 0)
        for r in await PointsEntry.annotate(total=Sum("delta"))
        .group_by("member_id")
        .values("member_id", "total")
    }
    lot_sums = {
        r["member_id"]: int(r["total"] or 0)
        for r in await PointsLot.annotate(total=Sum("remaining"))
        .group_by("member_id")
        .values("member_id", "total")
    }
    balances = {
        r[0]: int(r[1])
        for r in await Member.all().values_list("id", "points_balance")  # type: ignore[misc]
    }
    problems: list[LedgerProblem] = []
    for member_id in sorted(set(entry_sums) | set(lot_sums) | set(balances)):
        balance = balances.get(member_id, 0)
        entries = entry_sums.get(member_id, 0)
        lots = lot_sums.get(member_id, 0)
        if not (balance == entries == lots) or balance < 0:
            problems.append(
                LedgerProblem(
                    member_id,
                    f"member {member_id}: balance {balance} entries {entries} lots {lots}",
                )
            )
    used = {
        r["lot_id"]: int(r["total"] or 0)
        for r in await PointsLotUse.annotate(total=Sum("points"))
        .group_by("lot_id")
        .values("lot_id", "total")
    }
    settled = {
        r["reference"]: -int(r["total"] or 0)
        for r in await PointsEntry.filter(kind=REVERSE, reference__startswith="debt:")
        .annotate(total=Sum("delta"))
        .group_by("reference")
        .values("reference", "total")
    }
    for debt in await PointsDebt.all().values("id", "member_id", "points", "remaining"):
        paid = settled.get(f"debt:{debt['id']}", 0)
        if (
            not 0 <= debt["remaining"] <= debt["points"]
            or debt["points"] != debt["remaining"] + paid
        ):
            problems.append(
                LedgerProblem(
                    debt["member_id"],
                    f"debt {debt['id']}: owes {debt['points']}, {debt['remaining']} left, "
                    f"but settlements took {paid}",
                )
            )
    for lot in await PointsLot.all().values("id", "member_id", "points", "remaining"):
        expected = lot["points"] - used.get(lot["id"], 0)
        if lot["remaining"] != expected or not 0 <= lot["remaining"] <= lot["points"]:
            problems.append(
                LedgerProblem(
                    lot["member_id"],
                    f"lot {lot['id']}: remaining {lot['remaining']} but points {lot['points']}"
                    f" minus uses is {expected}",
                )
            )
    return len(balances), problems
