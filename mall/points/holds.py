"""Points holds (reserve, capture, void, release when expired) and reversals of entries.

Same invariants as mall.points.ledger: every write locks the member row first, moves the
balance only by a conditional update and is idempotent on a unique key."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from mall.config import get_settings
from mall.errors import MallError
from mall.kit import clock
from mall.points.errors import (
    POINTS_ENTRY_NOT_FOUND,
    POINTS_HOLD_CLOSED,
    POINTS_HOLD_NOT_FOUND,
    POINTS_NOT_REVERSIBLE,
    POINTS_REVERSE_TOO_LARGE,
)
from mall.points.ledger import (
    _append,
    _change_growth,
    _consume_lots,
    _existing,
    _key,
    _lock_member,
    _positive,
    _restore_lots,
    _take,
)
from mall.points.models import (
    ADJUST,
    EARN,
    HOLD,
    REVERSE,
    SPEND,
    VOID,
    PointsDebt,
    PointsEntry,
    PointsHold,
    PointsLot,
)

log = logging.getLogger("mall.points")


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
