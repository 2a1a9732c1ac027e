"""The blind-box pool: a series' prizes in Redis, on the hot-stock kit (mall.kit.stock).

Keys under the series' hash tag `{bb:ID}`: the kit's meta (`conf`: JSON of the prizes,
the points cost, the sale window, the age rule, the daily cap and the guarantee),
stock (a hash: limited prize -> units left; a series is a pool of several kinds of
unit) and returned (reservation ids given back), and the draw's own: pity (member ->
draws since their last prize of the guaranteed tier), last (member -> seq of their
latest draw), day:<yyyymmdd> (member -> draws that business day), seq (the draw
counter), draws (the stream of decided draws, consumer group `draws`), res (reservation
-> its answer, until persisted) and idem:<yyyymmdd> (member:Idempotency-Key -> the
answer, per business day, kept two days).
`bb:active` lists the warm series whose streams the consumer reads.

The database is the record of truth: `warm` rebuilds Redis from it, `reconcile` proves,
per limited prize:

    redis stock + confirmed draws + stream backlog + give-backs due == the prize's stock"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import partial
from typing import Any, Protocol

from tortoise.functions import Count

from mall.blindbox.models import BlindBoxDraw, BlindBoxPrize, BlindBoxSeries, DrawStatus
from mall.errors import ErrorCode
from mall.i18n import _
from mall.kit import clock
from mall.kit import stock as kit
from mall.kit.bulk import select_in
from mall.redis import get_redis

log = logging.getLogger("mall.blindbox")

SERIES_NOT_FOUND = ErrorCode("SERIES_NOT_FOUND", 404, _("This blind-box series does not exist"))

DAY_TTL_SECONDS = 2 * 24 * 3600
GROUP = "draws"  # the consumer group on every series' draw stream
ACTIVE_SERIES = "bb:active"  # ids of warm series: the consumer reads their streams
_SCRIPTS = "mall.blindbox"


class SeriesKeys(kit.PoolKeys):
    """The kit's keys of a series, and the draw's own."""

    @property
    def pity(self) -> str:
        return f"{self.tag}:pity"

    @property
    def last(self) -> str:
        return f"{self.tag}:last"

    @property
    def seq(self) -> str:
        return f"{self.tag}:seq"

    @property
    def draws(self) -> str:
        return f"{self.tag}:draws"

    @property
    def res(self) -> str:
        return f"{self.tag}:res"

    def idem(self, label: str) -> str:
        """member:Idempotency-Key -> answer, for the draws of one business day (kept
        two days: a retry finds its draw across midnight, and the hash never grows)."""
        return f"{self.tag}:idem:{label}"

    def day(self, label: str) -> str:
        return f"{self.tag}:day:{label}"


POOL = kit.Pool("bb", SeriesKeys)
DRAWS = kit.Stream(POOL, "draws", group=GROUP, active=ACTIVE_SERIES)  # persisted by draws.py


def keys(series_id: int) -> SeriesKeys:
    return POOL.keys(series_id)


@functools.lru_cache(maxsize=16)
def day_label(day: date) -> str:
    # three a draw (today's keys, yesterday's idempotency answers): strftime each time
    # was a visible part of the request's CPU
    return day.strftime("%Y%m%d")


async def get_series(series_id: int) -> BlindBoxSeries:
    series = await BlindBoxSeries.get_or_none(id=series_id)
    if series is None:
        raise SERIES_NOT_FOUND()
    return series


async def series_ids() -> list[int]:
    ids = await BlindBoxSeries.all().order_by("id").values_list("id", flat=True)
    return [int(i) for i in ids]  # type: ignore[call-overload]


# --- what this process remembers --------------------------------------------------

# Answers that need no Redis: series -> monotonic expiry.
sold_out_until: dict[int, float] = {}
unknown_until: dict[int, float] = {}


def forget_local_state() -> None:
    sold_out_until.clear()
    unknown_until.clear()


# --- warm ---------------------------------------------------------------------------


def _ms(moment: Any) -> int:
    return 0 if moment is None else int(moment.timestamp() * 1000)


def _conf(series: BlindBoxSeries, prizes: Sequence[BlindBoxPrize]) -> dict[str, Any]:
    every = series.guarantee_every or 0
    tier = series.guarantee_tier or ""
    return {
        "prizes": [
            [str(p.id), p.weight, p.tier, 0 if p.stock is None else 1]
            for p in sorted(prizes, key=lambda p: p.id)
        ],
        "cap": series.daily_draw_cap or 0,
        "gtier": tier if every and tier else "",
        "gevery": every if every and tier else 0,
        # the terms the draw script checks (0 = no bound): the request reads no database
        "cost": series.points_cost,
        "open": 1 if series.status == "on_sale" else 0,
        "start": _ms(series.starts_at),
        "end": _ms(series.ends_at),
        "min_age": max(series.min_age, 8),
        "minors": 1 if series.allow_minors else 0,
    }


async def drawn_counts(series_id: int, max_seq: int | None = None) -> dict[int, int]:
    """Confirmed draws per prize (up to draw `max_seq`)."""
    query = BlindBoxDraw.filter(series_id=series_id, status=DrawStatus.CONFIRMED)
    if max_seq is not None:
        query = query.filter(seq__lte=max_seq)
    rows = await query.group_by("prize_id").annotate(n=Count("id")).values("prize_id", "n")
    return {int(row["prize_id"]): int(row["n"]) for row in rows}


async def warm(series_id: int) -> bool:
    """Publish the series' prizes and terms to Redis and fill stock it lacks from the
    database. When Redis lost the series (no meta) it also rebuilds the draw counter,
    guarantee counters and today's draw counts. True if it was cold."""
    series = await BlindBoxSeries.get_or_none(id=series_id)
    if series is None:
        return False
    prizes = await BlindBoxPrize.filter(series_id=series_id).order_by("id")
    keys = POOL.keys(series_id)
    plan = kit.Warm(keys).terms(conf=json.dumps(_conf(series, prizes), separators=(",", ":")))
    plan.units({str(p.id): max(p.stock - p.drawn, 0) for p in prizes if p.stock is not None})
    redis = get_redis()
    if not await redis.exists(keys.meta):
        last_seq = await BlindBoxDraw.filter(series_id=series_id).order_by("-seq").first()
        plan.value(keys.seq, last_seq.seq if last_seq else 0)
        confirmed = BlindBoxDraw.filter(series_id=series_id, status=DrawStatus.CONFIRMED)
        if series.guarantee_every and series.guarantee_tier:
            pity: dict[int, int] = {}
            for member_id, after in await confirmed.order_by("id").values_list(
                "member_id", "pity_after"
            ):
                pity[int(member_id)] = int(after)
            plan.counts(keys.pity, pity)
        today = clock.today()
        counts = (
            await confirmed.filter(business_day=today)
            .group_by("member_id")
            .annotate(n=Count("id"))
            .values("member_id", "n")
        )
        plan.counts(
            keys.day(day_label(today)),
            {row["member_id"]: int(row["n"]) for row in counts},
            ttl=DAY_TTL_SECONDS,
        )
    await DRAWS.ensure_group(series_id)
    cold = await plan.run()
    await redis.sadd(ACTIVE_SERIES, series_id)
    unknown_until.pop(series_id, None)
    sold_out_until.pop(series_id, None)
    if cold:
        log.info("blind-box series %s warmed into Redis", series_id)
    return cold


async def warm_if_cold(series_id: int) -> None:
    """The draw found the series cold: load it (once per process at a time); a series
    that does not exist is remembered for a few seconds."""

    async def load() -> None:
        if not await warm(series_id):
            if not await BlindBoxSeries.exists(id=series_id):
                unknown_until[series_id] = time.monotonic() + 5.0
                raise SERIES_NOT_FOUND()

    await kit.warm_cold(POOL.keys(series_id), load)


async def live_state(series_id: int) -> tuple[dict[str, Any], dict[str, str]]:
    """conf and stock in one snapshot (warming the series first if Redis lacks it)."""
    keys = POOL.keys(series_id)
    redis = get_redis()
    for _attempt in range(2):
        pipe = redis.pipeline(transaction=True)
        pipe.hget(keys.meta, "conf")
        pipe.hgetall(keys.stock)
        raw, stocks = await pipe.execute()
        if raw is not None:
            return json.loads(raw), stocks
        await warm(series_id)
    raise RuntimeError(f"blind-box series {series_id} could not be warmed")


async def drop(series_id: int) -> None:
    keys = POOL.keys(series_id)
    redis = get_redis()
    await redis.srem(ACTIVE_SERIES, series_id)
    await redis.delete(
        keys.meta, keys.stock, keys.pity, keys.last, keys.seq, keys.draws, keys.res
    )  # the day keys (day:, idem:) expire on their own
    sold_out_until.pop(series_id, None)


# --- give back ----------------------------------------------------------------------


class Drawn(Protocol):
    """What a give-back reads of a released draw (a row, or the consumer's record)."""

    @property
    def draw_id(self) -> str: ...
    @property
    def seq(self) -> int: ...
    @property
    def series_id(self) -> int: ...
    @property
    def member_id(self) -> int: ...
    @property
    def prize_id(self) -> int: ...
    @property
    def business_day(self) -> date: ...
    @property
    def pity_before(self) -> int: ...


async def give_back(draw: Drawn) -> bool:
    """A released draw's prize unit and its count toward the day's cap go back, once per
    reservation (`kit.give_back`); its guarantee counter is restored too when it was the
    member's latest draw in the series (`lua/release.lua`), so later draws keep what they
    built on. False if it was given back before (or the series is cold: its next warm
    counts from the database)."""
    keys = POOL.keys(draw.series_id)
    member = str(draw.member_id)
    done = await kit.give_back(
        keys,
        draw.draw_id,
        member=member,
        unit=str(draw.prize_id),
        counters=[keys.day(day_label(draw.business_day))],
    )
    sold_out_until.pop(draw.series_id, None)
    if done.status != kit.OK:
        return False
    await kit.script(_SCRIPTS, "release")(
        keys=[keys.pity, keys.last], args=[member, draw.seq, draw.pity_before]
    )
    return True


# --- reconciliation -------------------------------------------------------------------


@dataclass
class SeriesReconciliation:
    """One reading of a series: the kit's equation per limited prize, and notes."""

    series_id: int
    prizes: list[kit.Balance] = field(default_factory=list)
    prize_ids: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    backlog: int = 0
    stable: bool = True

    @property
    def ok(self) -> bool:
        return all(b.ok for b in self.prizes)

    @property
    def lines(self) -> list[tuple[bool, str]]:
        """(agrees, what was compared) per line."""
        return [(b.ok, b.line()) for b in self.prizes] + [(True, n) for n in self.notes]

    def figures(self) -> tuple[Any, ...]:
        return tuple(b.figures() for b in self.prizes)


def entry_fields(entry: Any) -> dict[str, str]:
    """A stream entry's fields, from XRANGE in Lua (a flat list) or redis-py (a dict)."""
    raw = entry[1] or []
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    return dict(zip(raw[::2], raw[1::2], strict=True))


async def _reading(series: BlindBoxSeries) -> SeriesReconciliation:
    keys = POOL.keys(series.id)
    meta, flat_stock, entries, seq_raw = await kit.snapshot(
        [(keys.meta, "hgetall"), (keys.stock, "hgetall"), (keys.draws, "xrange"), (keys.seq, "get")]
    )
    result = SeriesReconciliation(series.id)
    if not meta:
        result.notes.append(f"series {series.id}: not in Redis yet")
        return result
    stocks = dict(zip(flat_stock[::2], flat_stock[1::2], strict=True))
    max_seq = int(seq_raw or 0)
    # draws decided up to the snapshot: persisted ones, plus the stream's backlog
    drawn = await drawn_counts(series.id, max_seq)
    flights = [entry_fields(e) for e in entries]
    # in chunks: with the worker down through a busy launch the backlog can hold more
    # draws than one statement's parameters (PostgreSQL: 32,767)
    rids = [f["rid"] for f in flights]
    persisted = {str(row[0]) for row in await select_in(BlindBoxDraw, "draw_id", rids, ["draw_id"])}
    backlog: dict[int, int] = {}
    for flight in flights:
        if flight["rid"] not in persisted:
            backlog[int(flight["prize"])] = backlog.get(int(flight["prize"]), 0) + 1
    result.backlog = sum(backlog.values())
    due_rows = await BlindBoxDraw.filter(
        series_id=series.id, status=DrawStatus.RELEASED, stock_returned=False, seq__lte=max_seq
    ).values_list("prize_id", flat=True)
    due: dict[int, int] = {}
    for prize_id in due_rows:
        due[int(prize_id)] = due.get(int(prize_id), 0) + 1  # type: ignore[call-overload]
    all_drawn = await drawn_counts(series.id)
    for prize in await BlindBoxPrize.filter(series_id=series.id).order_by("id"):
        if prize.stock is None:
            continue
        raw = stocks.get(str(prize.id))
        check = kit.Balance(
            name=f"series {series.id} prize {prize.id}",
            initial=prize.stock,
            redis=None if raw is None else int(raw),
            held=drawn.get(prize.id, 0),
            in_flight=backlog.get(prize.id, 0),
            returns_due=due.get(prize.id, 0),
            names=("drawn", "backlog", "returns_due"),
        )
        if raw is None:
            check.found.append("no stock in Redis")
        if prize.drawn != all_drawn.get(prize.id, 0):
            check.found.append(
                f"database drawn={prize.drawn} but {all_drawn.get(prize.id, 0)} confirmed draws"
            )
        if prize.drawn > prize.stock:
            check.found.append(f"OVERDRAWN in the database: drawn={prize.drawn} > stock")
        result.prizes.append(check)
        result.prize_ids.append(prize.id)
    if result.backlog:
        result.notes.append(f"series {series.id}: {result.backlog} draws not persisted yet")
    return result


async def reconcile(*, repair: bool = False) -> list[SeriesReconciliation]:
    """Redis stock + confirmed draws + stream backlog + give-backs due == stock, per
    limited prize, each series judged on a stable reading (the consumer and ops stock
    changes touch Redis and the database one after the other). `repair` (the periodic
    job): a prize whose Redis stock is off by the same drift as on the run before has it
    moved by it."""
    results = []
    for series in await BlindBoxSeries.all().order_by("id"):
        result = await kit.balance(partial(_reading, series))
        if repair and not result.ok:
            keys = POOL.keys(series.id)
            repaired = False
            for prize_id, check in zip(result.prize_ids, result.prizes, strict=True):
                if not check.found:
                    unit = str(prize_id)
                    repaired |= await kit.repair_persistent(keys, check, unit=unit)
            if repaired:
                result = await kit.balance(partial(_reading, series))
        results.append(result)
    return results
