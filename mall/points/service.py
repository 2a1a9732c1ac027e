"""The points ledger and every way members earn points.

Invariant, for every member at every commit: sum(entries.delta) == member.points_balance
== sum(lots.remaining) >= 0 (`mall check ledger` proves it).

Every write locks the member row first (SELECT ... FOR UPDATE on PostgreSQL; SQLite
runs one transaction at a time), so all ledger writes of one member are serialized
and lots are consumed without races; the balance itself still only moves by a
conditional update (`points_balance >= cost`). Every write is idempotent on a unique
key in the database; a second call with the same key returns the first result."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from tortoise.functions import Count, Sum
from tortoise.transactions import in_transaction

from mall.audit import service as audit_service
from mall.errors import VALIDATION_ERROR
from mall.kit import clock
from mall.members import service as members_service
from mall.members.models import Member
from mall.points.birthday import grant_birthday_gifts as grant_birthday_gifts
from mall.points.errors import ALREADY_SIGNED_IN as ALREADY_SIGNED_IN
from mall.points.errors import EXTERNAL_ORDER_NOT_FOUND as EXTERNAL_ORDER_NOT_FOUND
from mall.points.errors import IMPORT_ROW_BOUND as IMPORT_ROW_BOUND
from mall.points.errors import IMPORT_ROW_DUPLICATE as IMPORT_ROW_DUPLICATE
from mall.points.errors import IMPORT_ROW_INVALID as IMPORT_ROW_INVALID
from mall.points.errors import IMPORT_TOO_LARGE as IMPORT_TOO_LARGE
from mall.points.errors import IMPORT_UNREADABLE as IMPORT_UNREADABLE
from mall.points.errors import NOT_ENOUGH_POINTS as NOT_ENOUGH_POINTS
from mall.points.errors import ORDER_ALREADY_BOUND as ORDER_ALREADY_BOUND
from mall.points.errors import ORDER_ALREADY_BOUND_BY_YOU as ORDER_ALREADY_BOUND_BY_YOU
from mall.points.errors import ORDER_NOT_BINDABLE as ORDER_NOT_BINDABLE
from mall.points.errors import ORDER_PHONE_MISMATCH as ORDER_PHONE_MISMATCH
from mall.points.errors import POINTS_AMOUNT_INVALID as POINTS_AMOUNT_INVALID
from mall.points.errors import POINTS_ENTRY_NOT_FOUND as POINTS_ENTRY_NOT_FOUND
from mall.points.errors import POINTS_HOLD_CLOSED as POINTS_HOLD_CLOSED
from mall.points.errors import POINTS_HOLD_NOT_FOUND as POINTS_HOLD_NOT_FOUND
from mall.points.errors import POINTS_NOT_REVERSIBLE as POINTS_NOT_REVERSIBLE
from mall.points.errors import POINTS_REVERSE_TOO_LARGE as POINTS_REVERSE_TOO_LARGE
from mall.points.errors import RULES_VERSION_CONFLICT as RULES_VERSION_CONFLICT
from mall.points.holds import capture as capture
from mall.points.holds import hold as hold
from mall.points.holds import release_expired_holds as release_expired_holds
from mall.points.holds import reverse as reverse
from mall.points.holds import void as void
from mall.points.ledger import SpendRequest as SpendRequest
from mall.points.ledger import SpentEntry as SpentEntry
from mall.points.ledger import _earn, _existing, _key, _take
from mall.points.ledger import earn as earn
from mall.points.ledger import expire_lapsed_lots as expire_lapsed_lots
from mall.points.ledger import expire_member_lots as expire_member_lots
from mall.points.ledger import get_balance as get_balance
from mall.points.ledger import grant_for_order as grant_for_order
from mall.points.ledger import growth_for_paid as growth_for_paid
from mall.points.ledger import owed as owed
from mall.points.ledger import points_for_paid as points_for_paid
from mall.points.ledger import spend as spend
from mall.points.ledger import spend_many as spend_many
from mall.points.levels import ledger_page as ledger_page
from mall.points.levels import level_of as level_of
from mall.points.levels import relevel_if_rules_changed as relevel_if_rules_changed
from mall.points.levels import relevel_members as relevel_members
from mall.points.levels import summary as summary
from mall.points.marketplace import BINDABLE_STATUSES as BINDABLE_STATUSES
from mall.points.marketplace import IMPORT_FIELD_MAX as IMPORT_FIELD_MAX
from mall.points.marketplace import BindResult as BindResult
from mall.points.marketplace import _as_shanghai
from mall.points.marketplace import bind_order as bind_order
from mall.points.marketplace import clawback_due as clawback_due
from mall.points.marketplace import import_external_orders as import_external_orders
from mall.points.marketplace import normalize_platform as normalize_platform
from mall.points.marketplace import parse_import as parse_import
from mall.points.marketplace import phone_matches as phone_matches
from mall.points.marketplace import refund_external_order as refund_external_order
from mall.points.models import (
    ADJUST,
    EARN,
    EXPIRE,
    HOLD,
    REVERSE,
    SPEND,
    VOID,
    ExternalOrder,
    PointsDebt,
    PointsEntry,
    PointsLot,
    PointsLotUse,
    SignIn,
)
from mall.points.rules import get_rules as get_rules
from mall.points.rules import get_rules_version as get_rules_version
from mall.points.rules import lot_expiry as lot_expiry
from mall.points.rules import save_rules as save_rules
from mall.points.signin import sign_in as sign_in
from mall.points.signin import sign_in_status as sign_in_status

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
