"""The points-mall consumer: turns the redemptions decided in Redis (each item's stream,
consumer group `redemptions`) into database rows, in batches.

One transaction per batch of an item's entries, each redemption in its own savepoint:
the points spend (idempotency key per reservation, so never twice), the member's level
and the balance threshold checked authoritatively, the coupons of a voucher item, the
`PointsMallRedemption` (unique reservation id) and the database stock guard. A
redemption the database refuses becomes a `released` record with a reason code (the
refusal's code in lower case: `not_enough_points`, `level_too_low`,
`points_threshold_not_met`, `coupon_sold_out`, ...), and after the commit its units go
back to Redis, once (`stock.settle`). Entries are acknowledged only after they are
settled, so a crash anywhere replays them and the unique reservation id dedupes. The
stream reading, claiming and acknowledging is the kit's (`mall.kit.stock.StreamConsumer`)."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from dataclasses import dataclass
from typing import Any

from tortoise.expressions import F

from mall.config import get_settings
from mall.coupons import service as coupons_service
from mall.errors import MallError
from mall.kit import jobs, tx
from mall.kit import stock as kit
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
from mall.pointsmall.stock import Pending, item_keys

log = logging.getLogger("mall.pointsmall")

_STATUS_AFTER_REDEEM = {"gift": "awaiting_shipment", "voucher": "issued", "activity": "enrolled"}
_VOUCHER_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I
# the database's own stock guard refused a unit Redis handed out: it never existed
_GUARD_CODES = (OUT_OF_STOCK.code, ACTIVITY_FULL.code)


def _voucher_code() -> str:
    raw = "".join(secrets.choice(_VOUCHER_ALPHABET) for _ in range(12))
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


class _MemberGone(Exception):
    pass


# --- one redemption ---------------------------------------------------------------------


async def _write(item: PointsMallItem, e: Entry) -> PointsMallRedemption:
    """The redemption's writes; called inside its savepoint (a MallError undoes them)."""
    try:
        if item.level_required > 0:  # else no read: the spend finds the member
            member = await members_service.get_member(e.member_id)
            if member.level < item.level_required:
                raise LEVEL_TOO_LOW(level=item.level_required)
        if e.cash:  # points + cash: the points held until the cash is paid
            return await cash.write_pending(
                item,
                reservation_id=e.rid,
                member_id=e.member_id,
                quantity=e.quantity,
                points=e.points,
                cash_fen=e.cash,
                label=e.label,
                address=e.address,
            )
        spend_key = f"pointsmall:redeem:{e.rid}"
        entry = await points_service.spend(
            e.member_id,
            e.points,
            idempotency_key=spend_key,
            reason="pointsmall.redeem",
            reference=f"pointsmall_item:{item.id}",
        )
    except MallError as exc:
        if exc.code == members_service.MEMBER_NOT_FOUND.code:
            raise _MemberGone() from None
        raise
    # the threshold is on the balance at the moment of the spend, which the entry states
    before = entry.balance_after + e.points
    if item.min_points_balance and before < item.min_points_balance:
        raise POINTS_THRESHOLD_NOT_MET(threshold=item.min_points_balance, balance=before)
    template_id = item.coupon_template_id if item.kind == "voucher" else None
    coupon_ids: list[int] | None = None
    if template_id is not None:
        # each grant gives its Redis win back if this savepoint rolls back
        coupon_ids = []
        for i in range(e.quantity):
            coupon = await coupons_service.grant(
                e.member_id, template_id, grant_key=f"pointsmall:{e.rid}:{i}", source="points_mall"
            )
            coupon_ids.append(coupon.id)
    redemption = await PointsMallRedemption.create(
        reservation_id=e.rid,
        item_id=item.id,
        member_id=e.member_id,
        item_name=item.name,
        kind=item.kind,
        quantity=e.quantity,
        points_spent=e.points,
        status=_STATUS_AFTER_REDEEM.get(item.kind, "issued"),
        spend_key=spend_key,
        period_label=e.label,
        voucher_code=_voucher_code() if item.kind == "voucher" and not template_id else None,
        coupon_ids=coupon_ids,
        address=e.address,
    )
    taken = await PointsMallItem.filter(id=item.id, stock__gte=e.quantity).update(
        stock=F("stock") - e.quantity
    )
    if not taken:
        raise ACTIVITY_FULL() if item.kind == "activity" else OUT_OF_STOCK()
    return redemption


async def _one(item: PointsMallItem, e: Entry) -> PointsMallRedemption | None:
    """Write one redemption in a savepoint, or its `released` record; None: the member
    no longer exists (nothing to record, the units go back)."""
    try:
        async with tx.transaction():
            return await _write(item, e)
    except _MemberGone:
        log.warning("pointsmall item %s: member %s no longer exists", item.id, e.member_id)
        return None
    except MallError as refused:
        reason = refused.code.lower()
    return await PointsMallRedemption.create(
        reservation_id=e.rid,
        item_id=item.id,
        member_id=e.member_id,
        item_name=item.name,
        kind=item.kind,
        quantity=e.quantity,
        points_spent=0,
        status="released",
        release_reason=reason,
        spend_key="",
        period_label=e.label,
        address=None,  # nothing to ship: no copy of the address is kept
    )


async def persist_batch(
    item_id: int, entries: list[Entry]
) -> dict[str, PointsMallRedemption | None]:
    """Write the entries of one item: one transaction for the batch (one per entry if
    the batch fails as a whole). Returns what each settled to; an entry left out stays
    pending in the stream and is tried again."""
    item = await PointsMallItem.get_or_none(id=item_id)
    if item is None:
        log.error("pointsmall item %s is gone; %s entries left pending", item_id, len(entries))
        return {}
    found = await PointsMallRedemption.filter(reservation_id__in=[e.rid for e in entries])
    results: dict[str, PointsMallRedemption | None] = {r.reservation_id: r for r in found}
    todo = [e for e in entries if e.rid not in results]
    if not todo:
        return results
    try:
        batch: dict[str, PointsMallRedemption | None] = {}
        async with tx.transaction():
            for e in todo:
                batch[e.rid] = await _one(item, e)
        results.update(batch)
        return results
    except Exception as exc:
        if jobs.unreachable(exc):
            raise
        log.warning(
            "pointsmall item %s: batch of %s failed (%s); one by one", item_id, len(todo), exc
        )
    for e in todo:
        try:
            async with tx.transaction():
                results[e.rid] = await _one(item, e)
        except Exception:
            log.exception("pointsmall item %s: reservation %s not persisted", item_id, e.rid)
    return results


async def _settle(item_id: int, e: Entry, written: PointsMallRedemption | None) -> None:
    if written is None:  # the member is gone: no record, the units go back
        await stock.settle(item_id, e.rid, e.pending(item_id), give_back=True)
        return
    give_back = written.status == "released" and written.release_reason.upper() not in _GUARD_CODES
    if written.status == "released" and not give_back:
        log.error(
            "pointsmall item %s: Redis handed out units the database does not have "
            "(reservation %s); the reconciler repairs the stock",
            item_id,
            e.rid,
        )
    await stock.settle(item_id, e.rid, e.pending(item_id), give_back=give_back)


# --- the stream ------------------------------------------------------------------------


async def _persist_entries(item_id: int, raw: list[kit.Entry]) -> list[str]:
    """The kit consumer's batch: written (or released) in one transaction, then each
    settled in Redis; the ids of the entries done (acknowledged by the kit after)."""
    entries = [e for entry_id, fields in raw if (e := _entry(entry_id, fields)) is not None]
    results = await persist_batch(item_id, entries)
    done: list[str] = []
    for e in entries:
        if e.rid not in results:
            continue  # left pending: claimed again after the idle time
        await _settle(item_id, e, results[e.rid])
        done.append(e.entry_id)
    return done


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
