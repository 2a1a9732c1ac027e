"""The points-mall consumer: turns the redemptions decided in Redis (each item's stream,
consumer group `redemptions`) into database rows, in batches.

One transaction per batch of an item's entries: the member's level checked first, then
the points of the whole batch in one `points_service.spend_many` (idempotency key per
reservation, so never twice), then each redemption in its own savepoint: the balance
threshold checked authoritatively, the coupons of a voucher item, the
`PointsMallRedemption` (unique reservation id) and the database stock guard (an item
without coupons: the rows in one insert under one guard for the batch's units, and one
by one only when that refuses). Should one of those refuse a redemption whose points
the batch spent, the spends and savepoints are rolled back and run again without it
(so a released redemption has no ledger entries, and a later redemption of the same
member sees its points). A redemption the database refuses becomes a `released` record
with a reason code (the refusal's code in lower case: `not_enough_points`,
`level_too_low`, `points_threshold_not_met`, `coupon_sold_out`, ...), and after the
commit its units go back to Redis, once: the batch's entries are settled in one script
call (`stock.settle_many`, every key under the item's hash tag). Entries are
acknowledged only after they are settled, so a crash anywhere replays them and the
unique reservation id dedupes. Rows go in with `kit.bulk.insert_rows` (no model
instance per row); what the consumer needs afterwards is a `Written` record. The
stream reading, claiming and acknowledging is the kit's (`mall.kit.stock.StreamConsumer`)."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from dataclasses import dataclass
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.expressions import F

from mall.config import get_settings
from mall.coupons import service as coupons_service
from mall.errors import MallError
from mall.kit import jobs, tx
from mall.kit import stock as kit
from mall.kit.bulk import insert_rows, select_in
from mall.members import service as members_service
from mall.points import service as points_service
from mall.pointsmall import cash, stock
from mall.pointsmall.models import PointsMallItem, PointsMallRedemption
from mall.pointsmall.redeem import (
    ACTIVITY_FULL,
    LEVEL_TOO_LOW,
    OUT_OF_STOCK,
    POINTS_THRESHOLD_NOT_MET,
)
from mall.pointsmall.stock import Pending, Settle, item_keys

log = logging.getLogger("mall.pointsmall")

_STATUS_AFTER_REDEEM = {"gift": "awaiting_shipment", "voucher": "issued", "activity": "enrolled"}
_VOUCHER_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I
# the database's own stock guard refused a unit Redis handed out: it never existed
_GUARD_CODES = (OUT_OF_STOCK.code, ACTIVITY_FULL.code)


# a random byte -> a character: 256 is a multiple of 32, so each character is as likely
_VOUCHER_BYTES = bytes(ord(_VOUCHER_ALPHABET[b % 32]) for b in range(256))


def _voucher_code() -> str:
    # one read of the system's randomness for the 12 characters (a burst writes thousands)
    raw = secrets.token_bytes(12).translate(_VOUCHER_BYTES).decode()
    return f"{raw[:4]}-{raw[4:8]}-{raw[8:]}"


@dataclass(frozen=True, slots=True)
class Entry:
    """One decided redemption, as reserve.lua appended it."""

    entry_id: str
    rid: str
    member_id: int
    quantity: int
    points: int
    label: str
    at_ms: int
    address: dict[str, Any] | None
    cash: int = 0  # points + cash: the cash part (cash.py writes it)

    def pending(self, item_id: int) -> Pending:
        period = item_keys(item_id, self.label).period if self.label else ""
        return Pending(self.member_id, self.quantity, self.points, self.at_ms, period)


def _entry(entry_id: str, fields: dict[str, str]) -> Entry | None:
    if not fields:  # deleted from the stream while pending: nothing left to persist
        return None
    return Entry(
        entry_id,
        fields["rid"],
        int(fields["member"]),
        int(fields["qty"]),
        int(fields["points"]),
        fields.get("label", ""),
        int(fields.get("ts") or 0),
        json.loads(fields["address"]) if fields.get("address") else None,
        int(fields.get("cash") or 0),
    )


@dataclass(frozen=True, slots=True)
class Written:
    """What a redemption was written as (its row's status and release reason): all the
    consumer needs after the commit, without a model instance per row."""

    status: str
    release_reason: str = ""


class _Again(Exception):
    """A pass of a batch refused redemptions after their points were spent: roll it back."""


# --- one batch --------------------------------------------------------------------------


def _check_threshold(item: PointsMallItem, e: Entry, spent: points_service.SpentEntry) -> None:
    # the threshold is on the balance at the moment of the spend, which the entry states
    before = spent.balance_after + e.points
    if item.min_points_balance and before < item.min_points_balance:
        raise POINTS_THRESHOLD_NOT_MET(threshold=item.min_points_balance, balance=before)


def _template_id(item: PointsMallItem) -> int | None:
    return item.coupon_template_id if item.kind == "voucher" else None


def _kept(item: PointsMallItem) -> Written:
    """What a redemption of `item` whose points are spent is written as."""
    return Written(_STATUS_AFTER_REDEEM.get(item.kind, "issued"))


def _identity(item: PointsMallItem, e: Entry) -> dict[str, Any]:
    """The columns every redemption row has, kept or released."""
    return {
        "reservation_id": e.rid,
        "item_id": item.id,
        "member_id": e.member_id,
        "item_name": item.name,
        "kind": item.kind,
        "quantity": e.quantity,
    }


def _row(
    item: PointsMallItem, e: Entry, coupon_ids: list[int] | None, kept: Written, codes: bool
) -> dict[str, Any]:
    """The redemption row (for `insert_rows`) of an entry whose points are spent; `codes`:
    the item's redemptions carry a voucher code (`_codes`)."""
    return {
        **_identity(item, e),
        "points_spent": e.points,
        "status": kept.status,
        "spend_key": _spend_key(e),
        "period_label": e.label,
        "voucher_code": _voucher_code() if codes else None,
        "coupon_ids": coupon_ids,
        "address": e.address,
    }


def _codes(item: PointsMallItem) -> bool:
    """A voucher without a coupons template: each redemption gets a voucher code."""
    return item.kind == "voucher" and not _template_id(item)


async def _take_stock(item: PointsMallItem, quantity: int) -> None:
    """The database's own stock guard; refuses with the item's sold-out code."""
    taken = await PointsMallItem.filter(id=item.id, stock__gte=quantity).update(
        stock=F("stock") - quantity
    )
    if not taken:
        raise ACTIVITY_FULL() if item.kind == "activity" else OUT_OF_STOCK()


async def _write(item: PointsMallItem, e: Entry, spent: points_service.SpentEntry) -> Written:
    """The redemption's writes after its spend; called inside its savepoint (a MallError
    undoes them)."""
    _check_threshold(item, e, spent)
    template_id = _template_id(item)
    coupon_ids: list[int] | None = None
    if template_id is not None:
        # each grant gives its Redis win back if this savepoint rolls back
        coupon_ids = []
        for i in range(e.quantity):
            coupon = await coupons_service.grant(
                e.member_id, template_id, grant_key=f"pointsmall:{e.rid}:{i}", source="points_mall"
            )
            coupon_ids.append(coupon.id)
    kept = _kept(item)
    await insert_rows(PointsMallRedemption, [_row(item, e, coupon_ids, kept, _codes(item))])
    await _take_stock(item, e.quantity)
    return kept


async def _write_at_once(
    item: PointsMallItem, spent: list[tuple[Entry, points_service.SpentEntry]]
) -> dict[str, Written] | None:
    """The rows of an item without coupons in one insert, the stock guard once for all
    (`stock >= total`), in a savepoint; None when either refuses (then one by one finds
    which)."""
    kept, codes = _kept(item), _codes(item)
    try:
        async with tx.transaction():
            await _take_stock(item, sum(e.quantity for e, _s in spent))
            await insert_rows(
                PointsMallRedemption, [_row(item, e, None, kept, codes) for e, _s in spent]
            )
    except (MallError, IntegrityError):
        return None
    return {e.rid: kept for e, _s in spent}


def _spend_key(e: Entry) -> str:
    return f"pointsmall:redeem:{e.rid}"


async def _pass(
    item: PointsMallItem,
    entries: list[Entry],
    refused: dict[str, str],
    gone: set[str],
    after_spend: dict[str, str],
) -> dict[str, Written]:
    """One try at the batch (in the caller's savepoint): the points of every entry in one
    `spend_many`, then the rest of each redemption in its own savepoint (an item without
    coupons: every row in one insert under one stock guard, unless it refuses). A refusal of the
    spend itself (short of points) changes nothing and is recorded in `refused`; a
    refusal after the spend is recorded in `after_spend` and raises `_Again`, so the
    caller rolls the pass back (spends included) and runs it again without that
    redemption: a released redemption never leaves entries in the points history."""
    results = await points_service.spend_many(
        [
            points_service.SpendRequest(
                e.member_id,
                e.points,
                _spend_key(e),
                reason="pointsmall.redeem",
                reference=f"pointsmall_item:{item.id}",
            )
            for e in entries
        ]
    )
    spent: list[tuple[Entry, points_service.SpentEntry]] = []
    for e, result in zip(entries, results, strict=True):
        if not isinstance(result, MallError):
            spent.append((e, result))
        elif result.code == members_service.MEMBER_NOT_FOUND.code:
            gone.add(e.rid)
        else:
            refused[e.rid] = result.code.lower()
    if spent and _template_id(item) is None:
        for e, entry in spent:
            try:
                _check_threshold(item, e, entry)
            except MallError as exc:
                after_spend[e.rid] = exc.code.lower()
        if after_spend.keys() & {e.rid for e, _s in spent}:
            raise _Again()
        at_once = await _write_at_once(item, spent)
        if at_once is not None:
            return at_once
    written: dict[str, Written] = {}
    again = False
    for e, entry in spent:
        try:
            async with tx.transaction():
                written[e.rid] = await _write(item, e, entry)
        except MallError as exc:
            after_spend[e.rid] = exc.code.lower()
            again = True
    if again:
        raise _Again()
    return written


async def _batch(item: PointsMallItem, entries: list[Entry]) -> dict[str, Written | None]:
    """Write `entries` (none written before) in the current transaction: each its
    redemption, its `released` record, or None (the member no longer exists: nothing to
    record, the units go back).

    Order: the members locked and their levels read (before any spend), then one
    `_pass`; a pass that refused a redemption after spending its points is rolled back
    and run again without it (a pass adds at least one refusal, so this ends; normally
    there is one pass)."""
    refused: dict[str, str] = {}  # reservation id -> release reason
    gone: set[str] = set()
    # the members' rows first, in id order, before any other lock (the holds of points +
    # cash lock them in the stream's order, the stock guard locks the item): two
    # consumers' batches wait for each other here instead of deadlocking
    levels = await members_service.locked(sorted({e.member_id for e in entries}), "level")
    for e in entries:
        level = levels.get(e.member_id)
        if level is None:
            gone.add(e.rid)
        elif level < item.level_required:
            refused[e.rid] = LEVEL_TOO_LOW.code.lower()
    # points + cash: each in its own savepoint, the points held until the cash is paid
    written_cash: dict[str, Written] = {}
    for e in entries:
        if e.cash and e.rid not in refused and e.rid not in gone:
            try:
                async with tx.transaction():
                    pending = await cash.write_pending(
                        item,
                        reservation_id=e.rid,
                        member_id=e.member_id,
                        quantity=e.quantity,
                        points=e.points,
                        cash_fen=e.cash,
                        label=e.label,
                        address=e.address,
                    )
                written_cash[e.rid] = Written(pending.status, pending.release_reason)
            except MallError as exc:
                if exc.code == members_service.MEMBER_NOT_FOUND.code:
                    gone.add(e.rid)
                else:
                    refused[e.rid] = exc.code.lower()
    after_spend: dict[str, str] = {}  # refusals after the spend: kept across passes
    while True:
        # what the spend refuses (short of points, member gone) is decided again each pass
        refused_now = {**refused, **after_spend}
        gone_now = set(gone)
        todo = [
            e for e in entries if not e.cash and e.rid not in refused_now and e.rid not in gone_now
        ]
        try:
            async with tx.transaction():
                written = await _pass(item, todo, refused_now, gone_now, after_spend)
        except _Again:
            continue
        break
    out: dict[str, Written | None] = {}
    written.update(written_cash)
    released: list[dict[str, Any]] = []
    for e in entries:
        if e.rid in written:
            out[e.rid] = written[e.rid]
        elif e.rid in gone_now:
            log.warning("pointsmall item %s: member %s no longer exists", item.id, e.member_id)
            out[e.rid] = None
        else:
            reason = refused_now[e.rid]
            released.append(_released(item, e, reason))
            out[e.rid] = Written("released", reason)
    await insert_rows(PointsMallRedemption, released)  # in one insert, in entry order
    return out


def _released(item: PointsMallItem, e: Entry, reason: str) -> dict[str, Any]:
    """The `released` record (for `insert_rows`) of an entry the database refused."""
    return {
        **_identity(item, e),
        "points_spent": 0,
        "status": "released",
        "release_reason": reason,
        "spend_key": "",
        "period_label": e.label,
        "address": None,  # nothing to ship: no copy of the address is kept
    }


async def persist_batch(item_id: int, entries: list[Entry]) -> dict[str, Written | None]:
    """Write the entries of one item: one transaction for the batch (for its halves, and
    theirs, if the batch fails as a whole: `kit.in_halves`). Returns what each was
    written as (None: the member is gone, nothing written); an entry left out stays
    pending in the stream and is tried again."""
    item = await PointsMallItem.get_or_none(id=item_id)
    if item is None:
        log.error("pointsmall item %s is gone; %s entries left pending", item_id, len(entries))
        return {}
    found = await select_in(
        PointsMallRedemption,
        "reservation_id",
        [e.rid for e in entries],
        ["reservation_id", "status", "release_reason"],
    )
    results: dict[str, Written | None] = {
        str(rid): Written(str(status), str(reason)) for rid, status, reason in found
    }
    todo = [e for e in entries if e.rid not in results]
    if not todo:
        return results
    try:
        async with tx.transaction():
            batch = await _batch(item, todo)
        results.update(batch)
        return results
    except Exception as exc:
        if jobs.unreachable(exc):
            raise
        log.warning(
            "pointsmall item %s: batch of %s failed (%s); in halves", item_id, len(todo), exc
        )

        async def write(part: list[Entry]) -> None:
            async with tx.transaction():
                results.update(await _batch(item, part))

        def lost(e: Entry, why: Exception) -> None:
            log.error(
                "pointsmall item %s: reservation %s not persisted", item_id, e.rid, exc_info=why
            )

        await kit.in_halves(todo, write, lost, exc)
    return results


def _settle(item_id: int, e: Entry, written: Written | None) -> Settle:
    """How an entry written as `written` is settled in Redis."""
    if written is None:  # the member is gone: no record, the units go back
        return Settle(e.rid, e.pending(item_id), give_back=True)
    give_back = written.status == "released" and written.release_reason.upper() not in _GUARD_CODES
    if written.status == "released" and not give_back:
        log.error(
            "pointsmall item %s: Redis handed out units the database does not have "
            "(reservation %s); the reconciler repairs the stock",
            item_id,
            e.rid,
        )
    return Settle(e.rid, e.pending(item_id), give_back=give_back)


# --- the stream ------------------------------------------------------------------------


async def _persist_entries(item_id: int, raw: list[kit.Entry]) -> list[str]:
    """The kit consumer's batch: written (or released) in one transaction, then settled
    in Redis in one call; the ids of the entries done (acknowledged by the kit after)."""
    entries = [e for entry_id, fields in raw if (e := _entry(entry_id, fields)) is not None]
    results = await persist_batch(item_id, entries)
    # an entry left out of `results` stays pending: claimed again after the idle time
    written = [e for e in entries if e.rid in results]
    await stock.settle_many(item_id, [_settle(item_id, e, results[e.rid]) for e in written])
    return [e.entry_id for e in written]


CONSUMER = kit.StreamConsumer(
    stock.WINS,
    _persist_entries,
    claim_idle_ms=lambda: get_settings().pointsmall_claim_idle_seconds * 1000,
    name="pointsmall item",
)


async def read_entries(
    item_id: int, consumer: str, *, count: int, claim_idle_ms: int
) -> list[kit.Entry]:
    """Entries for `consumer` (claimed idle ones first, then new ones); pending until
    the consumer acknowledges them."""
    return await stock.WINS.read(item_id, consumer, count=count, claim_idle_ms=claim_idle_ms)


async def process_pending_once(
    consumer: str = "local", *, count: int = 200, claim_idle_ms: int | None = None
) -> int:
    """One pass over every warm item's stream; returns how many entries are done."""
    return await CONSUMER.process_once(consumer, count=count, claim_idle_ms=claim_idle_ms)


async def drain(consumer: str = "local", *, claim_idle_ms: int | None = None) -> int:
    """Run passes until the streams are empty (tests, drills)."""
    return await CONSUMER.drain(consumer, claim_idle_ms=claim_idle_ms)


async def backlog() -> int:
    """Decided redemptions not yet written, over every warm item (bench, drills)."""
    return sum([await stock.WINS.backlog(i) for i in await stock.WINS.active_ids()])


async def run_consumer(stop: asyncio.Event) -> None:
    """Persist redemptions until `stop` (the `mall worker` consumer)."""
    await CONSUMER.run(stop)
