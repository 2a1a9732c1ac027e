"""The blind-box draws after the answer: the consumer that persists the series' draw
streams in batches, and the log as members and ops read it (one draw, pages, CSV).

A batch is one transaction: the points of all its draws in one `spend_many` (once per
reservation), then the database's stock guard (`drawn + n <= stock`, one per prize)
and the rows in one insert, or, for coupon prizes and when a guard refuses, each draw in
a savepoint of its own (guard, row, coupon). A draw the database refuses
(member short of points, a coupon that can no longer issue, a unit Redis should not have
handed out) becomes a `released` row with its reason, and after the commit its prize
unit goes back to Redis once (`stock.give_back`). Entries are acknowledged and dropped
after the commit, so the stream holds only the told-but-not-persisted backlog."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.expressions import F, Q

from mall.blindbox import stock
from mall.blindbox.draw import (
    PENDING_NOTE,
    TableRow,
    parse_decision,
    pending_out,
    prize_won,
    series_of_reservation,
    shown_prize,
    table_json,
)
from mall.blindbox.models import BlindBoxDraw, BlindBoxPrize, DrawStatus
from mall.blindbox.schemas import CouponWon, DrawOut
from mall.blindbox.stock import POOL
from mall.config import get_settings
from mall.coupons import service as coupons_service
from mall.errors import ErrorCode, MallError
from mall.i18n import _, translate
from mall.kit import bulk, jobs, tx
from mall.kit import stock as kit
from mall.kit.pagination import cursor_page
from mall.points import service as points_service
from mall.redis import get_redis

log = logging.getLogger("mall.blindbox")

DRAW_NOT_FOUND = ErrorCode("DRAW_NOT_FOUND", 404, _("This draw does not exist"))

RELEASED_NOT_ENOUGH_POINTS = "not_enough_points"
RELEASED_PRIZE_UNAVAILABLE = "prize_unavailable"  # a coupon that can no longer issue
RELEASED_OVERSELL_GUARD = "oversell_guard"  # the database refused a unit Redis handed out
RELEASED_MEMBER_GONE = "member_gone"  # the account was deleted before the draw was recorded

COUPON_PRIZE_NOTE = _("Your coupon is in your account; find it under My coupons.")
ITEM_PRIZE_NOTE = _("We will contact you to arrange delivery or pickup of your prize.")
RELEASE_NOTES = {
    RELEASED_NOT_ENOUGH_POINTS: _(
        "You did not have enough points for this draw: it was cancelled and nothing was spent."
    ),
    RELEASED_PRIZE_UNAVAILABLE: _(
        "This prize could no longer be issued: the draw was cancelled and nothing was spent."
    ),
    RELEASED_OVERSELL_GUARD: _(
        "This prize ran out before your draw was recorded: the draw was cancelled and "
        "nothing was spent."
    ),
}
_COUPON_CANNOT_ISSUE = frozenset(
    {
        "COUPON_SOLD_OUT",
        "COUPON_NOT_CLAIMABLE",
        "COUPON_CLAIM_NOT_STARTED",
        "COUPON_CLAIM_ENDED",
        "COUPON_TEMPLATE_NOT_FOUND",
    }
)


class _Released(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- persisting one draw -------------------------------------------------------------


def _row_fields(series_id: int, f: dict[str, str], prize: BlindBoxPrize) -> dict[str, Any]:
    rows = [TableRow(int(pid), tier, int(w)) for pid, tier, w in
            (item.split(":") for item in f["table"].split(","))]  # fmt: skip
    forced = f["forced"] == "1"
    label = f["day"]
    return {
        "draw_id": f["rid"],
        "seq": int(f["seq"]),
        "series_id": series_id,
        "member_id": int(f["member"]),
        "prize_id": prize.id,
        "prize_name": prize.name,
        "tier": f["tier"],
        "value_fen": prize.value_fen,
        "points_cost": int(f["cost"]),
        "random_value": int(f["r"]),
        "probability_table": table_json(rows, forced=forced, tier=f.get("gtier") or None),
        "guaranteed": forced,
        "pity_before": int(f["pb"]),
        "pity_after": int(f["pa"]),
        "points_entry_key": f"blindbox:{f['rid']}",
        "business_day": date(int(label[:4]), int(label[4:6]), int(label[6:])),
    }


@dataclass(slots=True)
class Released:
    """A draw released as it was written: what its give-back reads (a light record, not a
    model instance per draw)."""

    draw_id: str
    seq: int
    series_id: int
    member_id: int
    prize_id: int
    business_day: date
    pity_before: int
    release_reason: str
    stock_returned: bool


class _Again(Exception):
    """A pass refused a draw after spending its points: run the pass again without it."""


def _spend_request(fields: dict[str, Any]) -> points_service.SpendRequest:
    return points_service.SpendRequest(
        fields["member_id"],
        fields["points_cost"],
        fields["points_entry_key"],
        reason="blindbox.draw",
        reference=f"blindbox:{fields['series_id']}:{fields['draw_id']}",
    )


async def _take_units(prize: BlindBoxPrize, n: int) -> bool:
    """The database's stock guard for `n` draws of `prize` (an atomic conditional
    update: `drawn + n <= stock`, or no stock limit)."""
    taken = (
        await BlindBoxPrize.filter(id=prize.id)
        .filter(Q(stock__isnull=True) | Q(drawn__lte=F("stock") - n))
        .update(drawn=F("drawn") + n)
    )
    return bool(taken)


async def _grant_coupon(fields: dict[str, Any], prize: BlindBoxPrize) -> None:
    # last in the draw's savepoint: its Redis win is given back if the savepoint or the
    # batch does not commit (coupons' own rollback hook)
    try:
        if prize.coupon_template_id is None:
            raise coupons_service.TEMPLATE_NOT_FOUND()
        coupon = await coupons_service.grant(
            fields["member_id"],
            prize.coupon_template_id,
            grant_key=f"blindbox:{fields['draw_id']}",
            source="blind_box",
        )
    except MallError as exc:
        if exc.code not in _COUPON_CANNOT_ISSUE:
            raise
        log.warning("coupon prize %s cannot issue (%s)", prize.id, exc.code)
        raise _Released(RELEASED_PRIZE_UNAVAILABLE) from None
    await BlindBoxDraw.filter(draw_id=fields["draw_id"]).update(
        fulfilment_status="done", coupon_id=coupon.id
    )


def _confirmed(fields: dict[str, Any]) -> dict[str, Any]:
    return {**fields, "status": DrawStatus.CONFIRMED}


async def _write_one(fields: dict[str, Any], prize: BlindBoxPrize) -> None:
    """One spent draw in its own savepoint: stock guard, row, coupon."""
    async with tx.transaction():
        if not await _take_units(prize, 1):
            raise _Released(RELEASED_OVERSELL_GUARD)
        await bulk.insert_rows(BlindBoxDraw, [_confirmed(fields)])
        if prize.kind == "coupon":
            await _grant_coupon(fields, prize)


async def _write_at_once(spent: list[tuple[dict[str, Any], BlindBoxPrize]]) -> bool:
    """Item prizes only: one stock guard per prize and one insert of every row, in a
    savepoint; False (nothing written) when a guard refuses or a row exists already."""
    counts: dict[int, int] = {}
    for _fields, prize in spent:
        counts[prize.id] = counts.get(prize.id, 0) + 1
    prizes = {prize.id: prize for _f, prize in spent}
    try:
        async with tx.transaction():
            for prize_id in sorted(counts):
                if not await _take_units(prizes[prize_id], counts[prize_id]):
                    raise _Released(RELEASED_OVERSELL_GUARD)
            await bulk.insert_rows(BlindBoxDraw, [_confirmed(fields) for fields, _p in spent])
    except (_Released, IntegrityError):
        return False
    return True


async def _pass(
    todo: list[tuple[dict[str, Any], BlindBoxPrize]],
    refused: dict[str, str],
    after_spend: dict[str, str],
) -> None:
    """One try at the batch (in the caller's savepoint): the points of every draw in
    one `spend_many`, then the rest: item prizes in one insert under one guard per prize
    when it passes, else (and coupon prizes always) each draw in its own savepoint. A
    refusal of the spend (short of points) changes nothing and goes in `refused`; one
    after the spend goes in `after_spend` and raises `_Again`: the caller rolls the pass
    back, spends included, and runs it again without that draw, so a released draw never
    leaves an entry in the member's points history."""
    results = await points_service.spend_many([_spend_request(f) for f, _p in todo])
    spent: list[tuple[dict[str, Any], BlindBoxPrize]] = []
    for (fields, prize), result in zip(todo, results, strict=True):
        if not isinstance(result, MallError):
            spent.append((fields, prize))
        elif result.code == points_service.NOT_ENOUGH_POINTS.code:
            refused[fields["draw_id"]] = RELEASED_NOT_ENOUGH_POINTS
        else:
            refused[fields["draw_id"]] = RELEASED_MEMBER_GONE
    if all(prize.kind != "coupon" for _f, prize in spent) and await _write_at_once(spent):
        return
    again = False
    for fields, prize in spent:
        try:
            await _write_one(fields, prize)
        except _Released as released:
            after_spend[fields["draw_id"]] = released.reason
            again = True
    if again:
        raise _Again()


async def _persist(
    series_id: int, entries: list[dict[str, str]], prizes: dict[int, BlindBoxPrize]
) -> list[Released]:
    """Stream entries (none written before) into rows, in the current transaction;
    returns the `released` rows. An entry naming a prize deleted since gets no row (none
    can name it): its unit is given back at once."""
    todo: list[tuple[dict[str, Any], BlindBoxPrize]] = []
    for f in entries:
        prize = prizes.get(int(f["prize"]))
        if prize is None:
            log.error("blind-box draw %s names deleted prize %s", f["rid"], f["prize"])
            keys = POOL.keys(series_id)
            await kit.give_back(
                keys, f["rid"], member=f["member"], unit=f["prize"], counters=[keys.day(f["day"])]
            )
            continue
        todo.append((_row_fields(series_id, f, prize), prize))
    after_spend: dict[str, str] = {}  # refusals after the spend: kept across passes
    while True:
        # what the spend refuses (short of points) is decided again each pass
        refused = dict(after_spend)
        try:
            async with tx.transaction():
                left = [t for t in todo if t[0]["draw_id"] not in refused]
                await _pass(left, refused, after_spend)
        except _Again:
            continue
        break
    released: list[Released] = []
    rows: list[dict[str, Any]] = []
    for fields, _prize in todo:
        reason = refused.get(fields["draw_id"])
        if reason is None:
            continue
        # the guard's unit never existed: nothing to give back
        returned = reason == RELEASED_OVERSELL_GUARD
        rows.append(
            {
                **fields,
                "status": DrawStatus.RELEASED,
                "release_reason": reason,
                "fulfilment_status": "none",
                "stock_returned": returned,
            }
        )
        released.append(
            Released(
                fields["draw_id"],
                fields["seq"],
                fields["series_id"],
                fields["member_id"],
                fields["prize_id"],
                fields["business_day"],
                fields["pity_before"],
                reason,
                returned,
            )
        )
    await bulk.insert_rows(BlindBoxDraw, rows)
    return released


async def finish_release(draw: BlindBoxDraw | Released) -> None:
    """After the commit: a released draw's unit back to Redis, once."""
    if draw.release_reason == RELEASED_OVERSELL_GUARD:
        log.error(
            "blind-box series %s: Redis handed out a unit of prize %s the database does not "
            "have (draw %s); the reconciler repairs the drift",
            draw.series_id,
            draw.prize_id,
            draw.draw_id,
        )
        return
    await stock.give_back(draw)
    await BlindBoxDraw.filter(draw_id=draw.draw_id, stock_returned=False).update(
        stock_returned=True
    )
    draw.stock_returned = True


async def persist_batch(series_id: int, entries: list[kit.Entry]) -> list[str]:
    """Persist a batch of one series' stream entries in one transaction (`_persist`);
    returns the entry ids done (to acknowledge). A batch that fails for another reason is
    retried in halves (`kit.in_halves`), so one bad entry holds up only itself (it is
    left pending: tried again later; the reconciler shows it)."""
    wanted = [f["rid"] for _eid, f in entries if f]
    known = {row[0] for row in await bulk.select_in(BlindBoxDraw, "draw_id", wanted, ["draw_id"])}
    # a member's own draws in the order they were decided
    ordered = sorted(
        entries, key=lambda e: (int(e[1].get("member") or 0), int(e[1].get("seq") or 0))
    )
    fresh = [(entry_id, f) for entry_id, f in ordered if f and f["rid"] not in known]
    done = [entry_id for entry_id, f in ordered if not f or f["rid"] in known]
    released: list[Released] = []
    try:
        released += await _persist_in_transaction(series_id, [f for _e, f in fresh])
        done += [entry_id for entry_id, _f in fresh]
    except Exception as exc:
        if jobs.unreachable(exc):
            raise
        log.warning(
            "blind-box series %s: a batch of %d not persisted (%s); in halves",
            series_id,
            len(fresh),
            exc,
        )

        async def write(part: list[tuple[str, dict[str, str]]]) -> None:
            released.extend(await _persist_in_transaction(series_id, [f for _e, f in part]))
            done.extend(entry_id for entry_id, _f in part)

        def lost(one: tuple[str, dict[str, str]], why: Exception) -> None:
            log.error("blind-box draw %s not persisted", one[1].get("rid"), exc_info=why)

        await kit.in_halves(fresh, write, lost, exc)
    # the rows answer reads now: the pending answers go (the kit acknowledges the entries)
    finished = set(done)
    rids = [f["rid"] for entry_id, f in entries if f and entry_id in finished]
    if rids:
        await get_redis().hdel(POOL.keys(series_id).res, *rids)
    for row in released:
        if not row.stock_returned:
            try:
                await finish_release(row)
            except Exception:  # the give-back job finishes it
                log.exception("blind-box draw %s: unit not given back yet", row.draw_id)
    return done


async def _persist_in_transaction(series_id: int, entries: list[dict[str, str]]) -> list[Released]:
    if not entries:
        return []
    async with tx.transaction():
        # the series' prize rows first, in id order: two consumers' batches of one series
        # take turns here instead of deadlocking on the rows' stock guards (PostgreSQL)
        locked = BlindBoxPrize.filter(series_id=series_id).order_by("id").select_for_update()
        prizes = {p.id: p for p in await locked}
        return await _persist(series_id, entries, prizes)


async def finish_give_backs(limit: int = 500) -> int:
    """Job: released draws whose give-back a crash left undone."""
    due = await BlindBoxDraw.filter(status=DrawStatus.RELEASED, stock_returned=False).limit(limit)
    for row in due:
        await finish_release(row)
    return len(due)


# --- the stream consumer ------------------------------------------------------------

CONSUMER = kit.StreamConsumer(
    stock.DRAWS,
    persist_batch,
    claim_idle_ms=lambda: get_settings().blindbox_claim_idle_seconds * 1000,
    name="blind-box series",
)


async def process_pending_once(
    consumer: str = "local", *, count: int | None = None, claim_idle_ms: int | None = None
) -> int:
    """One pass over every warm series' stream, a batch each; returns how many entries
    were done."""
    return await CONSUMER.process_once(consumer, count=count, claim_idle_ms=claim_idle_ms)


async def run_consumer(stop: asyncio.Event) -> None:
    """Persist draws until `stop` (the `mall worker` consumer): the kit's loop, full
    batches back to back, else a pass every `linger_seconds`."""
    await CONSUMER.run(stop)


async def drain(consumer: str = "local", *, claim_idle_ms: int | None = None) -> int:
    """Run passes until the streams are empty (tests, drills)."""
    return await CONSUMER.drain(consumer, claim_idle_ms=claim_idle_ms)


# --- reads ---------------------------------------------------------------------------


async def _coupon_won(coupon_id: int) -> CouponWon | None:
    coupon = await coupons_service.get_coupon(coupon_id)
    if coupon is None:
        return None
    template = await coupons_service.get_template(coupon.template_id)
    return CouponWon(
        id=coupon.id,
        template_id=coupon.template_id,
        name=template.name,
        valid_from=coupon.valid_from,
        expires_at=coupon.expires_at,
        last_valid_day=coupons_service.last_valid_day(coupon.expires_at),
    )


async def recorded_out(row: BlindBoxDraw) -> DrawOut:
    prize = await BlindBoxPrize.get_or_none(id=row.prize_id)
    released = row.status == DrawStatus.RELEASED
    if released:
        message = RELEASE_NOTES.get(row.release_reason, PENDING_NOTE)
    else:
        message = COUPON_PRIZE_NOTE if row.coupon_id is not None else ITEM_PRIZE_NOTE
    return DrawOut(
        draw_id=row.draw_id,
        status="released" if released else "confirmed",
        release_reason=row.release_reason or None,
        message=translate(message),
        series_id=row.series_id,
        seq=row.seq,
        prize=prize_won(prize)
        if prize is not None
        else await shown_prize(row.series_id, row.prize_id, row.tier),
        guaranteed=row.guaranteed,
        pity_before=row.pity_before,
        pity_after=row.pity_after,
        points_cost=row.points_cost,
        fulfilment_status=None if released else row.fulfilment_status,
        coupon=None if row.coupon_id is None else await _coupon_won(row.coupon_id),
        created_at=row.created_at,
    )


async def get_draw(member_id: int, draw_id: str) -> DrawOut:
    """A member's own draw: `pending` until the consumer persists it, then confirmed or
    released with the reason."""
    series_id = series_of_reservation(draw_id)
    for _attempt in range(2):
        row = await BlindBoxDraw.get_or_none(draw_id=draw_id)
        if row is not None:
            if row.member_id != member_id:
                raise DRAW_NOT_FOUND()
            return await recorded_out(row)
        if series_id is None:
            break
        raw = await get_redis().hget(POOL.keys(series_id).res, draw_id)
        if raw is not None:
            decision = parse_decision(str(raw))
            if decision.member_id != member_id:
                raise DRAW_NOT_FOUND()
            shown = await shown_prize(series_id, decision.prize_id, decision.tier)
            return pending_out(series_id, decision, shown).model_copy(update={"draws_today": None})
        # persisted between the two reads: the row is there now
    raise DRAW_NOT_FOUND()


async def my_draws(
    member_id: int, series_id: int | None, cursor: str | None, size: int
) -> tuple[list[BlindBoxDraw], str | None]:
    query = BlindBoxDraw.filter(member_id=member_id)
    if series_id is not None:
        query = query.filter(series_id=series_id)
    return await cursor_page(query, cursor, size)


async def list_draws(
    series_id: int, cursor: str | None, size: int, member_id: int | None = None
) -> tuple[list[BlindBoxDraw], str | None]:
    await stock.get_series(series_id)
    query = BlindBoxDraw.filter(series_id=series_id)
    if member_id is not None:
        query = query.filter(member_id=member_id)
    return await cursor_page(query, cursor, size)


CSV_COLUMNS = (
    "draw_id",
    "seq",
    "created_at",
    "business_day",
    "member_id",
    "prize_id",
    "prize_name",
    "tier",
    "value_fen",
    "points_cost",
    "random_value",
    "guaranteed",
    "pity_before",
    "pity_after",
    "points_entry_key",
    "fulfilment_status",
    "coupon_id",
    "status",
    "release_reason",
    "probability_table",
)


def _cell(value: object) -> str:
    if value is None:
        return ""
    text = json.dumps(value, separators=(",", ":")) if isinstance(value, dict) else str(value)
    # spreadsheets run cells starting with these as formulas
    return "'" + text if text[:1] in ("=", "+", "-", "@") and not text[1:].isdigit() else text


async def export_draws_csv(series_id: int, batch: int = 1000) -> AsyncIterator[str]:
    """The series' whole draw log, oldest first, streamed in batches."""
    await stock.get_series(series_id)
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(CSV_COLUMNS)
    yield flush()
    last_id = 0
    while True:
        rows = (
            await BlindBoxDraw.filter(series_id=series_id, id__gt=last_id)
            .order_by("id")
            .limit(batch)
        )
        if not rows:
            return
        for row in rows:
            writer.writerow([_cell(getattr(row, column)) for column in CSV_COLUMNS])
        last_id = rows[-1].id
        yield flush()


async def prize_order_cancelled(draw_id: str, order_id: int) -> None:
    """The mall order shipping this prize was cancelled (called in its transaction): the
    prize waits for delivery again."""
    await BlindBoxDraw.filter(
        draw_id=draw_id, fulfilment_status="ordered", mall_order_id=order_id
    ).update(fulfilment_status="pending", mall_order_id=None)
