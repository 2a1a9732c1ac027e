"""The points ledger core: append-only entries, lots, debts, earning and spending.

Invariant, for every member at every commit: sum(entries.delta) == member.points_balance
== sum(lots.remaining) >= 0 (`mall check ledger` proves it).

Every write locks the member row first (SELECT ... FOR UPDATE on PostgreSQL; SQLite
runs one transaction at a time), so all ledger writes of one member are serialized
and lots are consumed without races; the balance itself still only moves by a
conditional update (`points_balance >= cost`). Every write is idempotent on a unique
key in the database; a second call with the same key returns the first result."""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from datetime import UTC, datetime
from typing import Any, TypeVar

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import IntegrityError
from tortoise.expressions import F
from tortoise.transactions import in_transaction

from mall.errors import MallError
from mall.kit import clock
from mall.kit.bulk import driver_sql, insert_rows, select_in
from mall.members import service as members_service
from mall.members.models import Member
from mall.points.errors import NOT_ENOUGH_POINTS, POINTS_AMOUNT_INVALID
from mall.points.models import (
    EARN,
    EXPIRE,
    REVERSE,
    SPEND,
    LevelChange,
    PointsDebt,
    PointsEntry,
    PointsHold,
    PointsLot,
    PointsLotUse,
)
from mall.points.rules import get_rules, lot_expiry
from mall.points.schemas import (
    Rules,
)

log = logging.getLogger("mall.points")

_KEY_MAX = 191


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


_Row = TypeVar("_Row")
_CHUNK = 300  # rows per set-based statement: 3 parameters a row stay under SQLite's old 999


def _chunks(rows: list[_Row]) -> Iterable[list[_Row]]:
    for start in range(0, len(rows), _CHUNK):
        yield rows[start : start + _CHUNK]


async def _execute(conn: BaseDBAsyncClient, sql: str, values: list[Any]) -> int:
    """Run an UPDATE written with `?` placeholders; the rows it changed."""
    moved, _rows = await conn.execute_query(driver_sql(conn, sql), values)
    return int(moved)


async def _select(conn: BaseDBAsyncClient, sql: str, values: Sequence[Any]) -> Sequence[Any]:
    """Run a SELECT written with `?` placeholders; its rows as the driver gives them
    (sqlite3.Row / asyncpg Record: by position), no model instance or conversion per row."""
    _n, rows = await conn.execute_query(driver_sql(conn, sql), list(values))
    return rows


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" * len(values))


def _value_rows(rows: int, width: int) -> str:
    """`rows` rows of `width` BIGINT placeholders for a VALUES list (cast, as PostgreSQL
    types a VALUES list's untyped parameters as text); its columns are `column1`...,
    the same on SQLite and PostgreSQL."""
    row = "(" + ", ".join(["CAST(? AS BIGINT)"] * width) + ")"
    return ", ".join([row] * rows)


@dataclass(frozen=True, slots=True)
class SpendRequest:
    """One spend of a `spend_many` batch: the arguments of `spend`."""

    member_id: int
    points: int
    idempotency_key: str
    reason: str
    reference: str = ""


@dataclass(frozen=True, slots=True)
class SpentEntry:
    """The entry `spend_many` answers with: the `PointsEntry` it wrote for a request, or
    the one already under the request's key (a replay), as that entry's fields read
    without a model instance (`created_at` and the rest are in the ledger)."""

    id: int
    member_id: int
    delta: int
    balance_after: int
    kind: str
    reason: str
    reference: str
    idempotency_key: str


# SpentEntry's fields, in order, as selected from points_entry
_ENTRY_COLUMNS = [f.name for f in dataclass_fields(SpentEntry)]


@dataclass(slots=True)
class _Lot:
    """An open lot of a locked member: what it had, and what the batch leaves in it."""

    id: int
    before: int
    remaining: int


@dataclass(slots=True)
class _Planned:
    """A spend `spend_many` decided to write: its entry's fields and the lots it takes."""

    member_id: int
    points: int
    balance_after: int
    key: str
    reason: str
    reference: str
    uses: list[tuple[int, int]]  # (lot id, points taken)


async def spend_many(requests: Sequence[SpendRequest]) -> list[SpentEntry | MallError]:
    """`spend` for each request, in order, written set-based: the result of each in its
    slot (its entry, or the MallError `spend` would raise for it, which changes nothing
    for that request alone). Runs in the caller's transaction when there is one (as a
    savepoint), else in its own.

    Statements: one locking SELECT of the batch's members (id order, so consumers never
    deadlock), one SELECT of existing keys, one of the members' open lots in spend order;
    then each member's balance by a conditional update (`points_balance >= total`) and
    each lot taken from by one (`remaining = expected`), up to `_CHUNK` rows to a
    statement; one insert of the entries, one SELECT of their ids and one insert of the
    lot uses. The consumers call it with hundreds of requests a batch: rows are read and
    written as tuples and plain values, never as model instances."""
    if not requests:
        return []
    for attempt in range(3):
        try:
            async with in_transaction() as conn:
                return await _spend_many(requests, conn)
        except IntegrityError:
            # a twin spend with one of our keys committed before we locked its member
            # (its member differs from ours): the next pass finds it as existing
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


# `_spend_order` in SQL (soonest expiry first, never-expiring last, then id), the same on
# SQLite, whose datetimes are UTC text in time order (kit.dbtime), as on PostgreSQL: the
# expiry itself is never read
_OPEN_LOTS_IN_SPEND_ORDER = (
    "SELECT id, member_id, remaining FROM points_lot WHERE member_id IN ({}) AND remaining > 0 "
    "ORDER BY (CASE WHEN expires_at IS NULL THEN 1 ELSE 0 END), expires_at, id"
)


async def _spend_many(
    requests: Sequence[SpendRequest], conn: BaseDBAsyncClient
) -> list[SpentEntry | MallError]:
    results: list[SpentEntry | MallError | None] = [None] * len(requests)
    keys: list[str | None] = []
    for i, r in enumerate(requests):
        try:
            _positive(r.points)
        except MallError as exc:
            results[i] = exc
            keys.append(None)
            continue
        keys.append(_key(r.idempotency_key))
    member_ids = sorted({r.member_id for r, k in zip(requests, keys, strict=True) if k})
    balance: dict[int, int] = {}
    existing: dict[str, SpentEntry] = {}
    open_lots: dict[int, list[_Lot]] = {}
    if member_ids:
        # the lock first, then the keys: a twin that held the lock has committed its entry
        balance = await members_service.locked(member_ids, "points_balance")
        wanted = sorted({k for k in keys if k})
        rows = await select_in(PointsEntry, "idempotency_key", wanted, _ENTRY_COLUMNS)
        existing = {e.idempotency_key: e for e in (SpentEntry(*row) for row in rows)}
    if balance:
        locked = list(balance)
        lots = await _select(conn, _OPEN_LOTS_IN_SPEND_ORDER.format(_marks(locked)), locked)
        for lot_id, member_id, remaining in lots:
            open_lots.setdefault(member_id, []).append(_Lot(lot_id, remaining, remaining))
    planned: dict[str, _Planned] = {}
    slots: dict[int, str] = {}  # request index -> key of the entry it gets
    for i, (r, key) in enumerate(zip(requests, keys, strict=True)):
        if key is None:
            continue
        if key in existing:
            results[i] = existing[key]
            continue
        if key in planned:  # the same key earlier in this batch: its entry
            slots[i] = key
            continue
        if r.member_id not in balance:
            results[i] = members_service.MEMBER_NOT_FOUND()
            continue
        if balance[r.member_id] < r.points:
            results[i] = NOT_ENOUGH_POINTS(balance=balance[r.member_id], cost=r.points)
            continue
        balance[r.member_id] -= r.points
        uses: list[tuple[int, int]] = []
        left = r.points
        for lot in open_lots.get(r.member_id, []):
            if left == 0:
                break
            if lot.remaining == 0:
                continue
            take = min(lot.remaining, left)
            lot.remaining -= take
            uses.append((lot.id, take))
            left -= take
        if left:
            raise RuntimeError(f"member {r.member_id} lots are {left} points short of the balance")
        planned[key] = _Planned(
            r.member_id, r.points, balance[r.member_id], key, r.reason, r.reference, uses
        )
        slots[i] = key
    if planned:
        made = await _write_planned(conn, list(planned.values()), open_lots)
        for i, key in slots.items():
            results[i] = made[key]
    done = [r for r in results if r is not None]
    if len(done) != len(requests):
        raise RuntimeError("spend_many left a request without a result")
    return done


async def _write_planned(
    conn: BaseDBAsyncClient, planned: list[_Planned], open_lots: dict[int, list[_Lot]]
) -> dict[str, SpentEntry]:
    """The writes of `spend_many`: balances, lots, entries, lot uses. Members locked."""
    totals: dict[int, int] = {}
    for p in planned:
        totals[p.member_id] = totals.get(p.member_id, 0) + p.points
    # each member's balance by a conditional update (`points_balance >= total`), many
    # members to a statement (joined to a VALUES list: linear in the rows, where a CASE
    # per row was quadratic): a statement that moves fewer rows than it names means a
    # balance changed under the lock, and the whole batch rolls back
    by_member = sorted(totals.items())
    for chunk in _chunks(by_member):
        moved = await _execute(
            conn,
            "UPDATE member SET points_balance = member.points_balance - v.column2 "
            f"FROM (VALUES {_value_rows(len(chunk), 2)}) AS v "
            "WHERE member.id = v.column1 AND member.points_balance >= v.column2",
            [v for member_id, total in chunk for v in (member_id, total)],
        )
        if moved != len(chunk):
            raise RuntimeError("a member's balance changed under a member lock")
    # each lot taken from by a conditional update (`remaining = expected`), the same way
    changed = [
        lot
        for member_id in sorted(totals)
        for lot in open_lots.get(member_id, [])
        if lot.remaining != lot.before
    ]
    for part in _chunks(changed):
        moved = await _execute(
            conn,
            "UPDATE points_lot SET remaining = v.column2 "
            f"FROM (VALUES {_value_rows(len(part), 3)}) AS v "
            "WHERE points_lot.id = v.column1 AND points_lot.remaining = v.column3",
            [v for lot in part for v in (lot.id, lot.remaining, lot.before)],
        )
        if moved != len(part):
            raise RuntimeError("a points lot changed under a member lock")
    now = clock.now()
    await insert_rows(
        PointsEntry,
        [
            {
                "member_id": p.member_id,
                "delta": -p.points,
                "balance_after": p.balance_after,
                "kind": SPEND,
                "reason": p.reason[:128],
                "reference": p.reference[:128],
                "idempotency_key": p.key,
                "reverses_id": None,
                "growth_delta": 0,
                "created_at": now,
            }
            for p in planned
        ],
    )
    # the insert does not return ids: read them back by key
    keys = [p.key for p in planned]
    rows = await select_in(PointsEntry, "idempotency_key", keys, ["idempotency_key", "id"])
    ids: dict[str, int] = {key: entry_id for key, entry_id in rows}
    await insert_rows(
        PointsLotUse,
        [
            {"entry_id": ids[p.key], "lot_id": lot_id, "points": take, "by_entry_id": None}
            for p in planned
            for lot_id, take in p.uses
        ],
    )
    return {
        p.key: SpentEntry(
            ids[p.key],
            p.member_id,
            -p.points,
            p.balance_after,
            SPEND,
            p.reason[:128],
            p.reference[:128],
            p.key,
        )
        for p in planned
    }


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
